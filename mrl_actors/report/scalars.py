"""The scalars one learner step adds to a policy's curves, as every view of a run reads them.

A `LearnerStepCompleted` carries its metrics by name (loss, reward mean, success rate, KL,
entropy, grad norm, clip fraction, completion length, step time, eval accuracy when measured,
...). Its first step also carries the evaluation made before any learning, as `<key>_initial`:
that is step 0 of the same curve, not a curve of its own. And throughput is derived: the tokens
the step trained on over its step time.

`step_scalars(step, metrics)` says that once, for the report's series (`summary.summarize`),
TensorBoard (`tensorboard.StepScalars`), the tracking backends (`reporters`) and the
Prometheus gauges (`metrics`, through `latest`), so no view draws a curve another does not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

INITIAL = "_initial"  # suffix of the metrics measured before the first step


def step_scalars(step: int, metrics: Mapping[str, float]) -> list[tuple[int, dict[str, float]]]:
    """`[(0, before-learning values), (step, this step's values)]`, each only when it has a
    value; finite values only, and `tokens_per_s` (tokens / step_time_s) when both are there."""
    initial: dict[str, float] = {}
    now: dict[str, float] = {}
    for key, value in metrics.items():
        if not math.isfinite(value):
            continue
        if key.endswith(INITIAL):
            initial[key.removesuffix(INITIAL)] = float(value)
        else:
            now[key] = float(value)
    rate = tokens_per_s(metrics)
    if rate is not None:
        now["tokens_per_s"] = rate
    return [(at, values) for at, values in ((0, initial), (step, now)) if values]


def tokens_per_s(metrics: Mapping[str, float]) -> float | None:
    """Trained tokens per second of the step, or None without both figures."""
    tokens, seconds = metrics.get("tokens"), metrics.get("step_time_s")
    if tokens is None or not seconds or seconds <= 0:
        return None
    rate = tokens / seconds
    return rate if math.isfinite(rate) else None


def latest(metrics: Mapping[str, float]) -> dict[str, float]:
    """Each scalar's last value after the step: this step's, else the step-0 one."""
    out: dict[str, float] = {}
    for _, values in step_scalars(1, metrics):
        out.update(values)
    return out
