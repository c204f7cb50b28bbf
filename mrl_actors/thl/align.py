"""Co-terminating byte spans between two tokenizations, for a whole batch at once, in numpy.

Each token covers a byte range of the text and is known by its end offset. The offsets both
tokenizations share cut the text into the smallest spans that both tile exactly; under the chain
rule a span's log-prob is the sum of its tokens' log-probs on either side, which is what makes the
transfer of sums exact. This is O(bytes + n + m) per sequence, against O(n·m) edit distances for
a DTW.

A batch is laid out on one global byte axis: sequence k starts at `base[k]`, and consecutive
sequences are one phantom byte apart so that no end offset of one sequence can coincide with one
of the next (back to back is enough when no sequence has a token of zero bytes or none at all).
Every sequence's final offset is forced to be a span end, so spans never cross sequences. The
work is a few linear passes over that axis (flags, a cumulative sum, gathers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Spans:
    """The span structure of a batch; S spans, N source tokens, M receiver tokens."""

    ends: np.ndarray  # int64 [S]: global end offset of each span
    starts: np.ndarray  # int64 [S]: global start offset of each span
    seq: np.ndarray  # int64 [S]: which sequence each span belongs to
    seq_off: np.ndarray  # int64 [K + 1]: sequence k's spans are seq_off[k]:seq_off[k + 1]
    src_span: np.ndarray  # int64 [N]: span of each source token
    dst_span: np.ndarray  # int64 [M]: span of each receiver token
    src_count: np.ndarray  # int64 [S]: source tokens per span
    dst_count: np.ndarray  # int64 [S]: receiver tokens per span

    @property
    def one_to_one(self) -> np.ndarray:
        """bool [S]: spans with exactly one token on each side."""
        return (self.src_count == 1) & (self.dst_count == 1)

    @property
    def nbytes(self) -> np.ndarray:
        """int64 [S]: bytes per span."""
        return self.ends - self.starts

    def dst_is_last(self) -> np.ndarray:
        """bool [M]: the receiver token is the last of its span."""
        last = np.ones(self.dst_span.shape[0], dtype=bool)
        if last.shape[0] > 1:
            last[:-1] = self.dst_span[:-1] != self.dst_span[1:]
        return last


def align(
    src_ends: np.ndarray, dst_ends: np.ndarray, seq_starts: np.ndarray, seq_ends: np.ndarray
) -> Spans:
    """Spans from global end offsets.

    src_ends: int64 [N] and dst_ends: int64 [M], each non-decreasing, every value inside its
    sequence's [seq_starts[k], seq_ends[k]]; seq_starts/seq_ends: int64 [K], ascending, with
    seq_starts[k+1] > seq_ends[k], or seq_starts[k+1] == seq_ends[k] where no end offset of
    sequence k+1 is its start (no token of zero bytes first, not empty).
    """
    src_ends = np.asarray(src_ends, dtype=np.int64)
    dst_ends = np.asarray(dst_ends, dtype=np.int64)
    seq_starts = np.asarray(seq_starts, dtype=np.int64)
    seq_ends = np.asarray(seq_ends, dtype=np.int64)
    k = seq_ends.shape[0]
    # One flag per byte position of the batch axis (linear, no sorting or searching): where a
    # token of each side ends, and where both do. Each sequence's own end is a span end too, so
    # spans never leak into the next sequence.
    size = int(seq_ends[-1]) + 1 if k else 1
    src_mark = np.zeros(size, dtype=bool)
    src_mark[src_ends] = True
    common_mark = np.zeros(size, dtype=bool)
    common_mark[dst_ends] = True
    common_mark &= src_mark
    common_mark[seq_ends] = True
    common = np.flatnonzero(common_mark)  # [S], sorted, unique
    # A token's span is the first span end at or after its own end: the number of span ends
    # strictly before it, an exclusive running count of the flags.
    # (A bool cumsum into int32 is one fast pass; into int64 numpy takes a slow casting loop.)
    before = np.empty(size + 1, dtype=np.int32 if size < (1 << 31) else np.int64)
    before[0] = 0
    np.cumsum(common_mark, out=before[1:])  # [size + 1]: span ends before each position
    src_span = before[src_ends].astype(np.int64)
    dst_span = before[dst_ends].astype(np.int64)
    # Each sequence's end is a span end: sequence k's spans are those up to and with its end.
    seq_off = np.empty(k + 1, dtype=np.int64)  # [K + 1]
    seq_off[0] = 0
    seq_off[1:] = before[seq_ends + 1]
    s = common.shape[0]
    seq = np.repeat(np.arange(k, dtype=np.int64), np.diff(seq_off))
    # A span starts where the one before it ends, the first of each sequence at its start.
    starts = np.empty_like(common)
    if s:
        starts[1:] = common[:-1]
        starts[seq_off[:-1]] = seq_starts
    return Spans(
        ends=common,
        starts=starts,
        seq=seq,
        seq_off=seq_off,
        src_span=src_span,
        dst_span=dst_span,
        src_count=np.bincount(src_span, minlength=s),
        dst_count=np.bincount(dst_span, minlength=s),
    )
