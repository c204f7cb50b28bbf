"""The batch fast path of `transfer_many`: one pass over flat arrays for well-formed input.

A batch whose inputs are all well formed (1-D integer ids inside the peer's vocabulary, traces
that are arrays of the right length, scalar or per-token advantages, finite values) goes through
here; anything else takes the general path in `traces`, which names every problem per sequence.
Both give the same `Transfer`s (the THL tests check it).

What makes it cheap, against one pass per sequence:

- the peer's ids are concatenated once and every figure is a pass over flat arrays (EOS, byte
  lengths, [UNK] and special counts per sequence by cumulative sums), in `flat`;
- the receiver's ids come out of the batch encoding as one flat array (one `np.fromiter`);
- exactness is one gather of the receiver's bytes and one comparison of two byte strings
  (measured cheaper than the token-hash check of `exact`, which needs a pass over each side);
- alignment needs no phantom byte between sequences when no token has zero bytes;
- traces that were not given are not built; a scalar advantage passes through; an all-true loss
  mask needs no reduction;
- the per-sequence `Transfer` and `Residual` objects are made lazily, on first access, from the
  batch arrays (`lazy.TransferBatch`).

Sequences the batch encoding does not reproduce (a lossy normalizer, WordPiece spacing, a cut
character the receiver has no byte token for) still go, one at a time, through `retokenize`'s
slow path.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mrl_actors.thl.bytes_table import Vocab
from mrl_actors.thl.flat import finish, prepare
from mrl_actors.thl.lazy import TransferBatch
from mrl_actors.thl.residual import ResidualBudget


def _clean_ids(src: Vocab, src_ids: Sequence[object]) -> np.ndarray | None:
    """int64 [N0]: the peer ids back to back, or None when any sequence is odd (general path)."""
    for x in src_ids:
        if not (isinstance(x, np.ndarray) and x.ndim == 1 and x.dtype.kind in "iu"):
            return None
    if not src_ids:
        return None
    flat = np.concatenate(src_ids, dtype=np.int64, casting="unsafe")  # type: ignore[call-overload]
    if flat.shape[0] and (int(flat.min()) < 0 or int(flat.max()) >= src.size):
        return None
    return flat


def _clean_trace(given: object, n_all: np.ndarray, dtype: type) -> np.ndarray | bool | None:
    """A trace as one flat array laid out like the peer ids (EOS included); None when not given;
    False when odd (wrong batch length, not arrays, wrong lengths, not finite)."""
    if given is None:
        return None
    if not isinstance(given, (list, tuple)) or len(given) != n_all.shape[0]:
        return False
    for x in given:
        if not (isinstance(x, np.ndarray) and x.ndim == 1 and x.dtype.kind in "biuf"):
            return False
    lens = np.fromiter((x.shape[0] for x in given), dtype=np.int64, count=len(given))
    if not np.array_equal(lens, n_all):
        return False
    flat: np.ndarray = (
        np.concatenate(given, dtype=dtype, casting="unsafe") if given else np.zeros(0, dtype)
    )
    # A finite sum means every value is finite (an inf or a NaN makes it inf or NaN); only a
    # sum that is not needs the check value by value (it may just have overflowed).
    if dtype is np.float64 and not np.isfinite(flat.sum()) and not np.isfinite(flat).all():
        return False
    return flat


def _scalar_advantages(given: object, k: int) -> np.ndarray | bool | None:
    """float64 [K] when every advantage is a finite real scalar; None when not given; else False."""
    if given is None:
        return None
    if not isinstance(given, (list, tuple)) or len(given) != k:
        return False
    if not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in given):
        return False
    arr = np.asarray(given, dtype=np.float64)
    return arr if np.isfinite(arr).all() else False


def transfer_batch(
    src: Vocab,
    dst: Vocab,
    src_ids: Sequence[object],
    *,
    logprobs: object,
    loss_mask: object,
    advantages: object,
    token_rewards: object,
    budget: ResidualBudget,
    logprob_rule: str,
) -> TransferBatch | None:
    """The fast path; None when the input is not all well formed (then take the general path)."""
    flat0 = _clean_ids(src, src_ids)
    if flat0 is None:
        return None
    k = len(src_ids)
    n_all = np.fromiter((x.shape[0] for x in src_ids), dtype=np.int64, count=k)  # type: ignore[attr-defined]
    lp0 = _clean_trace(logprobs, n_all, np.float64)
    mk0 = _clean_trace(loss_mask, n_all, np.bool_)
    rw0 = _clean_trace(token_rewards, n_all, np.float64)
    adv_sc = _scalar_advantages(advantages, k)
    ad0: np.ndarray | bool | None = None
    if adv_sc is False:
        adv_sc = None
        ad0 = _clean_trace(advantages, n_all, np.float64)
    if lp0 is False or mk0 is False or rw0 is False or ad0 is False:
        return None
    p = prepare(src, dst, flat0, n_all)
    encs = dst.continuation.encode_batch_fast(p.texts, add_special_tokens=False) if p.texts else []
    return TransferBatch(
        finish(
            src,
            dst,
            p,
            encs,
            lp0=lp0 if isinstance(lp0, np.ndarray) else None,
            mk0=mk0 if isinstance(mk0, np.ndarray) else None,
            ad0=ad0 if isinstance(ad0, np.ndarray) else None,
            adv_sc=adv_sc if isinstance(adv_sc, np.ndarray) else None,
            rw0=rw0 if isinstance(rw0, np.ndarray) else None,
            budget=budget,
            logprob_rule=logprob_rule,
        )
    )
