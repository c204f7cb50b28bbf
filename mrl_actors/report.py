"""A run's summary and its HTML report, computed from the log alone.

If it is not in the log it did not happen: the summary is a pure fold over a run's events (the
learner steps carry their metrics, the rollouts their rewards), so a report can be rebuilt at any
time from the store, for a live run or for one finished long ago.

`summarize(events)` -> a JSON-ready dict (what `summary.json` holds); `render_html(summary)` -> a
self-contained page with inline SVG plots (matplotlib, no scripts, no network).
"""

from __future__ import annotations

import html
import io
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from mrl_actors.events import (
    Event,
    LearnerStepCompleted,
    PolicyRegistered,
    RunFinished,
    RunStarted,
)

# Metrics plotted per policy over steps: (key in LearnerStepCompleted.metrics, title).
_PLOTS: tuple[tuple[str, str], ...] = (
    ("eval_accuracy", "Eval accuracy (greedy)"),
    ("eval_pass1", "Eval pass@1 (4 samples at the training temperature)"),
    ("reward_mean", "Training reward (own samples)"),
    ("is_off_ess", "Peer-sample token ratios π/μ: ESS share"),
    ("is_off_max", "Peer-sample token ratios π/μ: max"),
    ("thl_exact_share", "THL: share of transfers byte-exact"),
    ("thl_one_to_one_share", "THL: receiver tokens in 1:1 spans"),
    ("thl_nm_byte_share", "THL: bytes in n:m spans"),
    ("peer_events_used", "Peer events used per step"),
)


def summarize(events: Iterable[Event]) -> dict[str, Any]:
    """Fold a run's events into the summary the report and `--compare` read.

    Like the actors' fold, a policy's registration or learner step counts only from that
    policy's own subject (`policy == source`); anything else is left out of the summary.
    """
    run: dict[str, Any] = {}
    policies: dict[str, dict[str, Any]] = {}
    series: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    counts: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    for ev in events:
        counts[ev.KIND] += 1
        sources[f"{ev.KIND}/{ev.source}"] += 1
        if isinstance(ev, RunStarted):
            run.update(name=ev.run, seed=ev.seed, code_version=ev.code_version, probes=ev.probes)
        elif isinstance(ev, PolicyRegistered | LearnerStepCompleted) and ev.policy != ev.source:
            continue
        elif isinstance(ev, PolicyRegistered):
            policies[ev.policy] = {
                "family": ev.family,
                "model_path": ev.model_path,
                "probe": ev.probe,
                "tokenizer_fingerprint": ev.tokenizer_fingerprint,
                "options": ev.options,
            }
        elif isinstance(ev, LearnerStepCompleted):
            for key, value in ev.metrics.items():
                if not math.isfinite(value):
                    continue
                if key.endswith("_initial"):  # measured before the first step
                    series[ev.policy][key.removesuffix("_initial")].insert(0, (0, value))
                else:
                    series[ev.policy][key].append((ev.step, value))
        elif isinstance(ev, RunFinished):
            run.update(status=ev.status, **{k: v for k, v in ev.summary.items() if k != "status"})
    for name, per_key in series.items():
        entry = policies.setdefault(name, {})
        steps = per_key.get("reward_mean", [])
        entry["steps"] = max((s for s, _ in steps), default=0)
        entry["final"] = {key: pts[-1][1] for key, pts in per_key.items() if pts}
        acc = per_key.get("eval_accuracy", [])
        entry["initial_accuracy"] = acc[0][1] if acc else None
        entry["final_accuracy"] = acc[-1][1] if acc else None
        pass1 = per_key.get("eval_pass1", [])
        entry["initial_pass1"] = pass1[0][1] if pass1 else None
        entry["final_pass1"] = pass1[-1][1] if pass1 else None
        entry["series"] = {key: pts for key, pts in per_key.items()}
        entry["totals"] = {
            key: float(sum(v for _, v in per_key.get(key, [])))
            for key in (
                "peer_events_offered",
                "peer_events_used",
                "dropped_stale",
                "dropped_budget",
            )
        }
    finals = [p["final_accuracy"] for p in policies.values() if p.get("final_accuracy") is not None]
    run["average_final_accuracy"] = sum(finals) / len(finals) if finals else None
    return {
        "run": run,
        "policies": policies,
        "events": dict(sorted(counts.items())),
        "events_by_source": dict(sorted(sources.items())),
    }


