"""Prometheus metrics from events: the pure mapping, a real scrape over HTTP on loopback, and
`serve_log`'s life: it serves while it follows a log, and frees its port when cancelled."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from helpers import events as E
from prometheus_client.parser import text_string_to_metric_families

from mrl_actors import events as ev
from mrl_actors.errors import ConfigError
from mrl_actors.report.metrics import (
    FOLLOWED_KINDS,
    MetricsConfig,
    RunMetrics,
    Update,
    serve_log,
    updates,
)
from mrl_actors.see.record import Record

RUN = "r1"
T0 = 1_700_000_000_000_000_000  # ns


def _assigned(epoch: int, *, slot2: str) -> ev.SlotsAssigned:
    """n0's three slots: qwen's learner and a qwen rollout slot, and slot 2 given to `slot2`."""
    placed = [
        ("n0", 0, "qwen", "learner"),
        ("n0", 1, "qwen", "rollout"),
        ("n0", 2, slot2, "rollout"),
    ]
    return E.assigned(epoch, placed, run=RUN, time_ns=T0)  # type: ignore[arg-type]


def _events() -> list[ev.Event]:
    base = {"run": RUN, "time_ns": T0}
    return [
        E.heartbeat("n0", 4, **base),
        E.throughput("qwen", samples_per_s=5.0, tokens_per_s=1500.0, **base),
        E.learner_timed(
            "qwen", 7, wait_s=2.5, compute_s=11.0, pending_groups=3, staleness=0.75, **base
        ),
        _assigned(1, slot2="llama"),  # MWRA then moves slot 2 from llama to qwen
        _assigned(2, slot2="qwen"),
        E.moved(42.0, slot=2, epoch=2, from_policy="llama", to_policy="qwen", **base),
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


def test_registered_policies_open_their_slot_move_series_at_zero() -> None:
    """A dashboard finds `mrl_slot_moves_total` for every ordered pair before any move (a run
    without MWRA never measures one); a registration read twice opens nothing twice."""
    metrics = RunMetrics()
    port = metrics.serve(MetricsConfig(port=0))
    try:
        for policy in ("a", "b", "c", "b"):
            metrics.observe(E.registered(policy, run=RUN, time_ns=T0))
        got = _scrape(port)
    finally:
        metrics.close()
    pairs = {
        (dict(labels)["from_policy"], dict(labels)["to_policy"]): value
        for (name, labels), value in got.items()
        if name == "mrl_slot_moves_total"
    }
    assert pairs == {(x, y): 0.0 for x in "abc" for y in "abc" if x != y}
    assert sum(1 for name, _ in got if name == "mrl_slot_move_seconds_total") == 6


def test_a_port_in_use_is_a_config_error_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}"):
            RunMetrics().serve(MetricsConfig(port=port))


class _Log:
    """A log stub: `read` yields the events, then waits as a following read does."""

    run = RUN

    def __init__(self, events: list[ev.Event]) -> None:
        self.events = events
        self.kinds: list[str] = []

    async def read(self, *, start_seq: int, kinds: Any, follow: bool) -> AsyncIterator[Record[Any]]:
        assert start_seq == 1 and follow
        self.kinds = list(kinds)
        for seq, event in enumerate(self.events, start=1):
            yield Record(seq, event)
        await anyio.sleep_forever()


def test_serve_log_serves_what_it_follows_and_frees_its_port_when_cancelled() -> None:
    log = _Log(_events())

    async def serve_and_scrape() -> tuple[int, dict[Any, float]]:
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve_log, log, MetricsConfig(port=0))
            with anyio.fail_after(10):  # the follower feeds it soon after it serves
                while ("mrl_slots_epoch", (("run", RUN),)) not in (
                    got := await anyio.to_thread.run_sync(_scrape, port)
                ):
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        return port, got

    port, got = anyio.run(serve_and_scrape)
    assert got[("mrl_pending_groups", (("policy", "qwen"), ("run", RUN)))] == 3.0
    assert set(log.kinds) == set(FOLLOWED_KINDS)
    with pytest.raises(OSError):  # nothing listens there any more
        _scrape(port)
    # and the port is free: a new server can listen on it (with SO_REUSEADDR, as any server
    # restarting does: the scrape's connection may still be in TIME_WAIT)
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
        again.listen()
