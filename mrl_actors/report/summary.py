"""A run's summary and its HTML report, computed from the log alone.

If it is not in the log it did not happen: the summary is a pure fold over a run's events (the
learner steps carry their metrics, the rollouts their rewards), so a report can be rebuilt at any
time from the store, for a live run or for one finished long ago.

`summarize(events)` -> a JSON-ready dict (what `summary.json` holds); `render_html(summary)` -> a
self-contained page with inline SVG plots (matplotlib, no scripts, no network).
"""

from __future__ import annotations

import html
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
    identity_error,
)
from mrl_actors.report.run_page import headline, inline_svg, run_spec, spec_rows, system_rows
from mrl_actors.report.scalars import step_scalars
from mrl_actors.report.slots import SlotFold, slot_title
from mrl_actors.report.stats import COMPARED_METRICS, MIN_PAIRED_SEEDS

# What every report plots for each policy, whatever the run: accuracy and reward, the learner's
# loss, KL, entropy, grad norm, clip fraction, completion length, step time and throughput (the
# tests and tools/screenshot_reports.py check a rendered report against this list).
LEARNING_PLOTS = (
    "eval_accuracy",
    "reward_mean",
    "success_rate",
    "loss",
    "kl",
    "entropy",
    "grad_norm",
    "clip_region",
    "completion_length",
    "step_time_s",
    "tokens_per_s",
)
# Metrics plotted per policy over steps: (key in LearnerStepCompleted.metrics, title).
_PLOTS: tuple[tuple[str, str], ...] = (
    ("eval_accuracy", "Eval accuracy (greedy)"),
    ("eval_pass1", "Eval pass@1 (unbiased, 8 samples at the training temperature)"),
    ("eval_pass8", "Eval pass@8 (unbiased, 8 samples at the training temperature)"),
    ("reward_mean", "Training reward (own samples)"),
    ("success_rate", "Success rate (own samples)"),
    ("loss", "Loss"),
    ("kl", "KL to the reference (per token)"),
    ("entropy", "Entropy (per token)"),
    ("grad_norm", "Gradient norm (before clipping)"),
    ("clip_region", "Clip fraction (tokens)"),
    ("completion_length", "Completion length (tokens, mean)"),
    ("step_time_s", "Step time (s)"),
    ("tokens_per_s", "Throughput: trained tokens/s"),
    ("rollout_wait_s", "Rollout wait per step (s)"),
    ("staleness_mean", "Staleness of what was learned (versions)"),
    ("is_off_ess", "Peer-sample token ratios π/μ: ESS share"),
    ("is_off_max", "Peer-sample token ratios π/μ: max"),
    ("thl_exact_share", "THL: share of transfers byte-exact"),
    ("thl_one_to_one_share", "THL: receiver tokens in 1:1 spans"),
    ("thl_nm_byte_share", "THL: bytes in n:m spans"),
    ("peer_events_used", "Peer events used per step"),
)


def _page_head(title: str) -> str:
    """The start of every report page: its title, the shared style, its heading."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
th {{ background: #f3f3f3; }}
figure {{ display: inline-block; margin: 0.5em; }}
ul.headline {{ font-size: 1.1em; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
"""


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
    slots = SlotFold()
    for ev in events:
        if identity_error(ev) is not None:  # a payload naming another writer: left out
            continue
        counts[ev.KIND] += 1
        sources[f"{ev.KIND}/{ev.source}"] += 1
        slots.fold(ev)
        if isinstance(ev, RunStarted):
            run.update(name=ev.run, seed=ev.seed, code_version=ev.code_version, probes=ev.probes)
            run.update(spec_toml=ev.spec_toml, spec=run_spec(ev.spec_toml, ev.run_mode))
        elif isinstance(ev, PolicyRegistered | LearnerStepCompleted) and ev.policy != ev.source:
            continue
        elif isinstance(ev, PolicyRegistered) and ev.policy not in policies:  # the first one
            policies[ev.policy] = {
                "family": ev.family,
                "model_path": ev.model_path,
                "probe": ev.probe,
                "tokenizer_fingerprint": ev.tokenizer_fingerprint,
                "options": ev.options,
            }
        elif isinstance(ev, LearnerStepCompleted):
            for at, values in step_scalars(ev.step, ev.metrics):
                for key, value in values.items():
                    pts = series[ev.policy][key]
                    if at == 0:  # measured before the first step: first on its curve
                        pts.insert(0, (0, value))
                    else:
                        pts.append((at, value))
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
        entry["warm_start"] = {
            k.removeprefix("warm_start_"): v
            for k, v in entry["final"].items()
            if k.startswith("warm_start_")
        }
        entry["parts"] = _parts(per_key)
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
    system = run.get("spec", {})
    where = slots.view(system.get("mode", "?"), system.get("rollout_replicas", 1), list(policies))
    return {
        "run": run,
        "policies": policies,
        "slots": where,
        "events": dict(sorted(counts.items())),
        "events_by_source": dict(sorted(sources.items())),
    }


