"""Transfer a peer's completion and its token-level traces onto the receiver's tokens.

`retokenize` gives the peer's exact bytes and the receiver's ids with their byte ends (steps 1
to 3); this module aligns them (step 4) and moves the traces (step 5):

4. align: co-terminating spans over the whole batch on one global byte axis (`align.align`);
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
from mrl_actors.thl.bytes_table import Vocab
from mrl_actors.thl.residual import Residual, ResidualBudget
from mrl_actors.thl.retokenize import retokenize

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


def _with_eos(add_eos: bool, body: np.ndarray, tail: np.ndarray | None, fill: float) -> np.ndarray:
    """`body` with the value for a mapped EOS appended (the peer's own, or `fill`)."""
    if not add_eos:
        return body
    v = np.asarray([fill if tail is None or tail.shape[0] == 0 else tail[0]])
    return np.concatenate([body, v.astype(body.dtype)])


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
    seqs = retokenize(src, dst, list(src_ids))
    k = len(seqs)
    totals = np.asarray([len(s.data) for s in seqs], dtype=np.int64)  # [K]
    off = np.concatenate([[0], np.cumsum(totals)]).astype(np.int64)  # [K + 1]
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
