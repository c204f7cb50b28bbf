"""Every fold refuses a payload identity other than its subject's source (MWRA has its own
test in test_mwra.py): status, metrics and the report leave such an event out."""

from __future__ import annotations

from helpers.events import heartbeat, learner_step, replaced, throughput

from mrl_actors.cli.status_cmd import RunStatus
from mrl_actors.report.metrics import updates
from mrl_actors.report.summary import summarize


def test_metrics_drop_a_report_naming_another_policy() -> None:
    assert updates(throughput("gpt2", node="h2", time_ns=1))
    assert updates(throughput("llama", node="h2", time_ns=1, source="gpt2")) == []


def test_status_invents_no_node_from_another_nodes_subject() -> None:
    beat = heartbeat("h1", 2, time_ns=1)
    status = RunStatus()
    status.fold(1, beat)
    status.fold(2, replaced(beat, node="h9", slots=4096, event_id="b9"))
    assert "h9" not in status.nodes


def test_the_report_leaves_out_a_learner_step_naming_a_peer() -> None:
    step = learner_step("llama", 5, source="gpt2", metrics={"loss": 1.0})
    summary = summarize([step])
    assert "llama" not in summary.get("policies", {})
