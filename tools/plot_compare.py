"""Plot a `mrl run --compare` result: eval accuracy and pass@1 over steps, per policy and probe.

    python tools/plot_compare.py runs/toy-pair-compare/compare.json --out docs/toy-pair-compare.png

Lines are the mean over seeds, bands the min-max over seeds. Prints the table of final values
(mean ± std over seeds) that the plot ends on. The paired differences against independent, with
their bootstrap intervals, are in the comparison's compare.md (and compare_paired.json).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def _curves(
    runs: list[dict[str, Any]], policy: str, key: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """steps [S] and values [seeds, S] of `key` for `policy`, on the steps every seed has."""
    series = [dict(map(tuple, r["policies"][policy]["series"].get(key, []))) for r in runs]
    steps = sorted(set.intersection(*(set(s) for s in series))) if series else []
    if not steps:
        return None
    return np.array(steps), np.array([[s[t] for t in steps] for s in series])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("compare_json", type=Path)
    parser.add_argument("--out", type=Path, default=Path("compare.png"))
    args = parser.parse_args()
    results: dict[str, list[dict[str, Any]]] = json.loads(args.compare_json.read_text())

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = sorted({p for runs in results.values() for r in runs for p in r["policies"]})
    metrics = (
        ("eval_accuracy", "held-out accuracy (greedy)"),
        ("eval_pass1", "held-out pass@1 (sampled)"),
        ("eval_pass8", "held-out pass@8 (sampled)"),
    )
    logged = {k for runs in results.values() for r in runs for p in r["policies"].values()
              for k in p.get("series", {})}  # fmt: skip
    metrics = tuple(m for m in metrics if m[0] in logged)  # runs before pass@8 have no pass@8
    fig, axes = plt.subplots(
        len(metrics), len(policies), figsize=(5 * len(policies), 3.4 * len(metrics)), squeeze=False
    )
    print(f"{'probe':<12} {'policy':<8} {'metric':<14} {'start':>14} {'final':>14}")
    for row, (key, label) in enumerate(metrics):
        for col, policy in enumerate(policies):
            ax = axes[row][col]
            for probe, runs in results.items():
                got = _curves(runs, policy, key)
                if got is None:
                    continue
                steps, values = got  # [S], [seeds, S]
                ax.plot(steps, values.mean(0), marker="o", ms=3, label=probe)
                ax.fill_between(steps, values.min(0), values.max(0), alpha=0.15)
                start, final = values[:, 0], values[:, -1]
                print(
                    f"{probe:<12} {policy:<8} {key:<14} "
                    f"{start.mean():>7.3f} ± {start.std(ddof=1) if len(start) > 1 else 0:.3f} "
                    f"{final.mean():>7.3f} ± {final.std(ddof=1) if len(final) > 1 else 0:.3f}"
                )
            seeds = len(next(iter(results.values())))
            ax.set_title(f"{policy}: {label}, {seeds} seeds", fontsize=10)
            ax.set_xlabel("learner step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
