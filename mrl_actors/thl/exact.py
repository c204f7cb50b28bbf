"""A cheap exactness check: do the receiver's tokens spell the peer's bytes, without the bytes.

Whether the receiver's ids concatenate to exactly the peer's bytes can be told without the
bytes: this compares a polynomial hash of each sequence, built from one precomputed hash per
token id, so it costs a few passes over the *tokens* of both sides. (The batch fast path now
gathers the receiver's bytes and compares them with the peer's instead: with the peer's bytes
already at hand, one gather and one comparison measured cheaper than hashing both sides.)

    H(t_1 .. t_n) = sum_i h(t_i) * B^(bytes after t_i)   (mod P), with P = 2^31 - 1,

("after" counted to a point past the whole batch: both sides share it, so no per-sequence
shift is needed)

and h(t) the hash of one token's bytes. Two bases are used, drawn from the operating system's
entropy once per process, so two different byte strings of the same length agree on both with
probability about 2^-60 even for text made to collide: the bases are not known to a peer.
Lengths are compared exactly beside the hashes.
"""

from __future__ import annotations

import secrets
import threading

import numpy as np

from mrl_actors.thl.bytes_table import Vocab

P = (1 << 31) - 1  # a Mersenne prime: every product of two residues fits in int64
_BASES = np.asarray([secrets.randbelow(P - 1024) + 512 for _ in range(2)], dtype=np.int64)
_LOCK = threading.Lock()
_POW = np.ones((2, 1), dtype=np.int64)  # [2, L]: B^k mod P, grown on demand
_TABLES: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # id(buffer) -> (buffer, hashes [2, V])


def powers(n: int) -> np.ndarray:
    """int64 [2, >= n + 1]: B^k mod P for both bases, k = 0..n (doubling, no Python loop per k)."""
    global _POW
    pw = _POW
    if pw.shape[1] > n:
        return pw
    with _LOCK:
        pw = _POW
        while pw.shape[1] <= n:
            k = pw.shape[1]
            step = pw[:, k - 1 : k] * _BASES[:, None] % P  # B^k
            pw = np.concatenate([pw, pw * step % P], axis=1)  # [2, 2k]
        _POW = pw
    return pw


def token_hashes(vocab: Vocab) -> np.ndarray:
    """int64 [2, V]: the hash of each token id's bytes (0 for ids with no bytes); cached."""
    key = id(vocab.buffer)
    hit = _TABLES.get(key)
    if hit is not None and hit[0] is vocab.buffer:
        return hit[1]
    lens = vocab.lengths  # [V]
    total = int(vocab.buffer.shape[0])
    ends = vocab.starts + lens  # [V]
    after = np.repeat(ends, lens) - 1 - np.arange(total)  # [total]: bytes after it in its token
    pw = powers(int(lens.max()) if lens.shape[0] else 0)
    out = np.zeros((2, lens.shape[0]), dtype=np.int64)
    vals = vocab.buffer.astype(np.int64) + 1  # [total]: +1 so that a zero byte counts
    for r in range(2):
        terms = vals * pw[r, after] % P  # [total]
        csum = np.concatenate([[0], np.cumsum(terms)])  # [total + 1]
        out[r] = (csum[ends] - csum[vocab.starts]) % P
    with _LOCK:
        _TABLES[key] = (vocab.buffer, out)
    return out


def seq_hashes(vocab: Vocab, ids: np.ndarray, after: np.ndarray, tok_off: np.ndarray) -> np.ndarray:
    """int64 [2, K]: a hash of each sequence's concatenated token bytes.

    ids: int64 [T], every sequence's tokens back to back; after: int64 [T], the bytes after each
    token's end up to one common point past the batch (the same point for both tokenizations
    compared, so equal bytes at equal positions give equal hashes); tok_off: int64 [K + 1].
    """
    h = token_hashes(vocab)  # [2, V]
    pw = powers(int(after.max()) if after.shape[0] else 0)
    out = np.zeros((2, tok_off.shape[0] - 1), dtype=np.int64)
    for r in range(2):
        x = h[r][ids] * pw[r][after]  # [T], < 2^62
        terms = (x & P) + (x >> 31)  # [T]: x mod P up to one P (a Mersenne fold), < 2^32
        csum = np.concatenate([[0], np.cumsum(terms)])  # [T + 1], < 2^63 for T < 2^31
        out[r] = (csum[tok_off[1:]] - csum[tok_off[:-1]]) % P
    return out