def _parts(per_key: dict[str, list[tuple[int, float]]]) -> dict[str, dict[str, float | None]]:
    """Per task part (`eval_accuracy_<part>`): held-out accuracy at the start and the end, and
    the final pass@1 and pass@8; empty for a task without parts."""
    out: dict[str, dict[str, float | None]] = {}
    for key, pts in sorted(per_key.items()):
        if not key.startswith("eval_accuracy_") or not pts:
            continue
        part = key.removeprefix("eval_accuracy_")
        out[part] = {
            "initial_accuracy": pts[0][1],
            "final_accuracy": pts[-1][1],
            "final_pass1": _last(per_key.get(f"eval_pass1_{part}")),
            "final_pass8": _last(per_key.get(f"eval_pass8_{part}")),
        }
    return out


def _last(pts: list[tuple[int, float]] | None) -> float | None:
    return pts[-1][1] if pts else None


def _svg_plot(title: str, per_policy: dict[str, Sequence[tuple[int, float]]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.0), dpi=100)
    for name, pts in sorted(per_policy.items()):
        if pts:
            ax.plot([s for s, _ in pts], [v for _, v in pts], marker="o", ms=3, label=name)
    return inline_svg(fig, ax, title)


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


def policy_table(policies: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[object]]]:
    """The per-policy table: one header per cell, in the same order (a test holds them equal)."""
    columns: list[tuple[str, Any]] = [
        ("family", lambda p: p.get("family")),
        ("probe", lambda p: p.get("probe")),
        ("steps", lambda p: p.get("steps")),
        ("initial acc.", lambda p: p.get("initial_accuracy")),
        ("final acc.", lambda p: p.get("final_accuracy")),
        ("initial pass@1", lambda p: p.get("initial_pass1")),
        ("final pass@1", lambda p: p.get("final_pass1")),
        ("final pass@8", lambda p: p.get("final", {}).get("eval_pass8")),
        ("final reward", lambda p: p.get("final", {}).get("reward_mean")),
        (
            "peer events used / offered",
            lambda p: (
                f"{int(p.get('totals', {}).get('peer_events_used', 0))} / "
                f"{int(p.get('totals', {}).get('peer_events_offered', 0))}"
            ),
        ),
        ("dropped stale", lambda p: int(p.get("totals", {}).get("dropped_stale", 0))),
        ("dropped by THL budget", lambda p: int(p.get("totals", {}).get("dropped_budget", 0))),
    ]
    header = ["policy", *(title for title, _ in columns)]
    rows = [[name, *(cell(p) for _, cell in columns)] for name, p in sorted(policies.items())]
    return header, rows


