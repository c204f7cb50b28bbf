"""The curves and links of compare.html: each probe's learning curves over its seeds.

For every policy and metric (held-out accuracy, training reward), one plot with a line per probe:
the mean over that probe's seeds at each step, and a band from the lowest to the highest seed
(with one seed, the line alone). Steps where only some seeds have a value (a run still going)
are averaged over the seeds that have one. Each probe and seed links to its sub-run's report
(`<probe>-s<seed>/report.html`, relative, so the directory can be moved or served as it is).
"""

from __future__ import annotations

import html
from collections import defaultdict
from typing import Any

from mrl_actors.report.run_page import inline_svg

# (series key, title) of the curves compared across probes
CURVES: tuple[tuple[str, str], ...] = (
    ("eval_accuracy", "Held-out accuracy (greedy)"),
    ("reward_mean", "Training reward (own samples)"),
)


def curve_points(
    runs: list[dict[str, Any]], policy: str, key: str
) -> list[tuple[int, float, float, float]]:
    """(step, mean, low, high) over the runs' series `key` of `policy`."""
    by_step: dict[int, list[float]] = defaultdict(list)
    for s in runs:
        for step, value in s.get("policies", {}).get(policy, {}).get("series", {}).get(key, []):
            by_step[int(step)].append(float(value))
    return [
        (step, sum(vs) / len(vs), min(vs), max(vs)) for step, vs in sorted(by_step.items()) if vs
    ]


def curves_html(results: dict[str, list[dict[str, Any]]]) -> str:
    names = sorted({n for runs in results.values() for s in runs for n in s.get("policies", {})})
    figures = []
    for name in names:
        for key, title in CURVES:
            lines = {probe: curve_points(runs, name, key) for probe, runs in results.items()}
            if any(lines.values()):
                svg = _band_plot(f"{name}: {title}", lines)
                figures.append(
                    f'<figure data-policy="{html.escape(name)}" data-metric="{key}">{svg}</figure>'
                )
    return "".join(figures) or "<p>No learner steps in these runs.</p>"


def links_html(results: dict[str, list[dict[str, Any]]]) -> str:
    items = []
    for probe, runs in results.items():
        seeds = sorted(
            int(s["run"]["seed"]) for s in runs if s.get("run", {}).get("seed") is not None
        )
        cells = " ".join(
            f'<a href="{html.escape(probe)}-s{seed}/report.html">seed {seed}</a>' for seed in seeds
        )
        items.append(f"<li>{html.escape(probe)}: {cells}</li>")
    return f'<ul class="runs">{"".join(items)}</ul>'


def _band_plot(title: str, lines: dict[str, list[tuple[int, float, float, float]]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.0), dpi=100)
    for probe, pts in lines.items():
        if not pts:
            continue
        steps = [p[0] for p in pts]
        (line,) = ax.plot(steps, [p[1] for p in pts], marker="o", ms=3, label=probe)
        if any(p[2] != p[3] for p in pts):
            ax.fill_between(
                steps,
                [p[2] for p in pts],
                [p[3] for p in pts],
                alpha=0.2,
                color=line.get_color(),
                linewidth=0,
            )
    return inline_svg(fig, ax, title)
