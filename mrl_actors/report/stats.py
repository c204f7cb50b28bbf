"""Statistics a comparison can be trusted on: unbiased pass@k and paired bootstrap intervals.

Pure functions of numbers (numpy only), so they are tested on constructed inputs.

- pass@k is Chen et al. (2021)'s unbiased estimator from n samples with c correct,
  1 - C(n - c, k) / C(n, k), averaged over test items.
- A probe is compared with the baseline run *of the same seed* (same warm start, same prompt
  order, same test items): the per-seed difference removes the variation the seed causes in
  both, which across-seed spreads (mean ± std) cannot. Its mean gets a percentile bootstrap 95%
  interval over seeds (seeded resampling, 10,000 resamples by default); an interval that
  excludes zero is marked. With 5 seeds the interval is coarse: read it as "the sign is stable
  across seeds", not as a calibrated test. Below `MIN_PAIRED_SEEDS` (3) paired seeds there is
  no interval and no mark: a bootstrap of one difference is that difference (`[+d, +d]`), of
  two it has three possible means, and either would "exclude zero" for any non-zero effect.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# (metric key in a policy's final metrics, what the report calls it)
COMPARED_METRICS: tuple[tuple[str, str], ...] = (
    ("eval_accuracy", "held-out accuracy (greedy)"),
    ("eval_pass1", "held-out pass@1"),
    ("eval_pass8", "held-out pass@8"),
)
METRIC_KEYS: tuple[str, ...] = tuple(key for key, _ in COMPARED_METRICS)
AVERAGE = "average"  # the per-seed mean over policies
MIN_PAIRED_SEEDS = 3  # fewer paired seeds: the mean difference only, no interval, no mark


def part_metric_keys(results: dict[str, list[dict[str, Any]]]) -> tuple[str, ...]:
    """The per-part metrics (`eval_accuracy_<part>`, ...) the summaries' policies end with."""
    keys = {
        key
        for runs in results.values()
        for s in runs
        for p in s.get("policies", {}).values()
        for key in p.get("final", {})
        if any(key.startswith(f"{m}_") for m in METRIC_KEYS)
    }
    return tuple(sorted(keys))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from `n` samples of which `c` were correct: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def mean_pass_at_k(correct: Sequence[int], n: int, k: int) -> float:
    """pass@k averaged over items; `correct[i]` is how many of item i's `n` samples were right."""
    if not correct:
        return 0.0
    return float(np.mean([pass_at_k(n, int(c), k) for c in correct]))


def bootstrap_ci(
    values: Sequence[float], *, resamples: int = 10_000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (seeded, so reports reproduce)."""
    x = np.asarray(values, dtype=np.float64)  # [S]
    if x.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(resamples, x.size))  # [R, S]
    means = x[idx].mean(axis=1)  # [R]
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


@dataclass(frozen=True)
class PairedDiff:
    """probe minus baseline on one metric for one policy (or the average), paired by seed."""

    probe: str
    baseline: str
    metric: str
    policy: str  # a policy name, or "average"
    seeds: list[int]
    diffs: list[float]  # [S], one per seed both runs have
    mean: float
    ci_low: float | None  # None below MIN_PAIRED_SEEDS paired seeds
    ci_high: float | None

    @property
    def excludes_zero(self) -> bool:
        if self.ci_low is None or self.ci_high is None:
            return False
        return self.ci_low > 0.0 or self.ci_high < 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "excludes_zero": self.excludes_zero}


def _per_seed(runs: Sequence[dict[str, Any]], metric: str) -> dict[int, dict[str, float]]:
    """seed -> {policy: final value of `metric`, "average": their mean} for each run."""
    out: dict[int, dict[str, float]] = {}
    for s in runs:
        seed = s.get("run", {}).get("seed")
        if seed is None:
            continue
        vals = {
            name: float(p["final"][metric])
            for name, p in s.get("policies", {}).items()
            if p.get("final", {}).get(metric) is not None
        }
        if vals:
            vals[AVERAGE] = float(np.mean(list(vals.values())))
            out[int(seed)] = vals
    return out


def paired_differences(
    results: dict[str, list[dict[str, Any]]],
    *,
    baseline: str = "independent",
    metrics: Sequence[str] = METRIC_KEYS,
    resamples: int = 10_000,
    seed: int = 0,
) -> list[PairedDiff]:
    """Every probe against `baseline`, per metric and policy, on the seeds both ran.

    `results` maps a probe to its run summaries (`report.summarize`), one per seed; a summary's
    `run.seed` pairs it. Metrics or seeds missing on either side are left out, not imputed.
    """
    if baseline not in results:
        return []
    out = []
    for metric in metrics:
        base = _per_seed(results[baseline], metric)
        for probe, runs in results.items():
            if probe == baseline:
                continue
            mine = _per_seed(runs, metric)
            seeds = sorted(set(base) & set(mine))
            names = sorted({n for s in seeds for n in mine[s] if n in base[s]}, key=_avg_last)
            for name in names:
                pairs = [s for s in seeds if name in mine[s] and name in base[s]]
                diffs = [mine[s][name] - base[s][name] for s in pairs]
                if not diffs:
                    continue
                lo: float | None = None
                hi: float | None = None
                if len(diffs) >= MIN_PAIRED_SEEDS:
                    lo, hi = bootstrap_ci(diffs, resamples=resamples, seed=seed)
                out.append(
                    PairedDiff(
                        probe=probe,
                        baseline=baseline,
                        metric=metric,
                        policy=name,
                        seeds=pairs,
                        diffs=diffs,
                        mean=float(np.mean(diffs)),
                        ci_low=lo,
                        ci_high=hi,
                    )
                )
    return out


def _avg_last(name: str) -> tuple[bool, str]:
    return name == AVERAGE, name
