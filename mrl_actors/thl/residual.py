"""The residual cost of an alignment, per sequence and aggregated, and the budget that rejects.

Per-token importance ratios between two tokenizations are exact only inside 1:1 spans; everything
else (n:m spans, bytes the receiver cannot reproduce) is residual cost. The THL measures it for
every transfer instead of hiding it, and a `ResidualBudget` turns a transfer over budget into a
rejected one with its reason, so a sharing probe can drop it and the run report can count it.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from mrl_actors.checks import check_float, check_int


class Residual(msgspec.Struct, frozen=True):
    """What one transfer cost. Shares are in [0, 1]; counts are per sequence."""

    exact: bool  # the receiver's ids reproduce the peer's completion bytes exactly, nothing lossy
    src_tokens: int  # peer tokens, trailing EOS included
    dst_tokens: int  # receiver tokens, mapped EOS included
    n_bytes: int  # bytes of the peer's completion
    spans: int  # co-terminating spans (plus one for a mapped EOS)
    one_to_one_share: float  # receiver tokens that sit in 1:1 spans / receiver tokens
    nm_byte_share: float  # bytes in spans that are not 1:1 (1:m, n:1, n:m) / bytes
    longest_span_bytes: int  # the widest span, in bytes
    longest_span_tokens: int  # the most tokens on either side of one span
    lossy_bytes: int  # peer bytes the receiver's ids do not reproduce (normalizer, [UNK], ...)
    invalid_utf8_bytes: int  # peer bytes that are not valid UTF-8 (often a cut character)
    unk_tokens: int  # [UNK] tokens, peer's and receiver's: bytes that are unknown or unwritable
    dropped_special: int  # peer special tokens with no role (their log-prob joins a span)
    problems: tuple[str, ...] = ()  # odd input found on the way (lengths, NaN, bad ids)


class ResidualBudget(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Limits a transfer must stay within; over any of them it is rejected with the reason.

    The defaults accept every lossless transfer between the real tokenizers we test (their n:m
    byte share on mixed text stays under ~0.6) and reject anything lossy.
    """

    max_nm_byte_share: float = 1.0  # reject when more bytes than this sit in non-1:1 spans
    max_span_bytes: int = 512  # reject when one span is wider than this many bytes
    max_span_tokens: int = 128  # reject when one span holds more tokens than this on a side
    min_one_to_one_share: float = 0.0  # reject when fewer receiver tokens than this are 1:1
    allow_lossy: bool = False  # accept transfers whose receiver ids do not reproduce the bytes
    # Accept peer bytes that are not valid UTF-8 (a character cut by the length limit). They are
    # still lossy (and so rejected) unless the receiver reproduces them with byte tokens.
    allow_invalid_utf8: bool = True

    def __post_init__(self) -> None:
        check_float(self, "max_nm_byte_share", ge=0, le=1)
        check_int(self, "max_span_bytes", 1, 1 << 30)
        check_int(self, "max_span_tokens", 1, 1 << 30)
        check_float(self, "min_one_to_one_share", ge=0, le=1)

    def check(self, r: Residual) -> str:
        """The reason this residual is over budget, or "" when it is within it."""
        if r.problems:
            return "bad input: " + "; ".join(r.problems)
        if r.invalid_utf8_bytes and not self.allow_invalid_utf8:
            return f"{r.invalid_utf8_bytes} bytes of invalid UTF-8 (allow_invalid_utf8=false)"
        if r.lossy_bytes and not self.allow_lossy:
            return f"lossy: {r.lossy_bytes} bytes not reproduced (allow_lossy=false)"
        if r.unk_tokens and not self.allow_lossy:
            return f"lossy: {r.unk_tokens} [UNK] tokens (allow_lossy=false)"
        if r.nm_byte_share > self.max_nm_byte_share:
            return f"n:m byte share {r.nm_byte_share:.3f} > {self.max_nm_byte_share}"
        if r.longest_span_bytes > self.max_span_bytes:
            return f"longest span {r.longest_span_bytes} bytes > {self.max_span_bytes}"
        if r.longest_span_tokens > self.max_span_tokens:
            return f"longest span {r.longest_span_tokens} tokens > {self.max_span_tokens}"
        if r.one_to_one_share < self.min_one_to_one_share:
            return f"1:1 token share {r.one_to_one_share:.3f} < {self.min_one_to_one_share}"
        return ""


