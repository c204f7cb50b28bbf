"""Transfer a peer's completion and its token-level traces onto the receiver's tokens.

Pipeline for a batch (`transfer_many`; `transfer` is a batch of one):

1. bytes: the peer's *sampled* ids -> exact bytes through the peer's byte table (one gather for
   the batch); a trailing EOS-role token (EOS, `<|im_end|>`) is set aside and mapped by role;
2. encode: the bytes, decoded as UTF-8, are encoded by the receiver's continuation encoder in one
   `encode_batch_fast` call; where the receiver's byte table reproduces the bytes (the usual case)
   its token ends are the cumulative byte lengths, exact to the byte;
3. slow path, only for sequences the fast path could not reproduce (a normalizer, `[UNK]`,
   WordPiece spacing, invalid UTF-8): re-encode with offsets, place receiver tokens by the byte
   offsets of their characters, and count the bytes of every span whose receiver bytes differ as
   lossy;
4. align: co-terminating spans over the whole batch (`align.align`);
5. traces: log-prob span sums are conserved (`uniform`: each receiver token of a span gets
   sum / count; `last`: the last receiver token gets the sum, the others 0); a receiver token is
   in the loss only if every peer token of its span was; token-level advantages take the span mean
   (a scalar passes through); token-level rewards land, summed, on the span's last receiver token.

Nothing here raises on odd input: bad ids, wrong lengths, NaN and unrepresentable bytes become
`Residual.problems` or lossy counts, and the budget turns them into a rejection with its reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from mrl_actors.logs import get_logger
from mrl_actors.thl.align import align
from mrl_actors.thl.bytes_table import Vocab, gather_bytes
from mrl_actors.thl.residual import Residual, ResidualBudget

log = get_logger(__name__)

LogprobRule = Literal["uniform", "last"]
_DEFAULT_BUDGET = ResidualBudget()


@dataclass(frozen=True, eq=False)
class Transfer:
    """One peer completion as the receiver sees it; m receiver tokens, a mapped EOS included."""

    ids: np.ndarray  # int32 [m]: receiver ids of the completion (EOS mapped by role)
    logprobs: np.ndarray | None  # float64 [m]: peer log-probs, span sums conserved
    loss_mask: np.ndarray  # bool [m]: in the loss only if the whole span was
    advantages: float | np.ndarray | None  # scalar passthrough, or float64 [m] span means
    token_rewards: np.ndarray | None  # float64 [m]: span sums on each span's last token
    residual: Residual
    rejected: bool
    reason: str  # why it was rejected; "" when accepted


@dataclass
class _Seq:
    """Working state of one sequence through the pipeline."""

    ids: np.ndarray  # int64 [n]: peer ids without the role-mapped trailing EOS; -1 where bad
    lens: np.ndarray  # int64 [n]: bytes per peer token (0 for special or bad ids)
    eos: bool  # a trailing EOS-role token was set aside
    problems: list[str]
    data: bytes = b""
    tail: np.ndarray | None = None  # int64 [<=3]: receiver byte tokens for a cut last character
    text: str | None = None  # None when the bytes are not valid UTF-8
    dst_ids: np.ndarray | None = None  # int64 [m']
    dst_ends: np.ndarray | None = None  # int64 [m']: local byte end of each receiver token
    exact: bool = False
    lossy: int = 0
    invalid: int = 0


def _as_array(x: object, n: int, name: str, dtype: type, problems: list[str]) -> np.ndarray | None:
    if x is None:
        return None
    try:
        arr: np.ndarray = np.asarray(x, dtype=dtype).reshape(-1)
    except (TypeError, ValueError) as exc:
        problems.append(f"{name} is not numeric: {exc}")
        return None
    if arr.shape[0] != n:
        problems.append(f"{name} has {arr.shape[0]} entries for {n} tokens")
        return None
    return arr


def _prepare(src: Vocab, raw: object) -> _Seq:
    problems: list[str] = []
    try:
        arr = np.asarray(raw)
        if arr.ndim != 1:
            problems.append(f"ids have shape {arr.shape}, not [n]")
        if arr.size and arr.dtype.kind not in "iu":
            problems.append(f"ids have dtype {arr.dtype}, not an integer type")
        ids = arr.astype(np.int64).reshape(-1)
    except (TypeError, ValueError, OverflowError) as exc:
        problems.append(f"ids are not integers: {exc}")
        ids = np.zeros(0, dtype=np.int64)
    bad = (ids < 0) | (ids >= src.size)
    if bad.any():
        problems.append(f"{int(bad.sum())} ids outside the peer vocabulary (size {src.size})")
    lens = np.where(bad, 0, src.lengths[np.where(bad, 0, ids)])
    eos = bool(ids.shape[0]) and not bad[-1] and int(ids[-1]) in src.end_ids
    return _Seq(ids=np.where(bad, -1, ids), lens=lens, eos=eos, problems=problems)


def _with_eos(add_eos: bool, body: np.ndarray, tail: np.ndarray | None, fill: float) -> np.ndarray:
    """`body` with the value for a mapped EOS appended (the peer's own, or `fill`)."""
    if not add_eos:
        return body
    v = np.asarray([fill if tail is None or tail.shape[0] == 0 else tail[0]])
    return np.concatenate([body, v.astype(body.dtype)])


def _char_byte_ends(data: bytes) -> np.ndarray:
    """int64 [chars + 1]: byte offset of each character start, then the total length."""
    b = np.frombuffer(data, dtype=np.uint8)
    starts = np.flatnonzero((b & 0xC0) != 0x80)
    return np.concatenate([starts, [b.shape[0]]]).astype(np.int64)


def _encode_slow(dst: Vocab, s: _Seq) -> None:
    """Receiver ids and byte ends by offsets: text pieces between invalid UTF-8 runs."""
    ids: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    data, pos = s.data, 0
    while pos < len(data):
        try:
            piece = data[pos:].decode("utf-8")
            stop = len(data)
        except UnicodeDecodeError as exc:
            stop = pos + exc.start
            piece = data[pos:stop].decode("utf-8")
        if piece:
            enc = dst.continuation.encode(piece, add_special_tokens=False)
            offs = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)  # [t, 2] chars
            cb = _char_byte_ends(data[pos:stop])
            ids.append(np.asarray(enc.ids, dtype=np.int64))
            ends.append(pos + cb[np.clip(offs[:, 1], 0, cb.shape[0] - 1)])
        if stop >= len(data):
            break
        # One invalid byte at a time: a receiver with byte tokens reproduces it exactly.
        b = data[stop]
        s.invalid += 1
        bid = int(dst.byte_ids[b])
        if bid < 0 and dst.unk_id is not None:
            bid = dst.unk_id
        if bid >= 0:
            ids.append(np.asarray([bid], dtype=np.int64))
            ends.append(np.asarray([stop + 1], dtype=np.int64))
        pos = stop + 1
    s.dst_ids = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
    e = np.concatenate(ends) if ends else np.zeros(0, dtype=np.int64)
    e = np.minimum(np.maximum.accumulate(e), len(data)) if e.shape[0] else e
    if e.shape[0]:
        e[-1] = len(data)
    s.dst_ends = e


