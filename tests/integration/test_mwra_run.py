"""MWRA live: three `mrl-node` processes on the local three-server cluster, no static placement.

The spec asks `[placement] allocator = "mwra"`: every node is a candidate for the run's
allocator, the one holding the lease (`MRL_<run>_LEASE`, key `mwra`) assigns every slot. `h1`
starts alone, so it takes the lease and makes the first assignment; `h2` and `h3` join and get
slots. Once both policies have stepped, `h1` is SIGKILLed: another node takes the lease over, and
its decisions continue the same chain of epochs and give `h1`'s slots (a learner among them)
to the live nodes; the run completes. Checked from the log: each policy took steps 1..N exactly
once and no sequence was consumed twice, no group was logged twice, the allocator's epochs run
1, 2, 3, ... without a gap or a fork, and replaying the log through MWRA (`mwra.replay.check`)
makes every recorded decision again, byte for byte.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import helpers.cluster as hc
import msgspec
import pytest
from helpers.specs import TINY16, spec_toml

from mrl_actors import events as ev
from mrl_actors.see.auth import ADMIN

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEPS = 6
NODES = {n: list(hc.POLICIES) for n in ("h1", "h2", "h3")}  # any node may host any policy
# 3 s: a node whose loop is held up (torch import, a warm start on a loaded host) for two 1 s
# intervals was declared dead and the allocator churned the lease until the test timed out
LIVENESS_S = 3.0


def spec_text(models_dir: Path, urls: str) -> str:
    return spec_toml(
        models_dir,
        run={
            "name": hc.RUN,
            "probe": "independent",
            "mode": "async",
            "max_staleness": 1,
            "steps": STEPS,
        },
        server={"url": urls, "replicas": 3, "max_bytes": 268435456},
        placement={"allocator": "mwra"},
        mwra={"liveness_interval_s": LIVENESS_S},
        tiny=TINY16,
        grpo={"lr": 1e-3},
    )


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[hc.Cluster]:
    with hc.running_cluster(tmp_path, NODES) as c:
        yield c


def _lease_holder(c: hc.Cluster) -> str | None:
    """Who holds the run's MWRA lease now (None: nobody ever took it)."""
    from mrl_actors.mwra.actor import LEASE_KEY
    from mrl_actors.see.connection import ConnectionConfig, connect
    from mrl_actors.see.lease import Lease

    async def read() -> str | None:
        nc = await connect(ConnectionConfig(url=c.urls(), user=ADMIN, password=c.passwords[ADMIN]))
        try:
            value, _ = await Lease(nc.jetstream(), hc.RUN, LEASE_KEY, "test", ttl_s=1).current()
            return None if value is None else value.holder
        finally:
            await nc.close()

    return anyio.run(read)


def _until(what: str, ready: Any, procs: dict[str, subprocess.Popen[bytes]], tmp: Path) -> None:
    deadline = time.monotonic() + 300
    while not ready():
        for name, p in procs.items():
            if p.poll() not in (None, 0):
                out = (tmp / f"{name}.out").read_text(errors="replace")[-3000:]
                pytest.fail(f"node {name} exited {p.returncode} waiting for {what}:\n{out}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def _decisions(records: list[Any]) -> list[tuple[int, ev.SlotsAssigned]]:
    return [
        (r.seq, r.event)
        for r in records
        if isinstance(r.event, ev.SlotsAssigned) and r.event.source == "mwra"
    ]


def test_the_allocator_moves_to_another_node_when_its_node_dies_and_its_log_replays(
    cluster: hc.Cluster, models_dir: Path, model_cache: Path, tmp_path: Path
) -> None:
    from mrl_actors.mwra.replay import check
    from mrl_actors.spec import load_spec

    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(spec_text(models_dir, cluster.urls()))
    hc.create_stream(cluster, spec_path)
    spec, _ = load_spec(spec_path)

    def start(node: str) -> subprocess.Popen[bytes]:
        return hc.start_node(cluster, spec_path, tmp_path, node, model_cache, slots="cpu:2")

    procs = {"h1": start("h1")}
    try:
        _until("h1 to assign", lambda: _decisions(hc.read_records(cluster)), procs, tmp_path)
        assert _lease_holder(cluster) == "h1"
        procs["h2"] = start("h2")
        procs["h3"] = start("h3")

        def stepped() -> bool:
            records = hc.read_records(cluster)
            return all(
                any(
                    isinstance(r.event, ev.LearnerStepCompleted) and r.event.policy == p
                    for r in records
                )
                for p in hc.POLICIES
            )

        _until("both policies to step", stepped, procs, tmp_path)
        procs["h1"].send_signal(signal.SIGKILL)
        procs["h1"].wait(timeout=30)
        killed_at = time.time_ns()
        _until(
            "another node to take the lease",
            lambda: _lease_holder(cluster) in ("h2", "h3"),
            {n: p for n, p in procs.items() if n != "h1"},
            tmp_path,
        )
        survivors = {n: p for n, p in procs.items() if n != "h1"}
        hc.wait_nodes(survivors, tmp_path)
    finally:
        hc.stop_all(procs)

    records = hc.read_records(cluster)
    by_seq = {r.seq: r.event for r in records}
    consumed: list[int] = []
    for p in hc.POLICIES:
        taken = [
            r.event
            for r in records
            if isinstance(r.event, ev.LearnerStepCompleted) and r.event.policy == p
        ]
        assert [e.step for e in taken] == list(range(1, STEPS + 1)), p
        consumed += [c.seq for e in taken for c in e.consumed]
    assert len(consumed) == len(set(consumed))
    groups = [e for e in by_seq.values() if isinstance(e, ev.RolloutGroupCompleted)]
    assert len({g.event_id for g in groups}) == len(groups)
    assert sum(isinstance(e, ev.RunFinished) for e in by_seq.values()) == 1

    decisions = _decisions(records)
    assert [d.epoch for _, d in decisions] == list(range(1, len(decisions) + 1))
    after = [d for _, d in decisions if d.time_ns > killed_at]
    assert after, "no decision after h1 was killed"
    assert all(a.node != "h1" for a in after[-1].assignments)
    roles = {(a.policy, a.role) for a in after[-1].assignments}
    assert {(p, "learner") for p in hc.POLICIES} <= roles  # every learner lives on a live node
    mismatches = check(records, spec.mwra)
    assert not mismatches, msgspec.json.encode(mismatches[:2]).decode()[:2000]
