"""Tables of a scenario's comparison, with counterfactual replays of its independent runs.

    python tools/results.py runs/complementary [runs/symmetric ...] --counterfactual sgt,prp \
        --out runs/results.md

Each argument is the output directory of `mrl run SPEC --compare` (its `compare.json` and the
sub-run directories `<probe>-s<seed>/`). For each it prints, as markdown:

- the start of RL: held-out accuracy at step 0 per policy over seeds (mean ± std, min-max) and
  where each warm start stopped;
- final held-out accuracy, pass@1 and pass@8 per probe and policy (mean ± std over seeds), and
  per task part when the task has parts;
- each probe minus independent, paired by seed, mean [bootstrap 95% interval] (`*`: the
  interval excludes 0), for the same metrics and parts;
- with `--counterfactual`, for every independent run: the same logged experience through each
  named probe's update rule (`mrl_actors.run.counterfactual`, what `mrl replay --probe` does;
  its `counterfactual-<probe>.json` is reused when already in the run directory), beside what
  that probe did when it was run: held-out accuracy (and per part), paired by seed against the
  independent run, and the L2 distance of the final weights from the logged ones.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mrl_actors.report.stats import (
    AVERAGE,
    METRIC_KEYS,
    bootstrap_ci,
    paired_differences,
    part_metric_keys,
)

TITLES = {"eval_accuracy": "accuracy", "eval_pass1": "pass@1", "eval_pass8": "pass@8"}


def _mean_std(values: Sequence[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def _interval(diffs: Sequence[float]) -> str:
    if not diffs:
        return "–"
    lo, hi = bootstrap_ci(diffs)
    mark = " *" if lo > 0 or hi < 0 else ""
    return f"{np.mean(diffs):+.3f} [{lo:+.3f}, {hi:+.3f}]{mark}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return [*out, ""]


def _metric_name(key: str) -> tuple[str, str]:
    """("accuracy", "sub") from "eval_accuracy_sub"; the part is "all" for the whole task."""
    for base, title in TITLES.items():
        if key == base:
            return title, "all"
        if key.startswith(base + "_"):
            return title, key.removeprefix(base + "_")
    return key, "all"


def _final(run: dict[str, Any], policy: str, key: str) -> float | None:
    v = run["policies"].get(policy, {}).get("final", {}).get(key)
    return None if v is None else float(v)


def start_section(results: dict[str, list[dict[str, Any]]], names: list[str]) -> list[str]:
    """Step-0 held-out accuracy per policy and where the warm starts stopped (independent runs:
    every probe of a seed starts from the same warm start)."""
    runs = results.get("independent") or next(iter(results.values()))
    rows = []
    for n in names:
        acc = [r["policies"][n]["initial_accuracy"] for r in runs if n in r["policies"]]
        acc = [a for a in acc if a is not None]
        warm = [r["policies"][n].get("warm_start", {}) for r in runs if n in r["policies"]]
        steps = [int(w["steps"]) for w in warm if "steps" in w]
        train = [w["train_accuracy"] for w in warm if "train_accuracy" in w]
        stops = [
            "target" if w.get("reached_target") else "plateau" if w.get("plateaued") else "cap"
            for w in warm
            if "steps" in w
        ]
        rows.append(
            [
                n,
                _mean_std(acc),
                f"{min(acc):.3f}–{max(acc):.3f}" if acc else "–",
                " ".join(str(s) for s in steps) or "–",
                ", ".join(f"{s}" for s in stops) or "–",
                _mean_std(train),
            ]
        )
    header = [
        "policy",
        "held-out acc. at step 0",
        "min–max",
        "warm-start steps (by seed)",
        "stopped on",
        "train acc. at stop",
    ]
    return _table(header, rows)


def finals_section(
    results: dict[str, list[dict[str, Any]]], names: list[str], keys: Sequence[str]
) -> list[str]:
    """Final value of each metric per probe and policy, mean ± std over seeds."""
    lines: list[str] = []
    for key in keys:
        title, part = _metric_name(key)
        header = ["probe", *names, AVERAGE]
        rows = []
        for probe, runs in results.items():
            cells = []
            for n in names:
                cells.append(_mean_std([v for r in runs if (v := _final(r, n, key)) is not None]))
            avg = []
            for r in runs:
                vals = [v for n in names if (v := _final(r, n, key)) is not None]
                if vals:
                    avg.append(float(np.mean(vals)))
            rows.append([probe, *cells, _mean_std(avg)])
        lines += [f"Final held-out {title}, part: {part}, mean ± std over seeds:", ""]
        lines += _table(header, rows)
    return lines


def paired_section(
    results: dict[str, list[dict[str, Any]]], names: list[str], keys: Sequence[str]
) -> list[str]:
    """Each probe minus independent on the same seed, per metric and part."""
    paired = paired_differences(results, metrics=keys)
    header = ["probe − independent", "metric", "part", *names, AVERAGE, "seeds"]
    rows = []
    for d_key in keys:
        title, part = _metric_name(d_key)
        for probe in results:
            cells = {d.policy: d for d in paired if d.metric == d_key and d.probe == probe}
            if not cells:
                continue
            row = [probe, title, part]
            for n in [*names, AVERAGE]:
                d = cells.get(n)
                row.append("–" if d is None else _interval(d.diffs))
            row.append(str(len(next(iter(cells.values())).seeds)))
            rows.append(row)
    return _table(header, rows)


def counterfactual_page(run_dir: Path, probe: str) -> dict[str, Any]:
    """`counterfactual-<probe>.json` of `run_dir`, computed (and written) when missing."""
    path = run_dir / f"counterfactual-{probe}.json"
    if path.exists():
        page: dict[str, Any] = json.loads(path.read_text())
        return page
    import anyio

    from mrl_actors.run.counterfactual import counterfactual
    from mrl_actors.run.node import set_threads
    from mrl_actors.run.runner import resume_spec
    from mrl_actors.see.access import open_log

    spec, _ = resume_spec(run_dir)
    set_threads(spec)

    async def go() -> list[dict[str, Any]]:
        async with open_log(run=spec.run.name, run_dir=run_dir) as log:
            return [
                await counterfactual(log, spec, run_dir, p, probe)  # type: ignore[arg-type]
                for p in spec.policies
            ]

    page = {"run": spec.run.name, "probe": probe, "policies": anyio.run(go)}
    path.write_text(json.dumps(page, indent=2), encoding="utf-8")
    return page


def counterfactual_section(
    out_dir: Path,
    results: dict[str, list[dict[str, Any]]],
    names: list[str],
    probes: Sequence[str],
    keys: Sequence[str],
) -> list[str]:
    """For each probe: the independent runs' experience through it (replayed) beside the
    probe's own runs, both paired by seed against the independent runs."""
    live = {p: {r["run"]["seed"]: r for r in runs} for p, runs in results.items()}
    base = live.get("independent", {})
    acc_keys = [k for k in keys if _metric_name(k)[0] == "accuracy"]
    header = ["probe", "policy", "part", "independent", "replayed under probe", "replayed − ind.",
              "run under probe", "run − ind.", "weight distance"]  # fmt: skip
    rows = []
    for probe in probes:
        pages = {
            seed: counterfactual_page(out_dir / f"independent-s{seed}", probe) for seed in base
        }
        for n in names:
            for key in acc_keys:
                _, part = _metric_name(key)
                ind, cf, run, dist, d_cf, d_run = [], [], [], [], [], []
                for seed, page in sorted(pages.items()):
                    r = next((x for x in page["policies"] if x["policy"] == n), None)
                    if r is None or key not in r["final"]["counterfactual"]:
                        continue
                    lv, cv = r["final"]["logged"][key], r["final"]["counterfactual"][key]
                    ind.append(lv)
                    cf.append(cv)
                    d_cf.append(cv - lv)
                    if key == "eval_accuracy" and r["steps"]:
                        dist.append(r["steps"][-1]["distance"])
                    other = live.get(probe, {}).get(seed)
                    if other is not None and (v := _final(other, n, key)) is not None:
                        run.append(v)
                        d_run.append(v - lv)
                if not ind:
                    continue
                rows.append(
                    [
                        probe,
                        n,
                        part,
                        _mean_std(ind),
                        _mean_std(cf),
                        _interval(d_cf),
                        _mean_std(run),
                        _interval(d_run),
                        _mean_std(dist) if dist else "",
                    ]
                )
    return _table(header, rows)


