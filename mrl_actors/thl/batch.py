"""The batch fast path of `transfer_many`: one pass over flat arrays for well-formed input.

A batch whose inputs are all well formed (1-D integer ids inside the peer's vocabulary, traces
that are arrays of the right length, scalar or per-token advantages, finite values) goes through
here; anything else takes the general path in `traces`, which names every problem per sequence.
Both give the same `Transfer`s (the THL tests check it).

What makes it cheap, against one pass per sequence:

- the peer's ids are concatenated once and every figure is a pass over that flat array (EOS,
  byte lengths, [UNK] and special counts per sequence by cumulative sums);
- the receiver's ids come out of the batch encoding as one flat array (one `np.fromiter`);
- exactness is a hash per sequence over tokens (`exact`), not a second gather of bytes;
- traces that were not given are not built; a scalar advantage passes through; an all-true loss
  mask needs no reduction;
- the per-sequence `Transfer` and `Residual` objects are made lazily, on first access, from the
  batch arrays (`lazy.TransferBatch`).

Sequences the batch encoding does not reproduce (a lossy normalizer, WordPiece spacing, a cut
character the receiver has no byte token for) still go, one at a time, through `retokenize`'s
slow path.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from mrl_actors.thl.align import align
from mrl_actors.thl.bytes_table import Vocab
from mrl_actors.thl.exact import seq_hashes
from mrl_actors.thl.lazy import Batch, TransferBatch
from mrl_actors.thl.residual import ResidualBudget
from mrl_actors.thl.retokenize import Retokenized, _count_lossy, _encode_slow

_EMPTY = np.zeros(0, dtype=np.int64)


def _clean_ids(src: Vocab, src_ids: Sequence[object]) -> np.ndarray | None:
    """int64 [N0]: the peer ids back to back, or None when any sequence is odd (general path)."""
    for x in src_ids:
        if not (isinstance(x, np.ndarray) and x.ndim == 1 and x.dtype.kind in "iu"):
            return None
    if not src_ids:
        return None
    flat = np.concatenate(src_ids).astype(np.int64, copy=False)  # type: ignore[arg-type]
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
        np.concatenate(given).astype(dtype, copy=False) if given else np.zeros(0, dtype)
    )
    if dtype is np.float64 and not np.isfinite(flat).all():
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


def _seg_sum(values: np.ndarray, off: np.ndarray) -> np.ndarray:
    """[K]: sums of `values` over the segments off[k]:off[k+1] (empty segments give 0)."""
    # A bool cumsum into int32 is one fast pass; into int64 numpy takes a slow casting loop.
    acc = np.int32 if values.dtype == np.bool_ and values.shape[0] < (1 << 31) else None
    csum = np.concatenate([[0], np.cumsum(values, dtype=acc)]).astype(np.int64, copy=False)
    out: np.ndarray = csum[off[1:]] - csum[off[:-1]]
    return out


def _gather(vocab: Vocab, ids: np.ndarray, lens: np.ndarray, ends: np.ndarray) -> bytes:
    """The bytes of in-range `ids` (int64 [N], with their lengths and cumulative ends) at once."""
    total = int(ends[-1]) if ends.shape[0] else 0
    if total == 0:
        return b""
    # Output byte j reads buffer[starts[id] + (j - first output byte of that id)]; in int32 when
    # the buffer and the batch allow it (half the memory traffic of int64).
    it = np.int32 if max(total, vocab.buffer.shape[0]) < (1 << 31) else np.int64
    shift = np.repeat((vocab.starts[ids] - (ends - lens)).astype(it), lens)  # [B]
    shift += np.arange(total, dtype=it)
    return vocab.buffer[shift].tobytes()


def _decode(data: bytes, dst: Vocab) -> tuple[str | None, list[int], int]:
    """The text to encode, receiver byte tokens for a character cut at the end, invalid bytes."""
    try:
        return data.decode("utf-8"), [], 0
    except UnicodeDecodeError:
        pass
    for cut in (1, 2, 3):
        try:
            text = data[:-cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        tail = dst.byte_ids[np.frombuffer(data[-cut:], dtype=np.uint8)]
        if (tail >= 0).all():
            return text, tail.tolist(), cut
        return None, [], 0
    return None, [], 0


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
    # 1. EOS set aside by role, peer bytes with one gather.
    all_off = np.concatenate([[0], np.cumsum(n_all)])  # [K + 1]
    last = all_off[1:] - 1  # [K]
    nonempty = n_all > 0
    end_ids = np.fromiter(src.end_ids, dtype=np.int64, count=len(src.end_ids))
    eos = np.zeros(k, dtype=bool)  # [K]
    if flat0.shape[0]:
        eos = nonempty & np.isin(flat0[np.maximum(last, 0)], end_ids)
    keep = np.ones(flat0.shape[0], dtype=bool)
    keep[last[eos]] = False
    core = flat0[keep] if eos.any() else flat0  # [N]
    n_src = n_all - eos  # [K]
    src_off = np.concatenate([[0], np.cumsum(n_src)])  # [K + 1]
    lens = src.lengths[core]  # [N]
    s_g = np.cumsum(lens)  # [N]: peer token ends on the batch byte axis (sequence i at off[i])
    raw = _gather(src, core, lens, s_g)
    totals = _seg_sum(lens, src_off)  # [K]
    off = np.concatenate([[0], np.cumsum(totals)])  # [K + 1]
    # 2. one batch encoding; receiver ids as one flat array.
    ob = off.tolist()
    decoded = [_decode(raw[ob[i] : ob[i + 1]], dst) for i in range(k)]
    fast = [i for i in range(k) if decoded[i][0] is not None]
    invalid = np.zeros(k, dtype=np.int64)
    lossy = np.zeros(k, dtype=np.int64)
    exact = np.zeros(k, dtype=bool)
    d_counts = np.zeros(k, dtype=np.int64)
    d_flat = _EMPTY
    if fast:
        encs = dst.continuation.encode_batch_fast(
            [decoded[i][0] for i in fast], add_special_tokens=False
        )
        lists = []
        for i, enc in zip(fast, encs, strict=True):
            tail = decoded[i][1]
            lists.append(enc.ids + tail if tail else enc.ids)
        fc = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))  # [F]
        d_flat = np.fromiter(
            itertools.chain.from_iterable(lists), dtype=np.int64, count=int(fc.sum())
        )
        fidx = np.asarray(fast, dtype=np.int64)
        d_counts[fidx] = fc
        invalid[fidx] = [decoded[i][2] for i in fast]
    d_off = np.concatenate([[0], np.cumsum(d_counts)])  # [K + 1]
    d_csum = np.concatenate([[0], np.cumsum(dst.lengths[d_flat])])  # [M + 1]
    d_seq = np.repeat(np.arange(k), d_counts)  # [M]
    dtot = d_csum[d_off[1:]] - d_csum[d_off[:-1]]  # [K]
    # Receiver token ends on the same axis: the running sum itself when every length agrees.
    if np.array_equal(dtot, totals):
        d_g = d_csum[1:]
    else:
        d_g = d_csum[1:] - (d_csum[d_off[:-1]] - off[:-1])[d_seq]
    # 3. exactness: lengths, then a hash per sequence over tokens (`exact`), not bytes.
    has = np.zeros(k, dtype=bool)
    has[fast] = True
    same = has & (dtot == totals)
    if same.any():
        top = int(off[-1])
        hs = seq_hashes(src, core, top - s_g, src_off)  # [2, K]
        hd = seq_hashes(dst, d_flat, top - d_g, d_off)  # [2, K]
        exact = same & (hs == hd).all(axis=0)
    slow = np.flatnonzero(~exact)
    if slow.shape[0]:
        # The few sequences the batch encoding does not reproduce, one at a time, then spliced.
        ids_parts: list[np.ndarray] = []
        end_parts: list[np.ndarray] = []
        slow_set = set(slow.tolist())
        for i in range(k):
            if i in slow_set:
                s = Retokenized(
                    ids=core[src_off[i] : src_off[i + 1]],
                    lens=lens[src_off[i] : src_off[i + 1]],
                    eos=bool(eos[i]),
                    problems=[],
                    data=raw[off[i] : off[i + 1]],
                )
                _encode_slow(dst, s)
                lossy[i] = _count_lossy(dst, s)
                invalid[i] = s.invalid
                exact[i] = lossy[i] == 0
                assert s.dst_ids is not None and s.dst_ends is not None
                ids_parts.append(s.dst_ids)
                end_parts.append(s.dst_ends)
            else:
                a, b = int(d_off[i]), int(d_off[i + 1])
                ids_parts.append(d_flat[a:b])
                end_parts.append(d_g[a:b] - off[i])
        d_counts = np.fromiter((x.shape[0] for x in ids_parts), dtype=np.int64, count=k)
        d_flat = np.concatenate(ids_parts).astype(np.int64, copy=False)
        d_off = np.concatenate([[0], np.cumsum(d_counts)])
        d_seq = np.repeat(np.arange(k), d_counts)
        d_g = np.concatenate(end_parts).astype(np.int64, copy=False) + off[:-1][d_seq]
    # 4. alignment on one global byte axis, one phantom byte between sequences.
    base = off[:-1] + np.arange(k, dtype=np.int64)  # [K]
    seq_ends = base + totals
    src_ends = s_g + np.repeat(np.arange(k, dtype=np.int64), n_src)  # [N]
    sp = align(src_ends, d_g + d_seq, base, seq_ends)
    n_spans = sp.ends.shape[0]
    # Output layout: each sequence's receiver tokens, then one slot for its mapped EOS.
    add_eos = eos & (dst.eos_id is not None)  # [K]
    m_out = d_counts + add_eos  # [K]
    out_off = np.concatenate([[0], np.cumsum(m_out)])  # [K + 1]
    any_eos = bool(add_eos.any())
    if any_eos:
        core_pos = np.arange(d_flat.shape[0]) + np.repeat(out_off[:-1] - d_off[:-1], d_counts)
        eos_pos = out_off[1:][add_eos] - 1
    eos_core = ~keep  # [N0]: the EOS entries of a trace laid out like the peer ids

    def place(values: np.ndarray, trace: np.ndarray | None, fill: Any, dtype: Any) -> np.ndarray:
        """[T]: per-receiver-token values, then each mapped EOS slot's value from the trace."""
        if not any_eos:
            return values.astype(dtype, copy=False)
        out: np.ndarray = np.empty(int(out_off[-1]), dtype=dtype)
        out[core_pos] = values
        if trace is None:
            out[eos_pos] = fill
        else:
            ev = np.full(k, fill, dtype=dtype)
            ev[eos] = trace[eos_core]
            out[eos_pos] = ev[add_eos]
        return out

    def core_of(trace: np.ndarray) -> np.ndarray:
        return trace[keep] if eos.any() else trace

    # 5. traces, only those given.
    last_tok = sp.dst_is_last()  # [M]
    lp_out = None
    if isinstance(lp0, np.ndarray):
        lp_sum = np.bincount(sp.src_span, weights=core_of(lp0), minlength=n_spans)  # [S]
        if logprob_rule == "last":
            dst_lp = np.where(last_tok, lp_sum[sp.dst_span], 0.0)
        else:
            dst_lp = lp_sum[sp.dst_span] / np.maximum(sp.dst_count, 1)[sp.dst_span]
        lp_out = place(dst_lp, lp0, 0.0, np.float64)
    if isinstance(mk0, np.ndarray) and not mk0.all():
        out_n = np.bincount(sp.src_span, weights=~core_of(mk0), minlength=n_spans)  # [S]
        mask_out = place(out_n[sp.dst_span] == 0, mk0, True, np.bool_)
    else:
        mask_out = np.ones(int(out_off[-1]), dtype=bool)
    ad_out: np.ndarray | None = adv_sc if isinstance(adv_sc, np.ndarray) else None
    if isinstance(ad0, np.ndarray):
        ad_sum = np.bincount(sp.src_span, weights=core_of(ad0), minlength=n_spans)
        ad_out = place(
            ad_sum[sp.dst_span] / np.maximum(sp.src_count, 1)[sp.dst_span], ad0, 0.0, np.float64
        )
    rw_out = None
    if isinstance(rw0, np.ndarray):
        rw_sum = np.bincount(sp.src_span, weights=core_of(rw0), minlength=n_spans)
        rw_out = place(np.where(last_tok, rw_sum[sp.dst_span], 0.0), rw0, 0.0, np.float64)
    ids_out = place(d_flat, None, dst.eos_id or 0, np.int32)
    # Residual figures per sequence: spans are in sequence order, every sequence has one.
    span_off = np.concatenate([[0], np.cumsum(np.bincount(sp.seq, minlength=k))])  # [K + 1]
    live = (sp.src_count + sp.dst_count) > 0  # [S]
    one = sp.one_to_one & live
    nbytes = sp.nbytes
    starts = span_off[:-1]
    src_unk = dst_unk = np.zeros(k, dtype=np.int64)
    if src.unk_id is not None:
        src_unk = _seg_sum(core == src.unk_id, src_off)
    if dst.unk_id is not None:
        dst_unk = _seg_sum(d_flat == dst.unk_id, d_off)
    return TransferBatch(
        Batch(
            ids=ids_out,
            logprobs=lp_out,
            loss_mask=mask_out,
            advantages=ad_out,
            scalar_adv=isinstance(adv_sc, np.ndarray),
            token_rewards=rw_out,
            out_off=out_off,
            exact=exact,
            n_src=n_src,
            eos=eos,
            add_eos=add_eos,
            n_bytes=totals,
            spans=_seg_sum(live, span_off),
            one=_seg_sum(one, span_off),
            nm_bytes=_seg_sum(np.where(one, 0, nbytes), span_off),
            widest=np.maximum.reduceat(nbytes, starts) if n_spans else np.zeros(k, np.int64),
            most=(
                np.maximum.reduceat(np.maximum(sp.src_count, sp.dst_count), starts)
                if n_spans
                else np.zeros(k, np.int64)
            ),
            orphan=_seg_sum((sp.src_count > 0) & (sp.dst_count == 0), span_off) > 0,
            unk=src_unk + dst_unk,
            dropped=_seg_sum(src.special[core], src_off) - src_unk,
            lossy=lossy,
            invalid=invalid,
            budget=budget,
        )
    )