def aggregate(residuals: Iterable[Residual], rejected: Iterable[bool] = ()) -> dict[str, float]:
    """Run-report figures over many transfers: token- and byte-weighted shares, maxima, counts.

    `one_to_one_share` and `nm_byte_share` are weighted by tokens and bytes (not averaged per
    sequence), so long sequences count for what they hold.
    """
    rs = list(residuals)
    rej = list(rejected)
    n = len(rs)
    dst = sum(r.dst_tokens for r in rs)
    nbytes = sum(r.n_bytes for r in rs)
    return {
        "sequences": float(n),
        "exact_share": sum(r.exact for r in rs) / n if n else 0.0,
        "rejected_share": sum(rej) / len(rej) if rej else 0.0,
        "src_tokens": float(sum(r.src_tokens for r in rs)),
        "dst_tokens": float(dst),
        "bytes": float(nbytes),
        "one_to_one_share": (
            sum(r.one_to_one_share * r.dst_tokens for r in rs) / dst if dst else 1.0
        ),
        "nm_byte_share": sum(r.nm_byte_share * r.n_bytes for r in rs) / nbytes if nbytes else 0.0,
        "longest_span_bytes": float(max((r.longest_span_bytes for r in rs), default=0)),
        "longest_span_tokens": float(max((r.longest_span_tokens for r in rs), default=0)),
        "lossy_bytes": float(sum(r.lossy_bytes for r in rs)),
        "invalid_utf8_bytes": float(sum(r.invalid_utf8_bytes for r in rs)),
        "unk_tokens": float(sum(r.unk_tokens for r in rs)),
        "dropped_special": float(sum(r.dropped_special for r in rs)),
    }


# (key in `aggregate`'s dict, label, what it means): the rows of every residual table we print.
FIGURES: tuple[tuple[str, str, str], ...] = (
    ("sequences", "sequences", "completions transferred"),
    ("exact_share", "exact", "share whose receiver ids reproduce the peer's bytes exactly"),
    ("rejected_share", "rejected", "share over the residual budget (see reasons)"),
    ("one_to_one_share", "1:1 tokens", "receiver tokens in 1:1 spans (per-token ratios exact)"),
    ("nm_byte_share", "n:m bytes", "bytes in spans that are not 1:1 (only span sums exact)"),
    ("longest_span_bytes", "longest span (B)", "widest co-terminating span, in bytes"),
    ("longest_span_tokens", "longest span (tok)", "most tokens on one side of one span"),
    ("lossy_bytes", "lossy bytes", "bytes the receiver cannot reproduce (normalizer, [UNK])"),
    ("invalid_utf8_bytes", "invalid UTF-8 (B)", "peer bytes that are not UTF-8 (a cut character)"),
    ("unk_tokens", "[UNK] tokens", "unknown tokens, peer's and receiver's (lossy)"),
    ("dropped_special", "dropped specials", "peer special tokens with no role (mass kept)"),
    ("src_tokens", "peer tokens", "total, EOS included"),
    ("dst_tokens", "receiver tokens", "total, mapped EOS included"),
)


def format_table(agg: dict[str, float]) -> str:
    """A plain-text table of `aggregate`'s figures, one row per figure with its meaning."""
    lines = [f"{'figure':<20} {'value':>12}  meaning", f"{'-' * 20} {'-' * 12}  {'-' * 50}"]
    for key, label, meaning in FIGURES:
        v = agg.get(key, 0.0)
        text = f"{v:.4f}" if key.endswith("share") else f"{v:.0f}"
        lines.append(f"{label:<20} {text:>12}  {meaning}")
    return "\n".join(lines)