def render_html(summary: dict[str, Any]) -> str:
    """A self-contained HTML page: run facts, per-policy table, plots, event counts."""
    run, policies = summary["run"], summary["policies"]
    title = f"mrl-actors run {run.get('name', '?')}"
    facts = _table(
        ["run", "probe(s)", "mode", "seed", "status", "code"],
        [
            [
                run.get("name"),
                ", ".join(run.get("probes", [])),
                run.get("spec", {}).get("mode", "?"),
                run.get("seed"),
                run.get("status", "running"),
                run.get("code_version"),
            ]
        ],
    )
    lines = "".join(f"<li>{html.escape(x)}</li>" for x in headline(summary))
    heads = f'<ul class="headline">{lines}</ul>'
    per_policy = _table(*policy_table(policies))
    part_rows = [
        [name, part, *(v.get(k) for k in _PART_COLUMNS)]
        for name, p in sorted(policies.items())
        for part, v in p.get("parts", {}).items()
    ]
    if part_rows:
        titles = ["policy", "part", "initial acc.", "final acc.", "final pass@1", "final pass@8"]
        per_policy += "<h3>Per part of the task</h3>" + _table(titles, part_rows)
    system = _table(*system_rows(summary))
    if "slots" in summary:  # summaries written before the slot table have none
        rows = [
            [a["node"], a["slot"], a["policy"], a["role"]] for a in summary["slots"]["assignments"]
        ]
        system += f"<h3>{html.escape(slot_title(summary['slots']))}</h3>"
        system += _table(["node", "slot", "policy", "role"], rows)
    spec = spec_rows(run.get("spec_toml"))
    spec_table = _table(["spec field", "value"], spec) if spec else "<p>No spec in the log.</p>"
    plots = []
    for key, plot_title in _PLOTS:
        data = {n: p.get("series", {}).get(key, []) for n, p in policies.items()}
        if any(data.values()):
            plots.append(f'<figure data-metric="{key}">{_svg_plot(plot_title, data)}</figure>')
    events = _table(["event kind", "count"], sorted(summary["events"].items()))
    by_source = _table(["kind/source", "count"], sorted(summary["events_by_source"].items()))
    return (
        _page_head(title)
        + f"""{facts}
{heads}
<h2>Policies</h2>
{per_policy}
<h2>System</h2>
{system}
<h2>Over training</h2>
{"".join(plots) or "<p>No learner steps yet.</p>"}
<h2>Events exchanged</h2>
{events}
<details><summary>By source</summary>{by_source}</details>
<h2>Spec</h2>
<details open><summary>The spec the run started with (its RunStarted event)</summary>
{spec_table}</details>
</body></html>
"""
    )


_PART_COLUMNS = ("initial_accuracy", "final_accuracy", "final_pass1", "final_pass8")


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


def paired_table(
    paired: Sequence[dict[str, Any]], metric: str
) -> tuple[list[str], list[list[str]]]:
    """Per probe: mean paired difference against the baseline with its bootstrap 95% interval.

    `paired` holds `stats.PairedDiff.as_dict()` rows; a cell reads `+0.031 [-0.010, +0.072]`,
    and ends in ` *` when the interval excludes zero.
    """
    rows_of = [d for d in paired if d["metric"] == metric]
    if not rows_of:
        return [], []
    names = sorted({d["policy"] for d in rows_of}, key=lambda n: (n == "average", n))
    baseline = rows_of[0]["baseline"]
    header = [f"probe − {baseline}", *names, "paired seeds"]
    rows = []
    for probe in dict.fromkeys(d["probe"] for d in rows_of):
        cells = {d["policy"]: d for d in rows_of if d["probe"] == probe}
        row = [probe]
        for n in names:
            d = cells.get(n)
            row.append("–" if d is None else _diff_cell(d))
        seeds = cells.get("average", next(iter(cells.values())))["seeds"]
        row.append(str(len(seeds)))
        rows.append(row)
    return header, rows


def _diff_cell(d: dict[str, Any]) -> str:
    if d.get("ci_low") is None or d.get("ci_high") is None:
        return f"{d['mean']:+.3f} (no interval: {len(d['seeds'])} paired seed(s))"
    mark = " *" if d["excludes_zero"] else ""
    return f"{d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]{mark}"


# (metric, title) of the across-seed tables and of the paired tables in compare.md/.html
_COMPARE_SPREAD = (
    ("final_accuracy", "Final held-out accuracy (greedy)"),
    ("final_pass1", "Final held-out pass@1 (sampled at the training temperature)"),
)


def _compare_sections(
    results: dict[str, list[dict[str, Any]]], seeds: Sequence[int], paired: Sequence[dict]
) -> list[tuple[str, list[str], list[list[str]]]]:
    out = []
    spread = "mean ± std" if len(seeds) > 1 else "one seed, so no spread"
    for metric, title in _COMPARE_SPREAD:
        header, rows = compare_table(results, metric)
        out.append((f"{title}, {spread} over seeds {list(seeds)}", header, rows))
    few = len(seeds) < MIN_PAIRED_SEEDS
    for metric, title in COMPARED_METRICS:
        header, rows = paired_table(paired, metric)
        if rows:
            note = "paired by seed, mean [bootstrap 95% interval]; * = interval excludes 0"
            if few:
                note = (
                    f"paired by seed, mean only: no interval and no * below {MIN_PAIRED_SEEDS} "
                    "paired seeds (a bootstrap of one or two differences is degenerate)"
                )
            out.append((f"Difference in {title}, {note}", header, rows))
    return out