def _count_lossy(dst: Vocab, s: _Seq) -> int:
    """Bytes of spans (local to this sequence) whose receiver bytes differ from the peer's."""
    assert s.dst_ids is not None and s.dst_ends is not None
    src_ends = np.cumsum(s.lens)
    n = len(s.data)
    sp = align(src_ends, s.dst_ends, np.asarray([0]), np.asarray([n]))
    lossy = 0
    first = True
    for k in range(sp.ends.shape[0]):
        toks = s.dst_ids[sp.dst_span == k]
        got = b"".join(dst.token_bytes(int(t)) for t in toks)
        if first and dst.kind == "wordpiece" and got[:1] == b" " and s.data[:1] != b" ":
            got = got[1:]
        first = False
        want = s.data[int(sp.starts[k]) : int(sp.ends[k])]
        if got != want:
            lossy += int(sp.ends[k] - sp.starts[k])
    return lossy


def _fast_path(dst: Vocab, seqs: list[_Seq], allbytes: np.ndarray, off: np.ndarray) -> None:
    """Encode every valid-UTF-8 completion in one batch and keep those the table reproduces.

    allbytes: uint8 [B], every completion's bytes back to back; off: int64 [K + 1] offsets.
    The byte comparison is one vectorized pass over the batch, not one call per sequence.
    """
    fast = [i for i, s in enumerate(seqs) if s.text is not None]
    if not fast:
        return
    encs = dst.continuation.encode_batch_fast(
        [seqs[i].text for i in fast], add_special_tokens=False
    )
    parts = []
    for i, enc in zip(fast, encs, strict=True):
        d = np.asarray(enc.ids, dtype=np.int64)
        tail = seqs[i].tail
        parts.append(d if tail is None else np.concatenate([d, tail]))
    counts = np.asarray([p.shape[0] for p in parts], dtype=np.int64)  # [F]
    flat = np.concatenate(parts)  # [T]: receiver ids of every fast sequence
    dl = dst.lengths[flat]  # [T]
    tok_off = np.concatenate([[0], np.cumsum(counts)])  # [F + 1]
    csum = np.concatenate([[0], np.cumsum(dl)])  # [T + 1]
    dtot = csum[tok_off[1:]] - csum[tok_off[:-1]]  # [F]: receiver bytes per sequence
    fidx = np.asarray(fast, dtype=np.int64)
    stot = off[fidx + 1] - off[fidx]  # [F]: peer bytes per sequence
    same = dtot == stot  # [F]
    # Compare the bytes of all same-length sequences at once; mismatches name their sequence.
    src_keep = np.zeros(len(seqs), dtype=bool)
    src_keep[fidx[same]] = True
    src_sel = np.repeat(src_keep, off[1:] - off[:-1])  # [B]
    dst_sel = np.repeat(same, dtot)  # [sum(dtot)]
    diff = np.flatnonzero(allbytes[src_sel] != gather_bytes(dst, flat)[dst_sel])
    sel_off = np.cumsum(np.where(same, stot, 0))  # [F]: end of each sequence in the selection
    bad = np.zeros(len(fast), dtype=bool)
    bad[np.searchsorted(sel_off, diff, side="right")] = True
    for f, i in enumerate(fast):
        if same[f] and not bad[f]:
            s = seqs[i]
            a, b = int(tok_off[f]), int(tok_off[f + 1])
            s.dst_ids = flat[a:b]
            s.dst_ends = csum[a + 1 : b + 1] - csum[a]
            s.exact = True


