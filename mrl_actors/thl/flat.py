"""The fast path's two halves over flat arrays: `prepare` before the receiver's encoding,
`finish` after it (`batch` validates the input and calls them).

`prepare` needs the peer side only: EOS set aside by role, the peer bytes with one gather, the
texts to encode, and the peer's residual counts. `finish` takes the encodings: the receiver ids
as one flat array, exactness (the receiver's bytes gathered and compared with the peer's: one
gather and one comparison of two byte strings, cheaper than a hash of each side), the slow path
for the few sequences the encoding does not reproduce, alignment (`align`), the traces that were
given, and every residual figure as one array over the batch (`lazy.Batch`).

Shapes: K sequences; N0 peer tokens as given, N without set-aside EOS; M receiver tokens; S
spans; T output tokens (M plus one mapped EOS slot per sequence that had one).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from mrl_actors.thl.align import align
from mrl_actors.thl.bytes_table import Vocab
from mrl_actors.thl.lazy import Batch
from mrl_actors.thl.residual import ResidualBudget
from mrl_actors.thl.retokenize import Retokenized, _count_lossy, _encode_slow

_EMPTY = np.zeros(0, dtype=np.int64)


def cum0(values: np.ndarray, dtype: Any = np.int64) -> np.ndarray:
    """[n + 1]: 0, then the running sum of `values` (one pass, no concatenation copy)."""
    out: np.ndarray = np.empty(values.shape[0] + 1, dtype=dtype)
    out[0] = 0
    np.cumsum(values, out=out[1:])
    return out


def _seg_sum(values: np.ndarray, off: np.ndarray) -> np.ndarray:
    """[K]: sums of `values` over the segments off[k]:off[k+1] (empty segments give 0)."""
    # A bool cumsum into int32 is one fast pass; into int64 numpy takes a slow casting loop.
    small = values.dtype == np.bool_ and values.shape[0] < (1 << 31)
    csum = cum0(values, np.int32 if small else np.int64)
    out: np.ndarray = csum[off[1:]] - csum[off[:-1]]
    return out.astype(np.int64, copy=False)


def _all_positive(*arrays: np.ndarray) -> bool:
    """Every value of every array is > 0 (an empty array passes)."""
    return all(a.shape[0] == 0 or int(a.min()) > 0 for a in arrays)


def _gather(vocab: Vocab, ids: np.ndarray, lens: np.ndarray, firsts: np.ndarray) -> bytes:
    """The bytes of in-range `ids` (int64 [N]) at once, given their lengths and the output
    offset of each one's first byte (`firsts`, the running byte count before it)."""
    total = int(firsts[-1] + lens[-1]) if ids.shape[0] else 0
    if total == 0:
        return b""
    # Output byte j reads buffer[starts[id] + (j - first output byte of that id)]; in int32 when
    # the buffer and the batch allow it (half the memory traffic of int64).
    it = np.int32 if max(total, vocab.buffer.shape[0]) < (1 << 31) else np.int64
    shift = np.repeat((vocab.starts[ids] - firsts).astype(it), lens)  # [B]
    shift += np.arange(total, dtype=it)
    return np.take(vocab.buffer, shift).tobytes()


def decode_cut(data: bytes, bad: int, byte_ids: list[int]) -> tuple[str | None, list[int]]:
    """For bytes that are not valid UTF-8 from offset `bad` on (a `UnicodeDecodeError`'s start):
    the text before a character cut by the end, and the receiver's byte tokens for the cut bytes
    (`byte_ids`: its token for each byte value, -1 where none); (None, []) when more than the
    last 3 bytes are invalid or the receiver has no byte token for one of them.

    The text is the longest valid prefix that leaves at most 3 bytes: everything before `bad`
    decodes, and no prefix that reaches past it does, so the cut is exactly the bytes from it.
    """
    if len(data) - bad > 3:
        return None, []
    tail = [byte_ids[b] for b in data[bad:]]
    if min(tail) < 0:
        return None, []
    return data[:bad].decode("utf-8"), tail


