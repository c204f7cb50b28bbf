"""Co-terminating spans: the batched numpy aligner against the two-pointer one, and by hand."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mrl_actors.thl.align import align
from mrl_actors.thl.baselines import dtw_align, two_pointer_spans


@st.composite
def tilings(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    """Two tokenizations (byte lengths, zero-length tokens allowed) of the same byte count."""
    total = draw(st.integers(0, 60))
    cuts_a = sorted(draw(st.lists(st.integers(0, total), max_size=25)))
    cuts_b = sorted(draw(st.lists(st.integers(0, total), max_size=25)))
    a = np.diff([0, *cuts_a, total]).tolist()
    b = np.diff([0, *cuts_b, total]).tolist()
    return a, b


@settings(max_examples=200, deadline=None)
@given(batch=st.lists(tilings(), min_size=1, max_size=5))
def test_batched_spans_equal_the_two_pointer_spans(
    batch: list[tuple[list[int], list[int]]],
) -> None:
    totals = np.asarray([sum(a) for a, _ in batch])
    base = np.concatenate([[0], np.cumsum(totals + 1)[:-1]])
    src = np.concatenate([base[k] + np.cumsum(a, dtype=np.int64) for k, (a, _) in enumerate(batch)])
    dst = np.concatenate([base[k] + np.cumsum(b, dtype=np.int64) for k, (_, b) in enumerate(batch)])
    sp = align(src, dst, base, base + totals)
    i = j = 0
    first_span = 0
    for k, (a, b) in enumerate(batch):
        ref_src, ref_dst = two_pointer_spans(a, b)
        got_src = sp.src_span[i : i + len(a)] - first_span
        got_dst = sp.dst_span[j : j + len(b)] - first_span
        assert got_src.tolist() == ref_src and got_dst.tolist() == ref_dst
        spans_k = np.flatnonzero(sp.seq == k)
        # The spans of a sequence tile its bytes exactly, and never cross into another.
        assert sp.nbytes[spans_k].sum() == totals[k]
        if len(a) and len(b):
            # Every span with bytes has tokens on both sides.
            live = spans_k[sp.nbytes[spans_k] > 0]
            assert (sp.src_count[live] > 0).all() and (sp.dst_count[live] > 0).all()
        first_span += spans_k.shape[0]
        i += len(a)
        j += len(b)


def test_spans_are_the_smallest_co_terminating_ones() -> None:
    # "hello world": peer [hel|lo| wor|ld], receiver [hello| world]
    sp = align(np.asarray([3, 5, 9, 11]), np.asarray([5, 11]), np.asarray([0]), np.asarray([11]))
    assert sp.ends.tolist() == [5, 11] and sp.starts.tolist() == [0, 5]
    assert sp.src_span.tolist() == [0, 0, 1, 1] and sp.dst_span.tolist() == [0, 1]
    assert sp.one_to_one.tolist() == [False, False]


def test_dtw_baseline_returns_a_monotone_path_over_both_sequences() -> None:
    pairs = dtw_align(["hel", "lo", " wor", "ld"], ["hello", " world"])
    assert pairs[0] == (0, 0) and pairs[-1] == (3, 1)
    assert {i for i, _ in pairs} == {0, 1, 2, 3} and {j for _, j in pairs} == {0, 1}
    assert all(p <= q for p, q in itertools.pairwise(pairs))
