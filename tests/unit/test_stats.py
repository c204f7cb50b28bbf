"""Paired statistics on constructed numbers: pass@k, bootstrap intervals, pairing by seed."""

from __future__ import annotations

import math
from itertools import combinations
from typing import Any

import numpy as np
import pytest

from mrl_actors.report.stats import bootstrap_ci, mean_pass_at_k, paired_differences, pass_at_k


def test_pass_at_k_equals_the_exhaustive_count_of_k_subsets() -> None:
    """The estimator is the share of k-subsets of the n samples holding at least one success."""
    for n in (1, 4, 8):
        for c in range(n + 1):
            samples = [1] * c + [0] * (n - c)
            for k in range(1, n + 1):
                subsets = list(combinations(range(n), k))
                share = sum(any(samples[i] for i in s) for s in subsets) / len(subsets)
                assert pass_at_k(n, c, k) == pytest.approx(share)
    assert pass_at_k(8, 2, 1) == pytest.approx(0.25)  # pass@1 is the plain success rate
    assert pass_at_k(8, 1, 8) == 1.0
    assert mean_pass_at_k([0, 8, 4], 8, 1) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)


def test_bootstrap_interval_is_seeded_and_brackets_the_mean() -> None:
    x = [0.1, 0.3, -0.05, 0.2, 0.15]
    lo, hi = bootstrap_ci(x, seed=3)
    assert (lo, hi) == bootstrap_ci(x, seed=3)
    assert lo < float(np.mean(x)) < hi
    assert min(x) <= lo and hi <= max(x)
    assert bootstrap_ci([0.2, 0.2, 0.2]) == pytest.approx((0.2, 0.2))


def _summary(seed: int, **acc: float) -> dict[str, Any]:
    return {
        "run": {"seed": seed},
        "policies": {
            name: {"final": {"eval_accuracy": v, "eval_pass8": min(1.0, v + 0.2)}}
            for name, v in acc.items()
        },
    }


def test_paired_differences_pair_runs_by_seed_not_by_position() -> None:
    base = [_summary(s, a=0.1 * s, b=0.5) for s in range(5)]
    # the probe's runs come in another order; each is its seed's baseline + 0.05 on policy a
    probe = [_summary(s, a=0.1 * s + 0.05, b=0.5) for s in (4, 2, 0, 3, 1)]
    noisy = [_summary(s, a=0.1 * s + (0.1 if s % 2 else -0.1), b=0.5) for s in range(4)]
    diffs = paired_differences(
        {"independent": base, "sgt": probe, "prp": noisy}, metrics=["eval_accuracy"]
    )
    by = {(d.probe, d.policy): d for d in diffs}
    sgt_a = by["sgt", "a"]
    assert sgt_a.seeds == [0, 1, 2, 3, 4]
    assert sgt_a.diffs == pytest.approx([0.05] * 5)
    assert sgt_a.excludes_zero  # a constant +0.05 on every seed
    assert not by["sgt", "b"].excludes_zero  # exactly zero everywhere
    assert by["sgt", "average"].mean == pytest.approx(0.025)
    prp_a = by["prp", "a"]
    assert prp_a.seeds == [0, 1, 2, 3]  # seed 4 has no prp run: left out, not imputed
    assert prp_a.mean == pytest.approx(0.0)
    assert prp_a.ci_low < 0 < prp_a.ci_high and not prp_a.excludes_zero
    assert [d.policy for d in diffs if d.probe == "sgt"] == ["a", "b", "average"]
    # the across-seed spread of policy a (0.0 .. 0.4) would swamp the 0.05 without pairing
    assert math.isclose(sgt_a.ci_low, 0.05) and math.isclose(sgt_a.ci_high, 0.05)


def test_paired_differences_skip_missing_metrics_and_baselines() -> None:
    runs = [_summary(0, a=0.5)]
    assert paired_differences({"sgt": runs}) == []
    diffs = paired_differences({"independent": runs, "sgt": runs})
    assert {d.metric for d in diffs} == {"eval_accuracy", "eval_pass8"}  # no eval_pass1 logged


def test_below_three_paired_seeds_there_is_no_interval_and_no_mark() -> None:
    """One or two seeds: a bootstrap interval is degenerate (`[+d, +d]`) and would be starred;
    the difference is reported alone, and the pages say why."""
    from mrl_actors.report.stats import MIN_PAIRED_SEEDS
    from mrl_actors.report.summary import compare_markdown, paired_table

    for n in range(1, MIN_PAIRED_SEEDS):
        base = [_summary(s, a=0.5) for s in range(n)]
        probe = [_summary(s, a=0.516) for s in range(n)]
        diffs = paired_differences({"independent": base, "sgt": probe}, metrics=["eval_accuracy"])
        a = next(d for d in diffs if d.policy == "a")
        assert a.mean == pytest.approx(0.016) and a.ci_low is None and a.ci_high is None
        assert not a.excludes_zero
        paired = [d.as_dict() for d in diffs]
        _, rows = paired_table(paired, "eval_accuracy")
        assert rows[0][1] == f"+0.016 (no interval: {n} paired seed(s))" and "*" not in rows[0][1]
        md = compare_markdown({"independent": base, "sgt": probe}, list(range(n)), paired)
        assert "no interval and no * below 3 paired seeds" in md
    three = paired_differences(
        {
            "independent": [_summary(s, a=0.5) for s in range(3)],
            "sgt": [_summary(s, a=0.6) for s in range(3)],
        },
        metrics=["eval_accuracy"],
    )
    assert three[0].ci_low is not None and three[0].excludes_zero