def compare_mode(results: dict[str, list[dict[str, Any]]]) -> str:
    """The mode(s) the compared runs used (`RunStarted.mode`): lockstep runs compare bitwise."""
    modes = {
        r.get("run", {}).get("spec", {}).get("mode", "?") for rs in results.values() for r in rs
    }
    return ", ".join(sorted(modes)) or "?"


def compare_markdown(
    results: dict[str, list[dict[str, Any]]], seeds: Sequence[int], paired: Sequence[dict]
) -> str:
    """compare.md: the across-seed tables, then each probe minus the baseline, paired by seed."""
    lines: list[str] = [f"Mode: {compare_mode(results)} (as each run recorded it).", ""]
    for title, header, rows in _compare_sections(results, seeds, paired):
        lines += [f"{title}:", ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines.append("")
    return "\n".join(lines)


def compare_html(
    results: dict[str, list[dict[str, Any]]], seeds: Sequence[int], paired: Sequence[dict]
) -> str:
    """compare.html: the tables of compare.md, each probe's curves (mean over seeds with the
    seeds' range as a band) and a link to every sub-run's report, as a self-contained page."""
    from mrl_actors.report.compare_page import curves_html, links_html

    body = "".join(
        f"<h2>{html.escape(title)}</h2>{_table(header, rows)}"
        for title, header, rows in _compare_sections(results, seeds, paired)
    )
    body += "<h2>Over training, per probe (mean over seeds, band: lowest to highest)</h2>"
    body += curves_html(results)
    body += f"<h2>Runs</h2>{links_html(results)}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mrl-actors comparison</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
th {{ background: #f3f3f3; }}
figure {{ display: inline-block; margin: 0.5em; }}
</style></head><body>
<h1>mrl-actors comparison over seeds {html.escape(str(list(seeds)))}</h1>
<p>Mode: {html.escape(compare_mode(results))} (as each run recorded it).</p>
{body}
</body></html>
"""


def render_counterfactual_html(page: dict[str, Any]) -> str:
    """`mrl replay --probe`'s page: per policy, the logged run beside its counterfactual."""
    probe = page["probe"]
    sections = []
    for r in page["policies"]:
        steps = r["steps"]
        final_l, final_c = r["final"]["logged"], r["final"]["counterfactual"]
        keys = sorted(set(final_l) | set(final_c))
        finals = _table(
            ["held-out metric", f"logged ({r['logged_probe']})", f"counterfactual ({probe})"],
            [[k, final_l.get(k), final_c.get(k)] for k in keys],
        )
        per_step = _table(
            ["step", "loss", "logged loss", "grad norm", "logged grad norm", "L2 distance"],
            [[int(s["step"]), *(s[k] for k in _CF_COLUMNS)] for s in steps],
        )
        plots = "".join(
            f"<figure>{_svg_plot(title, {n: _points(steps, k) for n, k in lines})}</figure>"
            for title, lines in (
                ("L2 distance to the logged weights", ((probe, "distance"),)),
                ("Loss", ((probe, "loss"), ("logged", "logged_loss"))),
                ("Gradient norm", ((probe, "grad_norm"), ("logged", "logged_grad_norm"))),
            )
            if steps
        )
        sections.append(
            f"<h2>{html.escape(r['policy'])}: {r['steps_replayed']} steps, "
            f"{r['test_items']} test items</h2>{finals}{plots}"
            f"<details><summary>Per step</summary>{per_step}</details>"
        )
    title = f"mrl-actors counterfactual replay of {page['run']} under {probe}"
    return (
        _page_head(title)
        + f"""<p>The logged experience of each policy fed through the
{html.escape(probe)} update rule, beside an exact replay of the logged run (every step's weights
sha256 checked against the log).</p>
{"".join(sections)}
</body></html>
"""
    )


_CF_COLUMNS = ("loss", "logged_loss", "grad_norm", "logged_grad_norm", "distance")


def _points(steps: Sequence[dict[str, float]], key: str) -> list[tuple[int, float]]:
    return [(int(s["step"]), s[key]) for s in steps]
