"""The run report: a fold over events, rendered as one self-contained page."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest
from helpers import events as E

from mrl_actors.events import (
    ConsumedEvent,
    Event,
    LearnerStepCompleted,
    RunFinished,
    RunStarted,
)
from mrl_actors.report.summary import LEARNING_PLOTS, compare_table, render_html, summarize

VOID = {"meta", "br", "hr", "img", "input", "link", "area", "base", "col", "source", "wbr"}


class _Balance(HTMLParser):
    """Fails on unclosed or mismatched tags, scripts and anything fetched from elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.in_svg = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.errors.append("script")
        for name, value in attrs:
            remote = value and (re.match(r"^[A-Za-z][\w+.-]*:", value) or value.startswith("//"))
            if name in ("src", "href") and remote:
                self.errors.append(f"external {name}={value}")
        if tag == "svg":
            self.in_svg += 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        pass  # self-closing (SVG paths): nothing to balance

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()


def _events() -> list[Event]:
    run = "r"
    out: list[Event] = [
        RunStarted(run=run, source="mrl", event_id="s", spec_toml="", seed=3, code_version="x"),
    ]
    for name, acc in (("gpt2", 0.25), ("llama", 0.5)):
        out.append(E.registered(name, family=name, probe="sgt"))
        for step in (1, 2, 3):
            metrics = {"reward_mean": acc + 0.1 * step, "peer_events_used": 2.0, "is_off_ess": 0.9}
            if step == 1:
                metrics["eval_accuracy_initial"] = acc
            if step == 3:
                metrics["eval_accuracy"] = acc + 0.2
            consumed = [ConsumedEvent(step, "e")]
            out.append(E.learner_step(name, step, probe="sgt", consumed=consumed, metrics=metrics))
    out.append(RunFinished(run=run, source="mrl", event_id="f", status="completed"))
    return out


def test_summary_folds_learner_steps_per_policy() -> None:
    s = summarize(_events())
    assert s["run"]["status"] == "completed" and s["run"]["seed"] == 3
    gpt2 = s["policies"]["gpt2"]
    assert gpt2["steps"] == 3 and gpt2["initial_accuracy"] == 0.25
    assert abs(gpt2["final_accuracy"] - 0.45) < 1e-12
    assert gpt2["totals"]["peer_events_used"] == 6.0
    assert abs(s["run"]["average_final_accuracy"] - 0.575) < 1e-12
    assert s["events"]["learner"] == 6


def test_report_page_is_self_contained_and_well_formed() -> None:
    page = render_html(summarize(_events()))
    checker = _Balance()
    checker.feed(page)
    checker.close()
    assert checker.errors == [] and checker.stack == []
    svgs = re.findall(r"<svg.*?</svg>", page, flags=re.S)
    assert len(svgs) >= 3  # accuracy, reward, ESS
    for svg in svgs:
        ET.fromstring(svg)  # each inline plot is well-formed XML


def test_compare_table_reports_mean_and_spread_over_seeds() -> None:
    a = summarize(_events())
    header, rows = compare_table({"sgt": [a, a], "independent": [a]})
    assert header == ["probe", "gpt2", "llama", "average", "seeds"]
    assert rows[0] == ["sgt", "0.450 ± 0.000", "0.700 ± 0.000", "0.575 ± 0.000", "2"]
    assert rows[1][-1] == "1" and "±" not in rows[1][1]


def test_policy_table_has_one_header_per_cell() -> None:
    """Regression: the table had 10 headers over 12 cells, so labels sat over the wrong values."""
    from mrl_actors.report.summary import policy_table

    header, rows = policy_table(summarize(_events())["policies"])
    assert rows and all(len(r) == len(header) for r in rows)
    page = render_html(summarize(_events()))
    table = page.split("<h2>Policies</h2>")[1].split("</table>")[0]
    heads = table.count("<th>")
    assert all(r.count("<td>") == heads for r in table.split("<tr>")[2:])
    gpt2 = dict(zip(header, rows[0], strict=True))
    assert gpt2["policy"] == "gpt2" and gpt2["final acc."] == 0.45