@dataclass(eq=False)
class Prepared:
    """A batch's peer side, ready for the receiver's encoding."""

    k: int
    keep: np.ndarray | None  # bool [N0]: not a set-aside EOS (None: no EOS was set aside)
    eos: np.ndarray  # bool [K]: a trailing EOS-role token was set aside
    core: np.ndarray  # int64 [N]: peer ids without those EOS
    n_src: np.ndarray  # int64 [K]
    src_off: np.ndarray  # int64 [K + 1]
    lens: np.ndarray  # int64 [N]: bytes per peer token
    s_g: np.ndarray  # int64 [N]: peer token ends on the batch's byte axis
    totals: np.ndarray  # int64 [K]: bytes per sequence
    off: np.ndarray  # int64 [K + 1]: where each sequence's bytes start on that axis
    raw: bytes  # every sequence's bytes back to back
    fast: list[int]  # sequences whose bytes decode (a cut last character aside)
    texts: list[str]  # what the receiver encodes, one per sequence in `fast`
    tails: dict[int, list[int]]  # receiver byte tokens for a cut last character, by sequence
    invalid: np.ndarray  # int64 [K]: the bytes of that cut character
    src_unk: np.ndarray  # int64 [K]: peer [UNK] tokens
    dropped: np.ndarray  # int64 [K]: peer special tokens with no role


def prepare(src: Vocab, dst: Vocab, flat0: np.ndarray, n_all: np.ndarray) -> Prepared:
    """The peer side of a batch (flat0: int64 [N0], its sequences back to back, n_all [K]
    their lengths; every id inside the peer's vocabulary)."""
    k = n_all.shape[0]
    all_off = cum0(n_all)  # [K + 1]
    # 1. EOS set aside by role.
    eos = np.zeros(k, dtype=bool)
    if flat0.shape[0]:
        last_id = flat0[np.maximum(all_off[1:] - 1, 0)]  # [K]
        for e in src.end_ids:
            eos |= last_id == e
        eos &= n_all > 0
    keep = None
    core, n_src, src_off = flat0, n_all, all_off
    if eos.any():
        keep = np.ones(flat0.shape[0], dtype=bool)
        keep[all_off[1:][eos] - 1] = False
        core = flat0[keep]
        n_src = n_all - eos
        src_off = cum0(n_src)
    # 2. the peer bytes, with one gather; the texts to encode.
    lens = src.lengths[core]  # [N]
    s_cum = cum0(lens)  # [N + 1]
    s_g = s_cum[1:]
    off = s_cum[src_off]  # [K + 1]
    totals = off[1:] - off[:-1]
    raw = _gather(src, core, lens, s_cum[:-1])
    ob = off.tolist()
    fast: list[int] = []
    texts: list[str] = []
    tails: dict[int, list[int]] = {}
    invalid = np.zeros(k, dtype=np.int64)
    byte_ids: list[int] | None = None
    for i in range(k):
        data = raw[ob[i] : ob[i + 1]]
        try:
            texts.append(data.decode("utf-8"))
            fast.append(i)
            continue
        except UnicodeDecodeError as exc:
            bad = exc.start
        byte_ids = dst.byte_ids.tolist() if byte_ids is None else byte_ids
        text, tail = decode_cut(data, bad, byte_ids)
        if text is not None:
            texts.append(text)
            fast.append(i)
            tails[i] = tail
            invalid[i] = len(tail)
    # 3. the peer's [UNK] and special counts.
    src_unk = dropped = np.zeros(k, dtype=np.int64)
    special = src.special[core]  # [N]
    if special.any():
        if src.unk_id is not None:
            src_unk = _seg_sum(core == src.unk_id, src_off)
        dropped = _seg_sum(special, src_off) - src_unk
    return Prepared(
        k=k,
        keep=keep,
        eos=eos,
        core=core,
        n_src=n_src,
        src_off=src_off,
        lens=lens,
        s_g=s_g,
        totals=totals,
        off=off,
        raw=raw,
        fast=fast,
        texts=texts,
        tails=tails,
        invalid=invalid,
        src_unk=src_unk,
        dropped=dropped,
    )


def _receiver_ids(p: Prepared, encs: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """The receiver ids of the encoded sequences as one flat array, and counts per sequence."""
    lists = [e.ids for e in encs]
    for f, i in enumerate(p.fast):
        if i in p.tails:
            lists[f] = lists[f] + p.tails[i]
    counts = np.zeros(p.k, dtype=np.int64)
    fc = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))  # [F]
    counts[p.fast] = fc
    flat = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int64, count=int(fc.sum()))
    return flat, counts