def _svg_plot(title: str, per_policy: dict[str, Sequence[tuple[int, float]]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.0), dpi=100)
    for name, pts in sorted(per_policy.items()):
        if pts:
            ax.plot([s for s, _ in pts], [v for _, v in pts], marker="o", ms=3, label=name)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("learner step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg") :]  # drop the XML prolog: the SVG is inlined into HTML


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def render_html(summary: dict[str, Any]) -> str:
    """A self-contained HTML page: run facts, per-policy table, plots, event counts."""
    run, policies = summary["run"], summary["policies"]
    title = f"mrl-actors run {run.get('name', '?')}"
    facts = _table(
        ["run", "probe(s)", "seed", "status", "code", "average final accuracy"],
        [
            [
                run.get("name"),
                ", ".join(run.get("probes", [])),
                run.get("seed"),
                run.get("status", "running"),
                run.get("code_version"),
                run.get("average_final_accuracy"),
            ]
        ],
    )
    per_policy = _table(
        [
            "policy",
            "family",
            "probe",
            "steps",
            "initial acc.",
            "final acc.",
            "final reward",
            "peer events used / offered",
            "dropped stale",
            "dropped by THL budget",
        ],
        [
            [
                name,
                p.get("family"),
                p.get("probe"),
                p.get("steps"),
                p.get("initial_accuracy"),
                p.get("final_accuracy"),
                p.get("initial_pass1"),
                p.get("final_pass1"),
                p.get("final", {}).get("reward_mean"),
                f"{int(p.get('totals', {}).get('peer_events_used', 0))} / "
                f"{int(p.get('totals', {}).get('peer_events_offered', 0))}",
                int(p.get("totals", {}).get("dropped_stale", 0)),
                int(p.get("totals", {}).get("dropped_budget", 0)),
            ]
            for name, p in sorted(policies.items())
        ],
    )
    plots = []
    for key, plot_title in _PLOTS:
        data = {n: p.get("series", {}).get(key, []) for n, p in policies.items()}
        if any(data.values()):
            plots.append(f"<figure>{_svg_plot(plot_title, data)}</figure>")
    events = _table(["event kind", "count"], sorted(summary["events"].items()))
    by_source = _table(["kind/source", "count"], sorted(summary["events_by_source"].items()))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
th {{ background: #f3f3f3; }}
figure {{ display: inline-block; margin: 0.5em; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
{facts}
<h2>Policies</h2>
{per_policy}
<h2>Over training</h2>
{"".join(plots) or "<p>No learner steps yet.</p>"}
<h2>Events exchanged</h2>
{events}
<details><summary>By source</summary>{by_source}</details>
</body></html>
"""


def compare_table(
    results: dict[str, list[dict[str, Any]]], metric: str = "final_accuracy"
) -> tuple[list[str], list[list[str]]]:
    """The paper-style table: a final metric per policy per probe, mean ± std over seeds.

    `results` maps a probe to the summaries of its runs (one per seed); `metric` is a per-policy
    summary key (`final_accuracy`, `final_pass1`). "average" is the mean over policies, per seed.
    """
    names = sorted({n for runs in results.values() for s in runs for n in s["policies"]})
    header = ["probe", *names, "average", "seeds"]
    rows = []
    for probe, runs in results.items():
        per_name = {n: [s["policies"].get(n, {}).get(metric) for s in runs] for n in names}
        averages = []
        for s in runs:
            vals = [s["policies"][n].get(metric) for n in names if n in s["policies"]]
            vals = [v for v in vals if v is not None]
            if vals:
                averages.append(sum(vals) / len(vals))
        row = [probe]
        row += [_mean_std([v for v in per_name[n] if v is not None]) for n in names]
        row += [_mean_std(averages), str(len(runs))]
        rows.append(row)
    return header, rows


def _mean_std(values: Sequence[float]) -> str:
    if not values:
        return "–"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.3f}"
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{mean:.3f} ± {std:.3f}"
