"""Steps 1 to 3 of a transfer: the peer's exact bytes, and the receiver's ids with byte ends.

1. bytes: the peer's *sampled* ids -> exact bytes through the peer's byte table (one gather for
   the batch); a trailing EOS-role token (EOS, `<|im_end|>`) is set aside, to be mapped by role;
2. fast path: the bytes, decoded as UTF-8, are encoded by the receiver's continuation encoder in
   one `encode_batch_fast` call; where the receiver's byte table reproduces the bytes (the usual
   case, checked in one vectorized pass) its token ends are the cumulative byte lengths, exact to
   the byte, even inside a character split across tokens;
3. slow path, only for what the fast path could not reproduce (a normalizer, `[UNK]`, WordPiece
   spacing, invalid UTF-8 before the end): re-encode with offsets, place receiver tokens by the
   byte offsets of their characters, and count the bytes of every span whose receiver bytes
   differ as lossy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mrl_actors.thl.align import align
from mrl_actors.thl.bytes_table import Vocab, gather_bytes


@dataclass
class Retokenized:
    """One completion through steps 1 to 3 (the working state `traces` builds on)."""

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


def prepare(src: Vocab, raw: object) -> Retokenized:
    """Peer ids checked (shape, dtype, range) without raising, and their byte lengths."""
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
    return Retokenized(ids=np.where(bad, -1, ids), lens=lens, eos=eos, problems=problems)


def _char_byte_ends(data: bytes) -> np.ndarray:
    """int64 [chars + 1]: byte offset of each character start, then the total length."""
    b = np.frombuffer(data, dtype=np.uint8)
    starts = np.flatnonzero((b & 0xC0) != 0x80)
    return np.concatenate([starts, [b.shape[0]]]).astype(np.int64)


def _encode_slow(dst: Vocab, s: Retokenized) -> None:
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


def _count_lossy(dst: Vocab, s: Retokenized) -> int:
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


def _fast_path(dst: Vocab, seqs: list[Retokenized], allbytes: np.ndarray, off: np.ndarray) -> None:
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


def retokenize(src: Vocab, dst: Vocab, src_ids: list[object]) -> list[Retokenized]:
    """Steps 1 to 3 for a batch of peer completions (each int [n]); never raises."""
    seqs = [prepare(src, raw) for raw in src_ids]
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
    return seqs