def _slow_splice(
    dst: Vocab,
    p: Prepared,
    slow: np.ndarray,
    d_flat: np.ndarray,
    d_counts: np.ndarray,
    d_g: np.ndarray,
    exact: np.ndarray,
    lossy: np.ndarray,
    invalid: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sequences the batch encoding does not reproduce, one at a time through the slow
    path, spliced into the flat receiver ids; returns (ids, counts, token ends) anew."""
    d_off = cum0(d_counts)
    ids_parts: list[np.ndarray] = []
    end_parts: list[np.ndarray] = []
    slow_set = set(slow.tolist())
    off = p.off
    for i in range(p.k):
        if i in slow_set:
            a, b = int(p.src_off[i]), int(p.src_off[i + 1])
            s = Retokenized(
                ids=p.core[a:b],
                lens=p.lens[a:b],
                eos=bool(p.eos[i]),
                problems=[],
                data=p.raw[off[i] : off[i + 1]],
            )
            _encode_slow(dst, s)
            lossy[i] = _count_lossy(dst, s)
            invalid[i] = s.invalid
            exact[i] = lossy[i] == 0
            assert s.dst_ids is not None and s.dst_ends is not None
            ids_parts.append(s.dst_ids)
            end_parts.append(s.dst_ends + off[i])
        else:
            a, b = int(d_off[i]), int(d_off[i + 1])
            ids_parts.append(d_flat[a:b])
            end_parts.append(d_g[a:b])
    counts = np.fromiter((x.shape[0] for x in ids_parts), dtype=np.int64, count=p.k)
    ids = np.concatenate(ids_parts).astype(np.int64, copy=False)
    ends = np.concatenate(end_parts).astype(np.int64, copy=False)
    return ids, counts, ends


def finish(
    src: Vocab,
    dst: Vocab,
    p: Prepared,
    encs: list[Any],
    *,
    lp0: np.ndarray | None,
    mk0: np.ndarray | None,
    ad0: np.ndarray | None,
    adv_sc: np.ndarray | None,
    rw0: np.ndarray | None,
    budget: ResidualBudget,
    logprob_rule: str,
) -> Batch:
    """The batch's `Batch` from its receiver encodings (one per sequence in `p.fast`).

    Traces are flat arrays laid out like the peer ids, EOS included (float64 or bool [N0]), or
    None when not given; `adv_sc` float64 [K] are scalar advantages (passed through).
    """
    k = p.k
    off, totals = p.off, p.totals
    # 1. receiver ids as one flat array, their byte ends on the same axis as the peer's.
    d_flat, d_counts = _receiver_ids(p, encs)
    d_lens = dst.lengths[d_flat]  # [M]
    d_cum = cum0(d_lens)  # [M + 1]
    d_off = cum0(d_counts)  # [K + 1]
    dtot = d_cum[d_off[1:]] - d_cum[d_off[:-1]]  # [K]
    d_g = d_cum[1:]  # the running sum itself when every sequence's length agrees
    if not np.array_equal(dtot, totals):
        d_g = d_g - np.repeat(d_cum[d_off[:-1]] - off[:-1], d_counts)
    # 2. exactness: lengths, then the receiver's bytes against the peer's, as one comparison of
    # two byte strings when every length agrees (the usual case), else sequence by sequence.
    has = np.zeros(k, dtype=bool)
    has[p.fast] = True
    same = has & (dtot == totals)
    exact = np.zeros(k, dtype=bool)
    if same.any():
        got = _gather(dst, d_flat, d_lens, d_cum[:-1])
        if same.all() and got == p.raw:
            exact = same
        else:
            ob, db = off.tolist(), d_cum[d_off].tolist()
            for i in np.flatnonzero(same).tolist():
                exact[i] = got[db[i] : db[i + 1]] == p.raw[ob[i] : ob[i + 1]]
    lossy = np.zeros(k, dtype=np.int64)
    invalid = p.invalid.copy()
    slow = np.flatnonzero(~exact)
    if slow.shape[0]:
        d_flat, d_counts, d_g = _slow_splice(
            dst, p, slow, d_flat, d_counts, d_g, exact, lossy, invalid
        )
        d_off = cum0(d_counts)
    # 3. alignment on one byte axis for the batch. Sequences are back to back on it when no
    # token has zero bytes and no sequence is empty (then no end offset of one sequence can be
    # the end of the one before); else one phantom byte between sequences keeps them apart.
    if slow.shape[0] == 0 and _all_positive(p.lens, d_lens, totals):
        sp = align(p.s_g, d_g, off[:-1], off[1:])
    else:
        ar = np.arange(k, dtype=np.int64)
        base = off[:-1] + ar  # [K]
        src_ends = p.s_g + np.repeat(ar, p.n_src)  # [N]
        sp = align(src_ends, d_g + np.repeat(ar, d_counts), base, base + totals)
    n_spans = sp.ends.shape[0]
    # Output layout: each sequence's receiver tokens, then one slot for its mapped EOS.
    eos = p.eos
    add_eos = eos & (dst.eos_id is not None)  # [K]
    m_out = d_counts + add_eos  # [K]
    out_off = cum0(m_out)  # [K + 1]
    any_eos = bool(add_eos.any())
    if any_eos:
        core_pos = np.arange(d_flat.shape[0]) + np.repeat(out_off[:-1] - d_off[:-1], d_counts)
        eos_pos = out_off[1:][add_eos] - 1
        eos_core = ~p.keep if p.keep is not None else np.zeros(0, dtype=bool)  # [N0]

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
        return trace[p.keep] if p.keep is not None else trace

    # 4. traces, only those given.
    lp_out = None
    if lp0 is not None:
        lp_sum = np.bincount(sp.src_span, weights=core_of(lp0), minlength=n_spans)  # [S]
        if logprob_rule == "last":
            dst_lp = np.where(sp.dst_is_last(), lp_sum[sp.dst_span], 0.0)
        else:
            dst_lp = (lp_sum / np.maximum(sp.dst_count, 1))[sp.dst_span]
        lp_out = place(dst_lp, lp0, 0.0, np.float64)
    if mk0 is not None and not mk0.all():
        out_n = np.bincount(sp.src_span, weights=~core_of(mk0), minlength=n_spans)  # [S]
        mask_out = place((out_n == 0)[sp.dst_span], mk0, True, np.bool_)
    else:
        mask_out = np.ones(int(out_off[-1]), dtype=bool)
    ad_out = adv_sc
    if ad0 is not None:
        ad_sum = np.bincount(sp.src_span, weights=core_of(ad0), minlength=n_spans)
        ad_out = place((ad_sum / np.maximum(sp.src_count, 1))[sp.dst_span], ad0, 0.0, np.float64)
    rw_out = None
    if rw0 is not None:
        rw_sum = np.bincount(sp.src_span, weights=core_of(rw0), minlength=n_spans)
        rw_out = place(np.where(sp.dst_is_last(), rw_sum[sp.dst_span], 0.0), rw0, 0.0, np.float64)
    ids_out = place(d_flat, None, dst.eos_id or 0, np.int32)
    # 5. residual figures per sequence: spans are in sequence order, every sequence has one.
    # Every sequence has at least one span (its end is one), so each figure is one `reduceat`
    # over the spans from each sequence's first.
    first = sp.seq_off[:-1]  # [K]
    sc, dc = sp.src_count, sp.dst_count
    one = (sc == 1) & (dc == 1)  # [S]: 1:1 spans (live by definition)
    nbytes = sp.nbytes
    dst_unk = np.zeros(k, dtype=np.int64)
    if dst.unk_id is not None:
        dst_unk = _seg_sum(d_flat == dst.unk_id, d_off)
    add = np.add.reduceat
    return Batch(
        ids=ids_out,
        logprobs=lp_out,
        loss_mask=mask_out,
        advantages=ad_out,
        scalar_adv=adv_sc is not None,
        token_rewards=rw_out,
        out_off=out_off,
        exact=exact,
        n_src=p.n_src,
        eos=eos,
        add_eos=add_eos,
        n_bytes=totals,
        spans=add((sc + dc) > 0, first, dtype=np.int64),
        one=add(one, first, dtype=np.int64),
        nm_bytes=totals - add(np.where(one, nbytes, 0), first),
        widest=np.maximum.reduceat(nbytes, first),
        most=np.maximum.reduceat(np.maximum(sc, dc), first),
        orphan=np.logical_or.reduceat((sc > 0) & (dc == 0), first),
        unk=p.src_unk + dst_unk,
        dropped=p.dropped,
        lossy=lossy,
        invalid=invalid,
        budget=budget,
    )
