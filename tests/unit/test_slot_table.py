"""The slot table and the run's system line, in every mode, as the console, `report.html`,
`summary.json` and `mrl status` show them (`mrl_actors.report.slots`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mrl_actors import events as ev
from mrl_actors.cli.run_cmd import _print_summary
from mrl_actors.cli.status_cmd import RunStatus, render
from mrl_actors.report.slots import SlotFold, slot_lines, system_text
from mrl_actors.report.summary import render_html, summarize

RUN = "r"


def _base(kind: str, source: str, *key: object) -> dict[str, object]:
    return {"run": RUN, "source": source, "event_id": ev.event_id(kind, RUN, source, *key)}


def _started(text: str, mode: str = "") -> ev.RunStarted:
    return ev.RunStarted(**_base("run", "mrl"), spec_toml=text, seed=0, code_version="x", mode=mode)


def _joined(node: str, devices: list[str]) -> ev.NodeJoined:
    return ev.NodeJoined(
        **_base("node", node, "j"), node=node, host="h", pid=1, slots=len(devices), devices=devices
    )


def _assigned(epoch: int, source: str, *rows: tuple[int, str, str]) -> ev.SlotsAssigned:
    return ev.SlotsAssigned(
        **_base("slots", source, epoch),
        epoch=epoch,
        assignments=[
            ev.SlotAssignment(node="local", slot=s, policy=p, role=r)  # type: ignore[arg-type]
            for s, p, r in rows
        ],
    )


def _step(policy: str) -> ev.LearnerStepCompleted:
    return ev.LearnerStepCompleted(
        **_base("learner", policy, 1),
        policy=policy,
        step=1,
        probe="independent",
        consumed=[],
        weights_sha256="0" * 64,
        metrics={"reward_mean": 0.5, "staleness_mean": 1.0, "rollout_wait_s": 0.2},
    )


def _throughput(policy: str, node: str) -> ev.ThroughputReported:
    return ev.ThroughputReported(
        **_base("throughput", policy, node),
        node=node,
        policy=policy,
        role="learner",
        window_s=1.0,
        tokens_per_s=1.0,
        samples_per_s=1.0,
    )


MWRA_RUN = [
    _started('[run]\nname = "r"\n[placement]\nallocator = "mwra"\n', mode="async"),
    _joined("local", ["cpu"] * 4),
    _assigned(1, "mwra", (0, "a", "learner"), (1, "b", "learner"), (2, "a", "rollout")),
    _assigned(
        2,
        "mwra",
        (0, "a", "learner"),
        (1, "b", "learner"),
        (2, "b", "rollout"),
        (3, "a", "rollout"),
    ),
    _step("a"),
    _step("b"),
]


def test_a_placed_run_shows_the_newest_assignment_and_who_made_it() -> None:
    fold = SlotFold()
    for e in MWRA_RUN:
        fold.fold(e)
    view = fold.view("async", 1, ["a", "b"])
    assert (view["placed"], view["epoch"], view["source"], view["decisions"]) == (
        True,
        2,
        "mwra",
        2,
    )
    assert [(a["slot"], a["policy"], a["role"]) for a in view["assignments"]] == [
        ("cpu:0", "a", "learner"),
        ("cpu:1", "b", "learner"),
        ("cpu:2", "b", "rollout"),
        ("cpu:3", "a", "rollout"),
    ]
    lines = slot_lines(view)
    assert lines[0] == "slots (epoch 2, by mwra, 2 assignment(s) in the run):"
    assert lines[3].split() == ["local/cpu:2", "b", "rollout"]
    assert system_text("async", 1, 1, view) == (
        "async, rollout slots a 1, b 1 (epoch 2, mwra), max staleness 1"
    )


@pytest.mark.parametrize(
    ("mode", "role"),
    [("lockstep", "learner (samples too)"), ("async", "learner + 2 rollout actor(s)")],
)
def test_a_run_without_assignments_shows_each_policy_on_its_nodes_first_slot(
    mode: str, role: str
) -> None:
    fold = SlotFold()
    for e in (_joined("local-a", ["cuda:0", "cuda:1"]), _throughput("a", "local-a")):
        fold.fold(e)
    view = fold.view(mode, 2, ["a", "b"])
    assert not view["placed"]
    assert view["assignments"] == [
        {"node": "local-a", "slot": "cuda:0", "policy": "a", "role": role}
    ]
    empty = SlotFold().view(mode, 2, ["a", "b"])  # no throughput yet: every policy, locally
    assert [(a["node"], a["policy"]) for a in empty["assignments"]] == [
        ("local", "a"),
        ("local", "b"),
    ]
    assert system_text("lockstep", 2, 1, view) == "lockstep"
    assert (
        system_text("async", 2, 1, view)
        == "async, 2 rollout replica(s) per policy, max staleness 1"
    )


def test_summary_report_console_and_status_show_mode_and_slots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = summarize(MWRA_RUN)
    assert summary["run"]["spec"]["mode"] == "async"
    assert summary["slots"]["epoch"] == 2
    page = render_html(summary)
    assert "<h3>Slots (epoch 2, by mwra, 2 assignment(s) in the run)</h3>" in page
    assert "1 slot(s), mwra" in page  # the system table's rollout column
    _print_summary(summary, tmp_path)
    out = capsys.readouterr().out.splitlines()
    system = "async, rollout slots a 1, b 1 (epoch 2, mwra), max staleness 1"
    assert out[0].startswith("run r (") and out[0].endswith(f", {system}): {tmp_path}")
    assert ["local/cpu:3", "a", "rollout"] in [line.split() for line in out]
    st = RunStatus()
    for seq, e in enumerate(MWRA_RUN, 1):
        st.fold(seq, e)
    text = render(st.view(now_ns=0, liveness_s=10.0, dead_after=2.0))
    assert "mode async, rollout slots a 1, b 1 (epoch 2, mwra)" in text
    assert "  local/cpu:2 b            rollout" in text


def test_a_run_logged_before_the_mode_was_recorded_reads_as_lockstep() -> None:
    """A spec text without `mode` meant lockstep while that was the default: its RunStarted has
    no `mode` field, and every view reads it as lockstep (a new run records its mode)."""
    old = [_started('[run]\nname = "r"\n'), _step("a")]
    assert old[0].run_mode == "lockstep"
    assert summarize(old)["run"]["spec"]["mode"] == "lockstep"
    st = RunStatus()
    st.fold(1, old[0])
    assert st.view(now_ns=0, liveness_s=10.0, dead_after=2.0)["mode"] == "lockstep"
    new = summarize([_started('[run]\nname = "r"\n', mode="async"), _step("a")])
    assert new["run"]["spec"]["mode"] == "async"
    explicit = summarize([_started('[run]\nname = "r"\nmode = "async"\n'), _step("a")])
    assert explicit["run"]["spec"]["mode"] == "async"  # the text's own word wins
    raw = ev.encode(old[0])
    assert b"mode" not in raw  # left out when unset: released events keep their bytes


def test_a_comparison_says_the_mode_its_runs_used() -> None:
    from mrl_actors.report.summary import compare_html, compare_markdown

    runs = [summarize([_started('[run]\nname = "r"\n', mode="lockstep"), _step("a")])]
    results = {"independent": runs, "sgt": runs}
    assert compare_markdown(results, [0], []).startswith("Mode: lockstep (as each run recorded")
    assert "<p>Mode: lockstep (as each run recorded it).</p>" in compare_html(results, [0], [])


def test_status_says_when_one_rate_stands_for_several_actors_on_a_node() -> None:
    rollout = ev.ThroughputReported(
        **_base("throughput", "a", "r"),
        node="local",
        policy="a",
        role="rollout",
        window_s=1.0,
        tokens_per_s=10.0,
        samples_per_s=2.0,
    )
    two = _assigned(
        3,
        "mwra",
        (0, "a", "learner"),
        (1, "b", "learner"),
        (2, "a", "rollout"),
        (3, "a", "rollout"),
    )
    st = RunStatus()
    for seq, e in enumerate([*MWRA_RUN, two, rollout], 1):
        st.fold(seq, e)
    text = render(st.view(now_ns=0, liveness_s=10.0, dead_after=2.0))
    assert "rollout@local (2 actors, last report) 2.00 samples/s 10 tok/s" in text
