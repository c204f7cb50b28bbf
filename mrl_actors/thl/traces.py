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
from typing import Literal, TypeVar

import numpy as np

from mrl_actors.logs import get_logger
from mrl_actors.thl.align import align
from mrl_actors.thl.batch import transfer_batch
from mrl_actors.thl.bytes_table import Vocab
from mrl_actors.thl.residual import Residual, ResidualBudget
from mrl_actors.thl.retokenize import Retokenized, retokenize
from mrl_actors.thl.transfer import Transfer

log = get_logger(__name__)

LogprobRule = Literal["uniform", "last"]
T = TypeVar("T")
_DEFAULT_BUDGET = ResidualBudget()


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


def _per_seq(given: Sequence[T] | None, name: str, seqs: list[Retokenized]) -> Sequence[T] | None:
    """`given` when it has one entry per sequence; else None, with the problem noted on each."""
    if given is None:
        return None
    try:
        n = len(given)
    except TypeError:
        n = -1
    if n != len(seqs):
        for s in seqs:
            s.problems.append(f"{name} has {n} entries for a batch of {len(seqs)} sequences")
        return None
    return given


def _scalar(x: object, problems: list[str]) -> float | None:
    """A scalar advantage as a float, or None with a problem noted."""
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        problems.append(f"advantage is not a number: {exc}")
        return None
    if not np.isfinite(v):
        problems.append("non-finite advantage")
    return v


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
) -> Sequence[Transfer]:
    """`transfer` for a batch: one gather, one batch encode, one alignment. Same semantics.

    Well-formed input takes the batch fast path (`batch.transfer_batch`, whose `Transfer`s are
    made on first access); a batch with anything odd in it takes the general path below, which
    names each problem on its sequence.
    """
    budget = budget or _DEFAULT_BUDGET
    fast = transfer_batch(
        src,
        dst,
        src_ids,
        logprobs=logprobs,
        loss_mask=loss_mask,
        advantages=advantages,
        token_rewards=token_rewards,
        budget=budget,
        logprob_rule=logprob_rule,
    )
    if fast is not None:
        return fast
    seqs = retokenize(src, dst, list(src_ids))
    k = len(seqs)
    logprobs = _per_seq(logprobs, "logprobs", seqs)
    loss_mask = _per_seq(loss_mask, "loss_mask", seqs)
    advantages = _per_seq(advantages, "advantages", seqs)
    token_rewards = _per_seq(token_rewards, "token_rewards", seqs)
    totals = np.asarray([len(s.data) for s in seqs], dtype=np.int64)  # [K]
    off = np.concatenate([[0], np.cumsum(totals)]).astype(np.int64)  # [K + 1]
    # 4. alignment over the whole batch on one global byte axis.
    base = off[:-1] + np.arange(k, dtype=np.int64)  # [K], one phantom byte between sequences
    seq_ends = base + totals
    empty = np.zeros(0, dtype=np.int64)
    n_src = np.asarray([s.ids.shape[0] for s in seqs], dtype=np.int64)  # [K]
    n_dst = np.asarray([0 if s.dst_ids is None else s.dst_ids.shape[0] for s in seqs], np.int64)
    # Global ends: the running byte count plus one phantom byte per earlier sequence.
    src_lens = np.concatenate([empty, *(s.lens for s in seqs)])  # [N]
    src_ends = np.cumsum(src_lens) + np.repeat(np.arange(k, dtype=np.int64), n_src)  # [N]
    local = [s.dst_ends for s in seqs if s.dst_ends is not None]
    dst_ends = np.concatenate([empty, *local]) + np.repeat(base, n_dst)  # [M]
    sp = align(src_ends.astype(np.int64), dst_ends.astype(np.int64), base, seq_ends)
    src_flat = np.concatenate([empty, *(s.ids for s in seqs)]).astype(np.int64)  # [N]
    dst_flat = np.concatenate([empty, *(s.dst_ids for s in seqs if s.dst_ids is not None)]).astype(
        np.int64
    )  # [M]
    src_seq = np.repeat(np.arange(k), n_src)  # [N]
    dst_seq = np.repeat(np.arange(k), n_dst)  # [M]
    # Output layout: each sequence's receiver tokens, then one slot for its mapped EOS.
    has_eos = np.asarray([s.eos for s in seqs], dtype=bool)  # [K]
    add_eos = has_eos & (dst.eos_id is not None)  # [K]
    m_out = n_dst + add_eos  # [K]
    out_off = np.concatenate([[0], np.cumsum(m_out)])  # [K + 1]
    shift = out_off[:-1] - (np.cumsum(n_dst) - n_dst)  # [K]: EOS slots before each sequence
    core_pos = np.arange(dst_flat.shape[0]) + np.repeat(shift, n_dst)  # [M]
    eos_pos = out_off[1:][add_eos] - 1
    total = int(out_off[-1])

    def place(core: np.ndarray, eos_vals: np.ndarray, dtype: type) -> np.ndarray:
        """[total]: receiver-token values at their slots, EOS values at the EOS slots."""
        out: np.ndarray = np.empty(total, dtype=dtype)
        out[core_pos] = core
        out[eos_pos] = eos_vals[add_eos]
        return out

    def gather(
        given: Sequence[object] | None, name: str, dtype: type, fill: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The peer's values of one trace: core [N], EOS [K], and which sequences had it [K]."""
        parts: list[np.ndarray] = []
        eos_vals: np.ndarray = np.full(k, fill, dtype=dtype)
        have = np.zeros(k, dtype=bool)
        for i, s in enumerate(seqs):
            n = s.ids.shape[0]
            arr = None if given is None else _as_array(given[i], n + s.eos, name, dtype, s.problems)
            if arr is None:
                parts.append(np.full(n, fill, dtype=dtype))
            else:
                have[i] = True
                parts.append(arr[:n])
                if s.eos:
                    eos_vals[i] = arr[n]
        return np.concatenate(parts or [np.zeros(0, dtype=dtype)]), eos_vals, have

    # 5. traces: per-span reductions over the batch, then back out to receiver tokens.
    n_spans = sp.ends.shape[0]
    d_count = np.maximum(sp.dst_count, 1)
    last = sp.dst_is_last()  # [M]
    lp, lp_eos, lp_have = gather(logprobs, "logprobs", np.float64, 0.0)
    bad_lp = np.bincount(src_seq, weights=~np.isfinite(lp), minlength=k) > 0  # [K]
    lp_sum = np.bincount(sp.src_span, weights=lp, minlength=n_spans)  # [S]
    if logprob_rule == "last":
        dst_lp = np.where(last, lp_sum[sp.dst_span], 0.0)  # [M]
    else:
        dst_lp = lp_sum[sp.dst_span] / d_count[sp.dst_span]  # [M]
    mk, mk_eos, _ = gather(loss_mask, "loss_mask", np.bool_, True)
    span_out = np.bincount(sp.src_span, weights=~mk, minlength=n_spans)  # [S]: tokens out
    dst_mask = span_out[sp.dst_span] == 0  # [M]
    scalar_adv = [a is not None and np.ndim(a) == 0 for a in (advantages or [])]
    tok_adv = None
    if advantages is not None:
        tok_adv = [None if sc else a for a, sc in zip(advantages, scalar_adv, strict=True)]
    ad, ad_eos, ad_have = gather(tok_adv, "advantages", np.float64, 0.0)
    ad_mean = np.bincount(sp.src_span, weights=ad, minlength=n_spans) / np.maximum(sp.src_count, 1)
    rw, rw_eos, rw_have = gather(token_rewards, "token_rewards", np.float64, 0.0)
    rw_sum = np.bincount(sp.src_span, weights=rw, minlength=n_spans)
    ids_out = place(dst_flat, np.full(k, dst.eos_id or 0), np.int32)
    lp_out = place(dst_lp, lp_eos, np.float64)
    mask_out = place(dst_mask, mk_eos, np.bool_)
    ad_out = place(ad_mean[sp.dst_span], ad_eos, np.float64)
    rw_out = place(np.where(last, rw_sum[sp.dst_span], 0.0), rw_eos, np.float64)
    # Per-sequence residual figures, each one bincount over the batch.
    live = (sp.src_count + sp.dst_count) > 0  # [S]
    one = sp.one_to_one & live
    spans_per = np.bincount(sp.seq, weights=live, minlength=k)
    one_per = np.bincount(sp.seq, weights=one, minlength=k)
    nm_bytes = np.bincount(sp.seq, weights=np.where(one, 0, sp.nbytes), minlength=k)
    orphan = (sp.src_count > 0) & (sp.dst_count == 0)  # [S]: peer tokens with no receiver one
    orphan_per = np.bincount(sp.seq, weights=orphan, minlength=k)
    widest = np.zeros(k, dtype=np.int64)
    np.maximum.at(widest, sp.seq, sp.nbytes)
    most = np.zeros(k, dtype=np.int64)
    np.maximum.at(most, sp.seq, np.maximum(sp.src_count, sp.dst_count))
    # [UNK] on either side: the peer's stands for bytes nobody knows, the receiver's for bytes
    # it cannot write. Neither is exact, whatever the byte comparison says.
    src_unk = np.bincount(
        src_seq, weights=src_flat == (-2 if src.unk_id is None else src.unk_id), minlength=k
    )
    dst_unk = np.bincount(
        dst_seq, weights=dst_flat == (-2 if dst.unk_id is None else dst.unk_id), minlength=k
    )
    src_special = np.bincount(
        src_seq, weights=(src_flat >= 0) & src.special[np.maximum(src_flat, 0)], minlength=k
    )
    out: list[Transfer] = []
    for i, s in enumerate(seqs):
        lo, hi = int(out_off[i]), int(out_off[i + 1])
        if lp_have[i] and bad_lp[i]:
            s.problems.append("non-finite log-probs")
        if orphan_per[i]:
            s.problems.append("peer tokens with no receiver token (their log-prob has no home)")
        if has_eos[i] and not add_eos[i]:
            s.problems.append("peer EOS has no receiver EOS role")
        unk = int(src_unk[i] + dst_unk[i])
        n_bytes = len(s.data)
        m = hi - lo
        eos = int(add_eos[i])
        if advantages is not None and scalar_adv[i]:
            t_adv_scalar = _scalar(advantages[i], s.problems)
        residual = Residual(
            exact=s.exact and not s.problems and unk == 0,
            src_tokens=int(n_src[i]) + int(s.eos),
            dst_tokens=m,
            n_bytes=n_bytes,
            spans=int(spans_per[i]) + eos,
            one_to_one_share=(int(one_per[i]) + eos) / m if m else 1.0,
            nm_byte_share=float(nm_bytes[i]) / n_bytes if n_bytes else 0.0,
            longest_span_bytes=int(widest[i]),
            longest_span_tokens=max(int(most[i]), eos),
            lossy_bytes=s.lossy,
            invalid_utf8_bytes=s.invalid,
            unk_tokens=unk,
            dropped_special=int(src_special[i] - src_unk[i]),
            problems=tuple(s.problems),
        )
        t_adv: float | np.ndarray | None = ad_out[lo:hi] if ad_have[i] else None
        if advantages is not None and scalar_adv[i]:
            t_adv = t_adv_scalar
        reason = budget.check(residual)
        out.append(
            Transfer(
                ids=ids_out[lo:hi],
                logprobs=lp_out[lo:hi] if lp_have[i] else None,
                loss_mask=mask_out[lo:hi],
                advantages=t_adv,
                token_rewards=rw_out[lo:hi] if rw_have[i] else None,
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
