"""The batch fast path of `transfer_many`: flat arrays, and the receiver's encoder overlapped.

A batch whose inputs are all well formed (1-D integer ids inside the peer's vocabulary, traces
that are arrays of the right length, scalar or per-token advantages, finite values) goes through
here; anything else takes the general path in `traces`, which names every problem per sequence.
Both give the same `Transfer`s (the THL tests check it).

What makes it cheap, against one pass per sequence:

- the peer's ids are concatenated once and every figure is a pass over flat arrays (EOS, byte
  lengths, [UNK] and special counts per sequence by cumulative sums), in `flat`;
- exactness is a hash per sequence over tokens (`exact`), not a second gather of bytes;
- traces that were not given are not built; a scalar advantage passes through; an all-true loss
  mask needs no reduction;
- the per-sequence `Transfer` and `Residual` objects are made lazily, on first access, from the
  sub-batch arrays (`lazy.TransferBatch`);
- the receiver's encoder (Rust, which lets go of the GIL while it encodes) runs on a worker
  thread, one sub-batch after another, while this thread prepares the next sub-batches' texts
  and finishes the ones already encoded: the THL's own work (turning the encodings into arrays,
  exactness, alignment, traces, residuals) is done while the encoder works, not after it.
  Sub-batches are independent, so the split changes no result.

Sequences the batch encoding does not reproduce (a lossy normalizer, WordPiece spacing, a cut
character the receiver has no byte token for) still go, one at a time, through `retokenize`'s
slow path.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from mrl_actors.thl.bytes_table import Vocab
from mrl_actors.thl.flat import finish, prepare
from mrl_actors.thl.lazy import Batch, TransferBatch
from mrl_actors.thl.residual import ResidualBudget

# Peer tokens per sub-batch: small enough that the last sub-batch's finish (the part no encoding
# overlaps) is short, large enough that each numpy pass and encoder call is worth its overhead.
SUB_BATCH_TOKENS = 1 << 15
OVERLAP = True


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


def _parts(n_all: np.ndarray) -> list[tuple[int, int]]:
    """Sequence ranges [lo, hi) of about `SUB_BATCH_TOKENS` peer tokens each, in order."""
    k = n_all.shape[0]
    n = int(n_all.sum())
    count = max(1, min(k, round(n / SUB_BATCH_TOKENS)))
    if count == 1:
        return [(0, k)]
    # Cut where the running token count crosses each multiple of the target.
    cuts = np.searchsorted(np.cumsum(n_all), np.arange(1, count) * (n / count), side="right")
    edges = [0, *sorted({int(c) for c in cuts if 0 < c < k}), k]
    return list(itertools.pairwise(edges))


def _encode(dst: Vocab, texts: list[str]) -> list[Any]:
    return dst.continuation.encode_batch_fast(texts, add_special_tokens=False) if texts else []


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
    all_off = np.concatenate([[0], np.cumsum(n_all)])  # [K + 1]

    def part(lo: int, hi: int) -> tuple[Any, ...]:
        a, b = int(all_off[lo]), int(all_off[hi])
        flats = [x[a:b] if isinstance(x, np.ndarray) else None for x in (lp0, mk0, ad0, rw0)]
        sc = adv_sc[lo:hi] if isinstance(adv_sc, np.ndarray) else None
        return (flat0[a:b], n_all[lo:hi], *flats, sc)

    def done(args: tuple[Any, ...], p: Any, encs: list[Any]) -> Batch:
        lp, mk, ad, rw, sc = args[2:]
        return finish(
            src, dst, p, encs, lp0=lp, mk0=mk, ad0=ad, adv_sc=sc, rw0=rw, budget=budget,
            logprob_rule=logprob_rule,
        )  # fmt: skip

    parts = [part(lo, hi) for lo, hi in _parts(n_all)]
    if len(parts) == 1 or not OVERLAP:
        out = []
        for args in parts:
            p = prepare(src, dst, args[0], args[1])
            out.append(done(args, p, _encode(dst, p.texts)))
        return TransferBatch(out)
    # The encoder works through the sub-batches on its own thread while this one prepares the
    # next texts and finishes each sub-batch whose encodings are back.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="thl-encode") as pool:
        preps = []
        for args in parts:
            p = prepare(src, dst, args[0], args[1])
            preps.append((args, p, pool.submit(_encode, dst, p.texts)))
        return TransferBatch([done(args, p, fut.result()) for args, p, fut in preps])
