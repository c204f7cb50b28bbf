"""Every fold refuses a payload identity other than its subject's source (MWRA has its own
test in test_mwra.py): status, metrics and the report leave such an event out."""

from __future__ import annotations

import msgspec

from mrl_actors import events as ev
from mrl_actors.cli.status_cmd import RunStatus
from mrl_actors.report.metrics import updates
from mrl_actors.report.summary import summarize

RUN = "r"


def _throughput(source: str, policy: str) -> ev.ThroughputReported:
    return ev.ThroughputReported(
        run=RUN,
        source=source,
        event_id=f"tp-{source}-{policy}",
        time_ns=1,
        node="h2",
        policy=policy,
        role="rollout",
        window_s=1.0,
        tokens_per_s=10.0,
        samples_per_s=2.0,
    )


def test_metrics_drop_a_report_naming_another_policy() -> None:
    assert updates(_throughput("gpt2", "gpt2"))
    assert updates(_throughput("gpt2", "llama")) == []


def test_status_invents_no_node_from_another_nodes_subject() -> None:
    beat = ev.NodeHeartbeat(run=RUN, source="h1", event_id="b", time_ns=1, node="h1", slots=2)
    status = RunStatus()
    status.fold(1, beat)
    status.fold(2, msgspec.structs.replace(beat, node="h9", slots=4096, event_id="b9"))
    assert "h9" not in status.nodes


def test_the_report_leaves_out_a_learner_step_naming_a_peer() -> None:
    step = ev.LearnerStepCompleted(
        run=RUN,
        source="gpt2",
        event_id="s",
        policy="llama",
        step=5,
        probe="independent",
        consumed=[],
        weights_sha256="0" * 64,
        metrics={"loss": 1.0},
    )
    summary = summarize([step])
    assert "llama" not in summary.get("policies", {})