def load_results(out_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """probe -> the summaries of its finished sub-runs (`<probe>-s<seed>/summary.json`), by seed.

    Read from the sub-runs rather than `compare.json`, so a grid run a few seeds at a time
    (`mrl run --compare --seeds 3 --out DIR`, again and again) is tabled whole.
    """
    results: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(out_dir.glob("*-s*/summary.json")):
        s = json.loads(path.read_text())
        if s.get("run", {}).get("status") != "completed":
            continue  # a sub-run stopped or still running
        results.setdefault(s["run"]["probe"], []).append(s)
    order = ["independent", "prp", "xgrpo", "sgt"]
    for runs in results.values():
        runs.sort(key=lambda r: r["run"]["seed"])
    return {p: results[p] for p in sorted(results, key=lambda p: [*order, p].index(p))}


def scenario(out_dir: Path, counterfactuals: Sequence[str]) -> list[str]:
    results = load_results(out_dir)
    names = sorted({n for runs in results.values() for r in runs for n in r["policies"]})
    seeds = sorted({r["run"]["seed"] for runs in results.values() for r in runs})
    keys = (*METRIC_KEYS, *part_metric_keys(results))
    # the schedule the runs used (`RunStarted.mode`): lockstep runs are bitwise reproducible
    modes = sorted(
        {r["run"].get("spec", {}).get("mode", "?") for rs in results.values() for r in rs}
    )
    mode = f"; mode {', '.join(modes)}"
    lines = [f"## {out_dir.name}", "", f"Seeds {seeds}; probes {list(results)}{mode}.", ""]
    lines += ["Start of RL:", "", *start_section(results, names)]
    lines += finals_section(results, names, keys)
    lines += ["Paired by seed, mean [bootstrap 95% interval]; * = interval excludes 0:", ""]
    lines += paired_section(results, names, keys)
    if counterfactuals and "independent" in results:
        lines += [
            "Counterfactual replay of the independent runs (same experience, other update rule), "
            "beside the probe's own runs; differences paired by seed against the independent "
            "run's final accuracy:",
            "",
        ]
        lines += counterfactual_section(out_dir, results, names, counterfactuals, keys)
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("compare_dirs", type=Path, nargs="+", help="`mrl run --compare` outputs")
    parser.add_argument("--counterfactual", default="", help="probes to replay, e.g. sgt,prp")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    args = parser.parse_args()
    probes = [p for p in args.counterfactual.split(",") if p]
    lines: list[str] = []
    for d in args.compare_dirs:
        lines += scenario(d, probes)
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