def transfer_many(
    src: Vocab,
    dst: Vocab,
    src_ids: Sequence[np.ndarray],
    *,
    logprobs: Sequence[np.ndarray | None] | None = None,
    loss_mask: Sequence[np.ndarray | None] | None = None,
    advantages: Sequence[float | np.ndarray | None] | None = None,
    token_rewards: Sequence[np.ndarray | None] | None = None,
    budget: ResidualBudget | None = None,
    logprob_rule: LogprobRule = "uniform",
) -> list[Transfer]:
    """`transfer` for a batch: one gather, one batch encode, one alignment. Same semantics."""
    budget = budget or _DEFAULT_BUDGET
    k = len(src_ids)
    seqs = [_prepare(src, raw) for raw in src_ids]
    # 1. exact bytes of every completion, with one gather over the batch.
    core = [s.ids[:-1] if s.eos else s.ids for s in seqs]
    for s, c in zip(seqs, core, strict=True):
        if s.eos:
            s.lens = s.lens[:-1]
        s.ids = c
    allbytes = gather_bytes(src, np.concatenate(core) if core else np.zeros(0, np.int64))
    totals = np.asarray([int(s.lens.sum()) for s in seqs], dtype=np.int64)  # [K]
    off = np.concatenate([[0], np.cumsum(totals)]).astype(np.int64)
    raw = allbytes.tobytes()
    for i, s in enumerate(seqs):
        s.data = raw[off[i] : off[i + 1]]
        try:
            s.text = s.data.decode("utf-8")
        except UnicodeDecodeError:
            # A character cut at the end (the length limit): encode the valid prefix and keep
            # the tail as the receiver's byte tokens, when it has them.
            for cut in (1, 2, 3):
                try:
                    s.text = s.data[:-cut].decode("utf-8")
                except UnicodeDecodeError:
                    continue
                tail = dst.byte_ids[np.frombuffer(s.data[-cut:], dtype=np.uint8)]
                if (tail >= 0).all():
                    s.tail = tail.astype(np.int64)
                    s.invalid = cut
                else:
                    s.text = None
                break
    # 2. fast path: batch encode, ends from the receiver's byte table when it reproduces the bytes.
    _fast_path(dst, seqs, allbytes, off)
    # 3. slow path: offsets, invalid UTF-8, lossy accounting.
    for s in seqs:
        if not s.exact:
            s.invalid = 0
            _encode_slow(dst, s)
            s.lossy = _count_lossy(dst, s)
            s.exact = s.lossy == 0
    # 4. alignment over the whole batch on one global byte axis.
    base = off[:-1] + np.arange(k, dtype=np.int64)  # [K], one phantom byte between sequences
    seq_ends = base + totals
    src_ends = np.concatenate([base[i] + np.cumsum(s.lens) for i, s in enumerate(seqs)] or [[]])
    dst_ends = np.concatenate(
        [base[i] + (s.dst_ends if s.dst_ends is not None else []) for i, s in enumerate(seqs)]
        or [[]]
    )
    sp = align(src_ends.astype(np.int64), dst_ends.astype(np.int64), base, seq_ends)
    n_src = np.asarray([s.ids.shape[0] for s in seqs], dtype=np.int64)
    n_dst = np.asarray([0 if s.dst_ids is None else s.dst_ids.shape[0] for s in seqs], np.int64)
    src_off = np.concatenate([[0], np.cumsum(n_src)])
    dst_off = np.concatenate([[0], np.cumsum(n_dst)])
    # 5. traces, each as one global array split per sequence at the end.
    s_count = np.maximum(sp.src_count, 1)
    d_count = np.maximum(sp.dst_count, 1)
    last = sp.dst_is_last()  # [M]
    orphan = (sp.src_count > 0) & (sp.dst_count == 0)  # [S] peer tokens with no receiver token

    def per_seq_arrays(
        given: Sequence[object] | None, name: str, dtype: type, fill: float
    ) -> tuple[np.ndarray, list[np.ndarray | None], list[bool]]:
        """Global [N] array of core values, the EOS values, and which sequences had the trace."""
        parts: list[np.ndarray] = []
        eos_vals: list[np.ndarray | None] = []
        have: list[bool] = []
        for i, s in enumerate(seqs):
            n_full = s.ids.shape[0] + int(s.eos)
            arr = None if given is None else _as_array(given[i], n_full, name, dtype, s.problems)
            have.append(arr is not None)
            if arr is None:
                parts.append(np.full(s.ids.shape[0], fill, dtype=dtype))
                eos_vals.append(None)
            else:
                parts.append(arr[: s.ids.shape[0]])
                eos_vals.append(arr[s.ids.shape[0] :])
        flat = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
        return flat, eos_vals, have

    lp, lp_eos, lp_have = per_seq_arrays(logprobs, "logprobs", np.float64, 0.0)
    if logprobs is not None:
        for i, s in enumerate(seqs):
            if lp_have[i] and not np.all(np.isfinite(lp[src_off[i] : src_off[i + 1]])):
                s.problems.append("non-finite log-probs")
    lp_sum = np.bincount(sp.src_span, weights=lp, minlength=sp.ends.shape[0])  # [S]
    if logprob_rule == "last":
        dst_lp = np.where(last, lp_sum[sp.dst_span], 0.0)
    else:
        dst_lp = lp_sum[sp.dst_span] / d_count[sp.dst_span]
    mk, mk_eos, _ = per_seq_arrays(loss_mask, "loss_mask", np.bool_, True)
    out_bad = np.bincount(sp.src_span, weights=~mk, minlength=sp.ends.shape[0])
    dst_mask = out_bad[sp.dst_span] == 0
    tok_adv = (
        [a if isinstance(a, np.ndarray) and a.ndim > 0 else None for a in advantages]
        if advantages is not None
        else None
    )
    ad, ad_eos, ad_have = per_seq_arrays(tok_adv, "advantages", np.float64, 0.0)
    ad_mean = np.bincount(sp.src_span, weights=ad, minlength=sp.ends.shape[0]) / s_count
    dst_ad = ad_mean[sp.dst_span]
    rw, rw_eos, rw_have = per_seq_arrays(token_rewards, "token_rewards", np.float64, 0.0)
    rw_sum = np.bincount(sp.src_span, weights=rw, minlength=sp.ends.shape[0])
    dst_rw = np.where(last, rw_sum[sp.dst_span], 0.0)
    # Per-sequence residual figures.
    live = (sp.src_count + sp.dst_count) > 0  # [S]
    one = sp.one_to_one & live
    nbytes = sp.nbytes
    spans_per = np.bincount(sp.seq, weights=live, minlength=k)
    one_per = np.bincount(sp.seq, weights=one, minlength=k)
    nm_bytes = np.bincount(sp.seq, weights=np.where(one, 0, nbytes), minlength=k)
    orphan_per = np.bincount(sp.seq, weights=orphan, minlength=k)
    widest = np.zeros(k, dtype=np.int64)
    np.maximum.at(widest, sp.seq, nbytes)
    most = np.zeros(k, dtype=np.int64)
    np.maximum.at(most, sp.seq, np.maximum(sp.src_count, sp.dst_count))
    out: list[Transfer] = []
    for i, s in enumerate(seqs):
        a, b = int(dst_off[i]), int(dst_off[i + 1])
        ids = (s.dst_ids if s.dst_ids is not None else np.zeros(0, np.int64)).astype(np.int32)
        if orphan_per[i]:
            s.problems.append("peer tokens with no receiver token (their log-prob has no home)")
        eos_id = dst.eos_id if s.eos else None
        if s.eos and eos_id is None:
            s.problems.append("peer EOS has no receiver EOS role")
        add_eos = eos_id is not None
        # [UNK] on either side: the peer's stands for bytes nobody knows, the receiver's for
        # bytes it cannot write. Neither is exact, whatever the byte comparison says.
        src_unk = int(np.count_nonzero(s.ids == src.unk_id)) if src.unk_id is not None else 0
        unk = src_unk + (int(np.count_nonzero(ids == dst.unk_id)) if dst.unk_id is not None else 0)
        dropped = int(np.count_nonzero(src.special[s.ids[s.ids >= 0]])) - src_unk
        n_bytes = len(s.data)
        m = (b - a) + int(add_eos)
        n_one = int(one_per[i]) + int(add_eos)
        residual = Residual(
            exact=s.exact and not s.problems and unk == 0,
            src_tokens=int(n_src[i]) + int(s.eos),
            dst_tokens=m,
            n_bytes=n_bytes,
            spans=int(spans_per[i]) + int(add_eos),
            one_to_one_share=n_one / m if m else 1.0,
            nm_byte_share=float(nm_bytes[i]) / n_bytes if n_bytes else 0.0,
            longest_span_bytes=int(widest[i]),
            longest_span_tokens=int(max(most[i], 1 if add_eos else 0)),
            lossy_bytes=s.lossy,
            invalid_utf8_bytes=s.invalid,
            unk_tokens=unk,
            dropped_special=dropped,
            problems=tuple(s.problems),
        )

        if add_eos:
            ids = np.concatenate([ids, np.asarray([eos_id], dtype=np.int32)])
        t_lp = _with_eos(add_eos, dst_lp[a:b], lp_eos[i], 0.0) if lp_have[i] else None
        t_mask = _with_eos(add_eos, dst_mask[a:b], mk_eos[i], True)
        adv_in = None if advantages is None else advantages[i]
        t_adv: float | np.ndarray | None
        if adv_in is None or (isinstance(adv_in, np.ndarray) and adv_in.ndim > 0):
            t_adv = _with_eos(add_eos, dst_ad[a:b], ad_eos[i], 0.0) if ad_have[i] else None
        else:
            t_adv = float(adv_in)
        t_rw = _with_eos(add_eos, dst_rw[a:b], rw_eos[i], 0.0) if rw_have[i] else None
        reason = budget.check(residual)
        out.append(
            Transfer(
                ids=ids,
                logprobs=t_lp,
                loss_mask=t_mask,
                advantages=t_adv,
                token_rewards=t_rw,
                residual=residual,
                rejected=bool(reason),
                reason=reason,
            )
        )
    return out


