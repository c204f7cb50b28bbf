"""Prometheus metrics from events: the pure mapping, and a real scrape over HTTP on loopback."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mrl_actors import events as ev
from mrl_actors.errors import ConfigError
from mrl_actors.metrics import MetricsConfig, RunMetrics, Update, updates

RUN = "r1"
T0 = 1_700_000_000_000_000_000  # ns


def _events() -> list[ev.Event]:
    base = {"run": RUN, "time_ns": T0}
    return [
        ev.NodeHeartbeat(**base, source="n0", event_id="hb", node="n0", slots=4),
        ev.ThroughputReported(
            **base,
            source="n0",
            event_id="tp",
            node="n0",
            policy="qwen",
            role="rollout",
            window_s=10.0,
            tokens_per_s=1500.0,
            samples_per_s=5.0,
        ),
        ev.LearnerStepTimed(
            **base,
            source="qwen",
            event_id="lt",
            policy="qwen",
            step=7,
            wait_s=2.5,
            compute_s=11.0,
            samples=64,
            pending_groups=3,
            staleness=0.75,
        ),
        ev.SlotsAssigned(
            **base,
            source="mwra",
            event_id="s1",
            epoch=1,
            assignments=[
                ev.SlotAssignment(node="n0", slot=0, policy="qwen", role="learner"),
                ev.SlotAssignment(node="n0", slot=1, policy="qwen", role="rollout"),
                ev.SlotAssignment(node="n0", slot=2, policy="llama", role="rollout"),
            ],
        ),
        ev.SlotsAssigned(
            **base,
            source="mwra",
            event_id="s2",
            epoch=2,
            assignments=[
                ev.SlotAssignment(node="n0", slot=0, policy="qwen", role="learner"),
                ev.SlotAssignment(node="n0", slot=1, policy="qwen", role="rollout"),
                ev.SlotAssignment(node="n0", slot=2, policy="qwen", role="rollout"),
            ],
        ),
        ev.SlotMoveMeasured(
            **base,
            source="n0",
            event_id="mv",
            node="n0",
            slot=2,
            epoch=2,
            from_policy="llama",
            to_policy="qwen",
            seconds=42.0,
        ),
    ]


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_updates_is_a_pure_mapping() -> None:
    events = _events()
    assert [updates(e) for e in events] == [updates(e) for e in events]
    assert updates(events[-1]) == [
        Update("mrl_slot_moves", "inc", (("from_policy", "llama"), ("to_policy", "qwen")), 1.0),
        Update(
            "mrl_slot_move_seconds", "inc", (("from_policy", "llama"), ("to_policy", "qwen")), 42.0
        ),
    ]
    assert updates(ev.RunFinished(run=RUN, source="n0", event_id="f", status="completed")) == []


def test_served_metrics_carry_every_series() -> None:
    metrics = RunMetrics(clock=lambda: T0 / 1e9 + 30.0)
    port = metrics.serve(MetricsConfig(port=0))
    try:
        metrics.observe_all(_events())
        got = _scrape(port)
    finally:
        metrics.close()
    run = ("run", RUN)
    q = ("policy", "qwen")
    roll = (("node", "n0"), q, ("role", "rollout"), run)
    assert got[("mrl_tokens_per_second", roll)] == 1500.0
    assert got[("mrl_samples_per_second", roll)] == 5.0
    assert got[("mrl_pending_groups", (q, run))] == 3.0
    assert got[("mrl_learner_wait_seconds", (q, run))] == 2.5
    assert got[("mrl_learner_compute_seconds", (q, run))] == 11.0
    assert got[("mrl_staleness_versions", (q, run))] == 0.75
    assert got[("mrl_learner_version", (q, run))] == 7.0
    assert got[("mrl_seconds_since_learner_step", (q, run))] == pytest.approx(30.0)
    assert got[("mrl_slots_epoch", (run,))] == 2.0
    assert got[("mrl_slots", (q, ("role", "rollout"), run))] == 2.0
    assert got[("mrl_slots", (q, ("role", "learner"), run))] == 1.0
    # The newer assignment replaced the older whole: llama holds no slot any more.
    assert ("mrl_slots", (("policy", "llama"), ("role", "rollout"), run)) not in got
    moves = (("from_policy", "llama"), run, ("to_policy", "qwen"))
    assert got[("mrl_slot_moves_total", moves)] == 1.0
    assert got[("mrl_slot_move_seconds_total", moves)] == 42.0
    assert got[("mrl_node_last_seen_timestamp_seconds", (("node", "n0"), run))] == T0 / 1e9


def test_close_frees_the_port_and_bad_port_is_refused() -> None:
    metrics = RunMetrics()
    port = metrics.serve(MetricsConfig(port=0))
    metrics.close()
    again = RunMetrics()
    assert again.serve(MetricsConfig(port=port)) == port  # the port was released
    again.close()
    with pytest.raises(ConfigError, match=r"metrics\.port"):
        MetricsConfig(port=70000)