def test_compare_pages_show_paired_differences_with_intervals() -> None:
    from mrl_actors.report.stats import paired_differences
    from mrl_actors.report.summary import compare_html, compare_markdown, paired_table

    def run(seed: int, acc: float) -> dict:
        return {
            "run": {"seed": seed},
            "policies": {"p": {"final_accuracy": acc, "final": {"eval_accuracy": acc}}},
        }

    results = {
        "independent": [run(s, 0.1 * s) for s in range(3)],
        "sgt": [run(s, 0.1 * s + 0.05) for s in range(3)],
    }
    paired = [d.as_dict() for d in paired_differences(results)]
    header, rows = paired_table(paired, "eval_accuracy")
    assert header == ["probe − independent", "p", "average", "paired seeds"]
    assert rows == [["sgt", "+0.050 [+0.050, +0.050] *", "+0.050 [+0.050, +0.050] *", "3"]]
    md = compare_markdown(results, [0, 1, 2], paired)
    assert "Difference in held-out accuracy (greedy)" in md and "| sgt | +0.050" in md
    checker = _Balance()
    checker.feed(compare_html(results, [0, 1, 2], paired))
    checker.close()
    assert checker.errors == [] and checker.stack == []


# async runs also plot their rollout wait and staleness
PLOTTED = (*LEARNING_PLOTS, "rollout_wait_s", "staleness_mean")


def test_report_plots_learning_and_shows_the_spec_and_a_headline_per_policy() -> None:
    spec = '[run]\nname = "r"\nmode = "async"\nrollout_replicas = 2\nmax_staleness = 1\n'
    spec += '[[policies]]\nname = "gpt2"\nmodel = "m"\n[policies.grpo]\nlr = 0.0005\n'
    events = _events()
    events[0] = RunStarted(
        run="r", source="mrl", event_id="s", spec_toml=spec, seed=3, code_version="x"
    )
    full = {
        "loss": 0.5,
        "kl": 0.01,
        "entropy": 1.2,
        "grad_norm": 0.7,
        "clip_region": 0.05,
        "completion_length": 6.0,
        "step_time_s": 2.0,
        "tokens": 96.0,
        "success_rate": 0.4,
        "rollout_wait_s": 0.3,
        "staleness_mean": 0.5,
        "staleness_max": 1.0,
        "learner_version": 3.0,
    }
    for e in events:
        if isinstance(e, LearnerStepCompleted):
            e.metrics.update(full)
    summary = summarize(events)
    assert summary["policies"]["gpt2"]["series"]["tokens_per_s"] == [
        (1, 48.0),
        (2, 48.0),
        (3, 48.0),
    ]
    page = render_html(summary)
    for key in PLOTTED:
        assert f'<figure data-metric="{key}">' in page, key
    assert "gpt2 (gpt2), held-out accuracy 0.250 → 0.450 (+0.200), 3 steps" in page
    assert "llama (llama), held-out accuracy 0.500 → 0.700 (+0.200)" in page
    assert "average final accuracy" not in page  # no number that averages two models
    assert "<td>policies.gpt2.grpo.lr</td><td>0.0005</td>" in page
    system = page.split("<h2>System</h2>")[1].split("</table>")[0]
    assert "<td>async</td><td>2</td><td>1</td><td>3</td><td>0.50 / 1</td><td>0.300</td>" in system
    checker = _Balance()
    checker.feed(page)
    checker.close()
    assert checker.errors == [] and checker.stack == []


def test_compare_page_has_curves_per_probe_with_a_band_and_links_to_every_sub_run() -> None:
    from mrl_actors.report.compare_page import curve_points
    from mrl_actors.report.stats import paired_differences
    from mrl_actors.report.summary import compare_html

    def run(seed: int, shift: float) -> dict:
        series = {
            "eval_accuracy": [(0, 0.2), (2, 0.3 + shift + 0.01 * seed)],
            "reward_mean": [(1, 0.1 + shift), (2, 0.2 + shift + 0.01 * seed)],
        }
        p = {"final_accuracy": 0.3 + shift, "final": {"eval_accuracy": 0.3 + shift}}
        return {"run": {"seed": seed}, "policies": {n: {**p, "series": series} for n in "ab"}}

    results = {p: [run(s, d) for s in range(3)] for p, d in (("independent", 0.0), ("sgt", 0.1))}
    pts = curve_points(results["sgt"], "a", "eval_accuracy")
    assert pts[0] == pytest.approx((0, 0.2, 0.2, 0.2))
    assert pts[1] == pytest.approx((2, 0.41, 0.4, 0.42))
    paired = [d.as_dict() for d in paired_differences(results)]
    page = compare_html(results, [0, 1, 2], paired)
    for name in "ab":
        for key in ("eval_accuracy", "reward_mean"):
            assert f'<figure data-policy="{name}" data-metric="{key}">' in page
    assert "fill-opacity: 0.2" in page  # the band between the seeds
    for probe in results:
        for seed in range(3):
            assert f'<a href="{probe}-s{seed}/report.html">seed {seed}</a>' in page
    checker = _Balance()
    checker.feed(page)
    checker.close()
    assert checker.errors == [] and checker.stack == []