def transfer(
    src: Vocab,
    dst: Vocab,
    src_ids: np.ndarray,
    *,
    logprobs: np.ndarray | None = None,
    loss_mask: np.ndarray | None = None,
    advantages: float | np.ndarray | None = None,
    token_rewards: np.ndarray | None = None,
    budget: ResidualBudget | None = None,
    logprob_rule: LogprobRule = "uniform",
) -> Transfer:
    """One peer completion (its *sampled* ids, int [n]) onto the receiver's tokens.

    Traces are optional and per peer token ([n], a trailing EOS included); `advantages` may be a
    scalar (passed through) or [n]. `budget=None` means `ResidualBudget()`'s defaults. Never
    raises on odd input: problems are in `.residual.problems` and make the transfer rejected.
    """
    return transfer_many(
        src,
        dst,
        [src_ids],
        logprobs=None if logprobs is None else [logprobs],
        loss_mask=None if loss_mask is None else [loss_mask],
        advantages=None if advantages is None else [advantages],
        token_rewards=None if token_rewards is None else [token_rewards],
        budget=budget,
        logprob_rule=logprob_rule,
    )[0]


def render_prompt(dst: Vocab, prompt_text: str, *, chat_template: bool = False) -> np.ndarray:
    """int32 [p]: the prompt in the receiver's own format.

    With `chat_template` and a template available: one user turn and the generation prompt
    (`<|im_start|>assistant\\n` for Qwen). Otherwise plain text with the tokenizer's own special
    tokens (BOS for Llama-2/Mistral, nothing for GPT-2/Qwen).
    """
    hf = dst.hf
    if chat_template and hf is not None and getattr(hf, "chat_template", None):
        out = hf.apply_chat_template(
            [{"role": "user", "content": prompt_text}], add_generation_prompt=True, tokenize=True
        )
        ids = out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out
        return np.asarray(ids, dtype=np.int32).reshape(-1)
    if chat_template:
        log.debug("thl.no_chat_template", vocab=dst.name)
    enc = dst.tokenizer.encode(prompt_text, add_special_tokens=True)
    return np.asarray(enc.ids, dtype=np.int32)
