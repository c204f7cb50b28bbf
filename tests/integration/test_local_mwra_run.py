"""MWRA on one machine: `mrl run` with `[placement] allocator = "mwra"` runs the allocator over
CPU slots of the one node it hosts.

The pair is set up so that the allocator has a reason to move: llama samples 8 times longer
completions than gpt2, so its rollout slots yield far fewer learner steps per second, and the
gates that keep a live allocator from moving on little evidence (cost gate, hold, uncertainty,
hysteresis) are off. What the test checks does not depend on the timing: the run completes
(every policy's steps 1..N once, no sequence consumed twice), the allocator made the decisions
(`SlotsAssigned` from `mwra`, epochs 1, 2, ... without a gap, every slot of the node given and
each policy holding its learner and at least one rollout slot), and every decision is one MWRA's
rule makes again from the log (`mwra.replay.check`, and the nodes' own `DecisionCheck`). The
summary, report and console show the slot table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from helpers.specs import TINY16, policies_toml, spec_toml

from mrl_actors import events as ev

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUN = "t-lmwra"
STEPS = 4
SLOTS = 5  # two learners and three rollout slots: one of the policies holds two
Finished = tuple[Path, dict[str, Any], list[Any]]  # run dir, summary, the log's records


def spec_text(models_dir: Path) -> str:
    gpt2 = spec_toml(
        models_dir,
        run={"name": RUN, "mode": "async", "probe": "independent", "steps": STEPS},
        placement={"allocator": "mwra", "local_rollout_slots": SLOTS - 2},
        mwra={
            # 3 s, as in test_mwra_run: the run's threads hold the loop up to 1.4 s on a
            # 2-core host, and with 1 s intervals (dead after 1.5) the node was counted lost
            "liveness_interval_s": 3.0,
            "cost_gate": False,
            "hold_intervals": 0,
            "uncertainty_z": 0.0,
            "hysteresis": 0.0,
        },
        tiny=TINY16,
        max_new_tokens=2,
        grpo={"lr": 1e-3},
        pair=[("gpt2", "gpt2")],
    )
    llama = policies_toml(
        models_dir,
        tiny=TINY16,
        max_new_tokens=16,
        grpo={"lr": 1e-3, "max_completion_length": 16},
        pair=[("llama", "mistral-7b")],
    )
    return gpt2 + llama


@pytest.fixture(scope="module")
def finished(
    models_dir: Path, model_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Finished:
    from mrl_actors.run.runner import run_once
    from mrl_actors.spec import parse_spec

    out = tmp_path_factory.mktemp("lmwra") / "run"
    text = spec_text(models_dir)
    spec = parse_spec(text)
    summary = anyio.run(lambda: run_once(spec, text, out))
    records = anyio.run(_records, out)
    return out, summary, records


async def _records(out: Path) -> list[Any]:
    from mrl_actors.see.access import open_log

    async with open_log(run_dir=out, run=RUN) as log:
        return [rec async for rec in log.read(start_seq=1)]


def test_the_allocator_assigns_every_local_slot_and_the_run_completes(
    finished: Finished,
) -> None:
    _, summary, records = finished
    events = [r.event for r in records]
    consumed: list[int] = []
    for p in ("gpt2", "llama"):
        steps = [
            e
            for e in events
            if isinstance(e, ev.LearnerStepCompleted) and e.policy == e.source == p
        ]
        assert [e.step for e in steps] == list(range(1, STEPS + 1)), p
        consumed += [c.seq for e in steps for c in e.consumed]
    assert len(consumed) == len(set(consumed))
    assert sum(isinstance(e, ev.RunFinished) for e in events) == 1
    joined = [e for e in events if isinstance(e, ev.NodeJoined)]
    assert [(j.node, j.slots) for j in joined] == [("local", SLOTS)]

    decisions = [e for e in events if isinstance(e, ev.SlotsAssigned)]
    assert decisions and all(d.source == "mwra" for d in decisions)
    assert [d.epoch for d in decisions] == list(range(1, len(decisions) + 1))
    for d in decisions:
        assert sorted(a.slot for a in d.assignments) == list(range(SLOTS))
        roles = [(a.policy, a.role) for a in d.assignments]
        for p in ("gpt2", "llama"):
            assert roles.count((p, "learner")) == 1 and (p, "rollout") in roles
    assert summary["run"]["status"] == "completed"
    assert summary["run"]["spec"]["mode"] == "async"


def test_every_decision_is_one_the_rule_makes_again_from_the_log(
    finished: Finished,
) -> None:
    from mrl_actors.mwra.replay import check
    from mrl_actors.mwra.validate import DecisionCheck
    from mrl_actors.spec import load_spec

    out, _, records = finished
    spec, _ = load_spec(out / "spec.toml")
    mismatches = check(records, spec.mwra)
    assert not mismatches, msgspec.json.encode(mismatches[:2]).decode()[:2000]
    nodes = DecisionCheck(spec.mwra, mwra=True)  # what the node obeyed
    refused = [nodes.observe(r.seq, r.event, r.time_ns) for r in records]
    assert [why for why in refused if why is not None] == []


def test_the_summary_report_and_console_show_the_slot_table(
    finished: Finished,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from mrl_actors.cli.run_cmd import _print_summary

    out, summary, records = finished
    last = [r.event for r in records if isinstance(r.event, ev.SlotsAssigned)][-1]
    slots = summary["slots"]
    assert (slots["epoch"], slots["source"]) == (last.epoch, "mwra")
    assert slots["decisions"] == last.epoch
    assert sorted((a["slot"], a["policy"], a["role"]) for a in slots["assignments"]) == sorted(
        (f"cpu:{a.slot}", a.policy, a.role) for a in last.assignments
    )
    page = (out / "report.html").read_text()
    assert f"Slots (epoch {last.epoch}, by mwra" in page
    _print_summary(summary, out)
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith(f"slots (epoch {last.epoch}, by mwra") for line in lines)
    for a in last.assignments:
        assert [f"local/cpu:{a.slot}", a.policy, a.role] in [line.split() for line in lines]


def test_a_run_stopped_after_a_step_resumes_under_the_allocator(
    models_dir: Path, model_cache: Path, tmp_path: Path
) -> None:
    """`stop_after` (what a kill leaves) ends the node once every learner stopped, though its
    rollout actors wait for steps that will not come; the resumed run continues the epochs."""
    from mrl_actors.mwra.replay import check
    from mrl_actors.run.runner import run_once
    from mrl_actors.spec import parse_spec

    text = spec_text(models_dir).replace(f"steps = {STEPS}\n", "steps = 3\n", 1)
    spec = parse_spec(text)
    out = tmp_path / "run"
    anyio.run(lambda: run_once(spec, text, out, stop_after=1))
    first = anyio.run(_records, out)
    steps = [r.event for r in first if isinstance(r.event, ev.LearnerStepCompleted)]
    assert sorted(e.step for e in steps if e.policy == e.source) == [1, 1]
    assert not any(isinstance(r.event, ev.RunFinished) for r in first)
    summary = anyio.run(lambda: run_once(spec, text, out))
    records = anyio.run(_records, out)
    for p in ("gpt2", "llama"):
        taken = [
            r.event.step
            for r in records
            if isinstance(r.event, ev.LearnerStepCompleted)
            and r.event.policy == r.event.source == p
        ]
        assert taken == [1, 2, 3], p
    decisions = [r.event for r in records if isinstance(r.event, ev.SlotsAssigned)]
    assert [d.epoch for d in decisions] == list(range(1, len(decisions) + 1))
    assert len([r for r in records if isinstance(r.event, ev.NodeJoined)]) == 2
    assert summary["run"]["status"] == "completed"
    assert not check(records, spec.mwra)
