"""Baseline aligners the benchmark runs side by side with `align.align`, and tests cross-check.

- `two_pointer_spans`: the same co-terminating spans as `align.align`, computed by walking both
  token lists with two cursors in plain Python: O(n + m), but one interpreted step per token.
- `dtw_align`: a MinED-style aligner (Wan et al., knowledge fusion): dynamic time warping over the
  two token sequences with the edit distance between token strings as the local cost, O(n·m)
  cells, each an edit distance. It returns many-to-many token pairs, not byte-exact spans; it is
  here as the cost reference the issue asks us to beat, not as an alternative to use.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache


def two_pointer_spans(
    src_lens: Sequence[int], dst_lens: Sequence[int]
) -> tuple[list[int], list[int]]:
    """Span index of every source and receiver token from byte lengths, with two cursors.

    Same semantics as `align.align` for one sequence: spans end at the shared end offsets and
    at the total; a token belongs to the first span whose end is at or after its own end.
    """
    src_ends, dst_ends = [], []
    a = b = 0
    for x in src_lens:
        a += x
        src_ends.append(a)
    for y in dst_lens:
        b += y
        dst_ends.append(b)
    common: list[int] = []
    i = j = 0
    while i < len(src_ends) and j < len(dst_ends):
        if src_ends[i] == dst_ends[j]:
            if not common or common[-1] != src_ends[i]:
                common.append(src_ends[i])
            i += 1
            j += 1
        elif src_ends[i] < dst_ends[j]:
            i += 1
        else:
            j += 1
    if not common or common[-1] != a:
        common.append(a)

    def assign(ends: list[int]) -> list[int]:
        out, k = [], 0
        for e in ends:
            while k < len(common) - 1 and common[k] < e:
                k += 1
            out.append(k)
        return out

    return assign(src_ends), assign(dst_ends)


@lru_cache(maxsize=1 << 16)
def _edit(a: str, b: str) -> int:
    """Levenshtein distance, plain dynamic programming."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def dtw_align(src_tokens: Sequence[str], dst_tokens: Sequence[str]) -> list[tuple[int, int]]:
    """Token pairs (i, j) on the minimum-cost DTW path with edit-distance local costs."""
    n, m = len(src_tokens), len(dst_tokens)
    if n == 0 or m == 0:
        return []
    inf = float("inf")
    cost = [[inf] * (m + 1) for _ in range(n + 1)]
    cost[0][0] = 0.0
    for i in range(1, n + 1):
        s = src_tokens[i - 1]
        row, above = cost[i], cost[i - 1]
        for j in range(1, m + 1):
            best = min(above[j - 1], above[j], row[j - 1])
            row[j] = _edit(s, dst_tokens[j - 1]) + best
    pairs: list[tuple[int, int]] = []
    i, j = n, m
    while i > 0 and j > 0:
        pairs.append((i - 1, j - 1))
        diag, up, left = cost[i - 1][j - 1], cost[i - 1][j], cost[i][j - 1]
        if diag <= up and diag <= left:
            i, j = i - 1, j - 1
        elif up <= left:
            i -= 1
        else:
            j -= 1
    pairs.reverse()
    return pairs
