"""How much a spec's warm starts vary across seeds: held-out accuracy at step 0, per policy.

    python tools/warmstart_spread.py runtime/experiments/symmetric.toml --seeds 0,1,2,3,4 \
        --fixed-steps 800

For each seed and policy it builds the warm-started tiny model the run would start from (cached
like a run's, so a later `mrl run` reuses it) and measures greedy accuracy, pass@1 and pass@8 on
the run's held-out items. With `--fixed-steps N` it also builds the same policies with the old
fixed-length warm start of N steps, side by side, seed by seed. Prints one row per seed and a
mean ± std / min-max row per variant; `--json` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np


def _fixed(spec: Any, steps: int) -> Any:
    """The spec with every tiny policy warm-started for exactly `steps` steps, on all parts."""
    policies = [
        p
        if p.tiny is None
        else msgspec.structs.replace(
            p,
            tiny=msgspec.structs.replace(
                p.tiny, warm_start_steps=steps, warm_start_target=None, warm_start_patience=0
            ),
        )
        for p in spec.policies
    ]
    return msgspec.structs.replace(spec, policies=policies)


def main() -> int:
    from mrl_actors.actors.runtime import build_runtime
    from mrl_actors.run.node import set_threads
    from mrl_actors.spec import load_spec
    from mrl_actors.tasks import make_task

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--fixed-steps", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    base, _ = load_spec(args.spec)
    set_threads(base)
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = {"spec": base}
    if args.fixed_steps:
        variants = {f"fixed {args.fixed_steps}": _fixed(base, args.fixed_steps), **variants}
    task = make_task(base.task)
    items = task.test_items()[: base.run.eval_size]
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        for variant, spec in variants.items():
            spec = spec.with_probe(spec.run.probe, seed=seed)
            for policy in spec.policies:
                t0 = time.perf_counter()
                rt = build_runtime(spec, policy, task)
                built = time.perf_counter() - t0
                row = {"variant": variant, "seed": seed, "policy": policy.name}
                row.update(rt.start_metrics())
                row.update(rt.evaluate(items))
                row["seconds"] = built
                rows.append(row)
                print(
                    f"{variant:<10} seed {seed} {policy.name:<8} "
                    f"steps {row.get('warm_start_steps', float('nan')):>6.0f} "
                    f"train {row.get('warm_start_train_accuracy', float('nan')):.3f} "
                    f"held-out {row['eval_accuracy']:.3f} pass@1 {row['eval_pass1']:.3f} "
                    f"({built:.0f} s)",
                    flush=True,
                )
    print()
    print(f"{'variant':<10} {'policy':<8} {'held-out acc. mean ± std':>26} {'min-max':>14}")
    for variant in variants:
        for policy in base.policies:
            acc = [
                r["eval_accuracy"]
                for r in rows
                if r["variant"] == variant and r["policy"] == policy.name
            ]
            std = float(np.std(acc, ddof=1)) if len(acc) > 1 else 0.0
            print(
                f"{variant:<10} {policy.name:<8} {np.mean(acc):>17.3f} ± {std:.3f} "
                f"{min(acc):>6.3f}-{max(acc):.3f}"
            )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
