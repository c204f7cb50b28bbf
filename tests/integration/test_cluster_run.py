"""A run on several hosts: three `mrl-node` processes on a local three-server JetStream cluster.

The cluster is three real `nats-server` processes on 127.0.0.1 free ports, routed to each
other, with the run's per-writer users (`mrl_actors.see.auth`: admin, reader, one `node-<name>` per
node) rendered with `mrl_actors.see.natsconf`; the run's stream has three replicas. Each server and
each node is stopped by its PID. Checked: a placed spec runs to completion on three nodes and
`mrl report --server` rebuilds its summary from the log; SIGKILL of the stream's leader server
mid-run does not stop the run; a SIGKILLed node restarted resumes and finishes; in every case
each policy takes steps 1..N exactly once and no stream sequence is consumed twice.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import helpers.cluster as hc
import pytest
from helpers.specs import TINY32, slots, spec_toml

from mrl_actors import events as ev
from mrl_actors.see.auth import ADMIN, READER

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEPS = 4
# node -> the policies it may host (its user's rights); h3 is the extra node: no slot in the
# spec's placement, llama's learner slot when a newer epoch moves it there
NODES = {"h1": ["gpt2"], "h2": ["llama"], "h3": ["llama"]}


def spec_text(models_dir: Path, urls: str, steps: int = STEPS) -> str:
    return spec_toml(
        models_dir,
        run={"name": hc.RUN, "probe": "independent", "steps": steps},
        server={"url": urls, "replicas": 3, "max_bytes": 268435456},
        placement=slots(("h1", "cpu:0", "gpt2", "learner"), ("h2", "cpu:0", "llama", "learner")),
        tiny=TINY32,
    )


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[hc.Cluster]:
    with hc.running_cluster(tmp_path, NODES) as c:
        yield c


def _check_whole_run(records: list[Any]) -> None:
    """Every policy took steps 1..N exactly once; no sequence was consumed twice; the run's
    start events are in the log once each."""
    consumed: list[int] = []
    for p in hc.POLICIES:
        taken = hc.learner_steps(records, p)
        assert [e.step for e in taken] == list(range(1, STEPS + 1)), p
        consumed += [c.seq for e in taken for c in e.consumed]
    assert len(consumed) == len(set(consumed))  # disjoint, and none twice
    events = [r.event for r in records]
    assert sum(isinstance(e, ev.RunStarted) for e in events) == 1
    assert sum(isinstance(e, ev.PolicyRegistered) for e in events) == len(hc.POLICIES)
    placed = [e for e in events if isinstance(e, ev.SlotsAssigned)]
    assert [e.epoch for e in placed] == [1]
    assert sum(isinstance(e, ev.RunFinished) for e in events) == 1


def _write_spec(models_dir: Path, c: hc.Cluster, tmp: Path, steps: int = STEPS) -> Path:
    spec = tmp / "spec.toml"
    spec.write_text(spec_text(models_dir, c.urls(), steps))
    hc.create_stream(c, spec)
    return spec


# --------------------------------------------------------------------------- tests


def test_three_nodes_run_a_placed_spec_and_the_report_comes_from_the_log(
    cluster: hc.Cluster, models_dir: Path, model_cache: Path, tmp_path: Path
) -> None:
    spec = _write_spec(models_dir, cluster, tmp_path)
    records = hc.run_nodes(cluster, NODES, hc.start_node, spec, tmp_path, model_cache)
    _check_whole_run(records)
    events = [r.event for r in records]
    joined = {e.node: e for e in events if isinstance(e, ev.NodeJoined)}
    assert set(joined) == set(NODES) and all(j.devices == ["cpu"] for j in joined.values())
    beats = {e.node for e in events if isinstance(e, ev.NodeHeartbeat)}
    assert {"h1", "h2"} <= beats  # the learners' nodes ran for seconds at a 1 s interval
    for p, node in (("gpt2", "h1"), ("llama", "h2")):  # each policy learned where it was placed
        step = tmp_path / node / "checkpoints" / p / f"step-{STEPS}" / "model.safetensors"
        assert step.exists()
        assert not (tmp_path / ("h2" if node == "h1" else "h1") / "checkpoints" / p).exists()

    out = tmp_path / "report"
    env = cluster.env(READER)
    cmd = [sys.executable, "-m", "mrl_actors.cli", "report", "--server", cluster.urls()]
    done = subprocess.run(
        [*cmd, "--run", hc.RUN, "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["status"] == "completed" and summary["run"]["probe"] == "independent"
    assert set(summary["policies"]) == set(hc.POLICIES)
    assert "<svg" in (out / "report.html").read_text()

    cmd = [sys.executable, "-m", "mrl_actors.cli", "status", "--server", cluster.urls()]
    shown = subprocess.run(
        [*cmd, "--run", hc.RUN, "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    status = json.loads(shown.stdout)
    assert status["finished"] and status["epoch"] == 1
    assert {n: s["state"] for n, s in status["nodes"].items()} == dict.fromkeys(NODES, "left")
    assert {p: v["version"] for p, v in status["policies"].items()} == dict.fromkeys(
        hc.POLICIES, STEPS
    )
    assert all(v["backlog"] == 0 for v in status["policies"].values())


def test_killing_the_stream_leader_mid_run_does_not_stop_the_run(
    cluster: hc.Cluster, models_dir: Path, model_cache: Path, tmp_path: Path
) -> None:
    """The stream's leader server is SIGKILLed the moment the first learner step is published
    (a core subscription sees it): the rest of the run's steps are written during and after
    the election, by clients that reconnect to the other servers and retry their publishes."""
    spec = _write_spec(models_dir, cluster, tmp_path)
    killed_ns = 0

    async def kill_leader_at_first_step() -> None:
        import nats

        nonlocal killed_ns
        nc = await nats.connect(
            cluster.urls().split(","), user=ADMIN, password=cluster.passwords[ADMIN]
        )
        try:
            sub = await nc.subscribe(f"mrl.{hc.RUN}.learner.*")
            await sub.next_msg(timeout=300)
            info = await nc.jetstream().stream_info(f"MRL_{hc.RUN}")
        finally:
            await nc.close()
        victim = cluster.by_name(str(info.cluster.leader))
        assert victim.proc is not None
        victim.proc.send_signal(signal.SIGKILL)
        killed_ns = time.time_ns()
        victim.proc.wait(timeout=10)

    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:

        async def start_and_kill() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(kill_leader_at_first_step)
                await anyio.sleep(0.5)  # subscribed before any node can take a step
                for n in NODES:
                    procs[n] = hc.start_node(cluster, spec, tmp_path, n, model_cache)

        anyio.run(start_and_kill)
        hc.wait_nodes(procs, tmp_path)
    finally:
        hc.stop_all(procs)
    records = hc.read_records(cluster)
    _check_whole_run(records)
    after = [e for p in hc.POLICIES for e in hc.learner_steps(records, p) if e.time_ns > killed_ns]
    assert len(after) >= STEPS - 1  # the run went on without the killed leader


def test_a_killed_node_restarted_resumes_and_finishes(
    cluster: hc.Cluster, models_dir: Path, model_cache: Path, tmp_path: Path
) -> None:
    """h2 is SIGKILLed by the test hook while saving llama's step-2 checkpoint (after step 2
    is logged, mid-run); restarted, it replays the log and takes steps 3 and 4 only."""
    spec = _write_spec(models_dir, cluster, tmp_path)
    procs = {n: hc.start_node(cluster, spec, tmp_path, n, model_cache) for n in ("h1", "h3")}
    try:
        procs["h2"] = hc.start_node(
            cluster, spec, tmp_path, "h2", model_cache, kill_in_save="llama/step-2"
        )
        procs["h2"].wait(timeout=400)
        assert procs["h2"].returncode == -signal.SIGKILL, (tmp_path / "h2.out").read_text()[-3000:]
        assert len(hc.learner_steps(hc.read_records(cluster), "llama")) == 2
        (tmp_path / "h2.out").rename(tmp_path / "h2-killed.out")
        procs["h2"] = hc.start_node(cluster, spec, tmp_path, "h2", model_cache)
        hc.wait_nodes(procs, tmp_path)
    finally:
        hc.stop_all(procs)
    records = hc.read_records(cluster)
    _check_whole_run(records)
    joined = [r.event for r in records if isinstance(r.event, ev.NodeJoined)]
    assert sorted(j.node for j in joined) == ["h1", "h2", "h2", "h3"]
    step2 = tmp_path / "h2" / "checkpoints" / "llama" / "step-2"
    assert (step2 / "saved.json").exists()  # the resumed actor redid the killed save


def test_a_decision_the_allocator_did_not_make_and_a_stale_epoch_change_nothing(
    cluster: hc.Cluster, models_dir: Path, model_cache: Path, tmp_path: Path
) -> None:
    """When llama's first step is published, an epoch 2 that moves llama's learner from h2 to h3
    appears on `slots.mwra` (this spec's allocator is its static placement, so no such decision
    is valid), then a late epoch-1 assignment. Every node refuses the first (`mwra.validate`) and
    ignores the second: h2 keeps llama's learner, h3 hosts nothing, and llama takes steps 1..N
    once. (More steps than the other tests: h2 must not finish them all before they arrive.)"""
    steps = 2 * STEPS
    spec = _write_spec(models_dir, cluster, tmp_path, steps)

    def assigned(epoch: int, llama_on: str, tag: str) -> ev.SlotsAssigned:
        return ev.SlotsAssigned(
            run=hc.RUN,
            source="mwra",
            event_id=ev.event_id("slots", hc.RUN, "mwra", epoch, tag),
            epoch=epoch,
            assignments=[
                ev.SlotAssignment(node="h1", slot=0, policy="gpt2", role="learner"),
                ev.SlotAssignment(node=llama_on, slot=0, policy="llama", role="learner"),
            ],
            reason="test",
        )

    async def move_at_first_llama_step() -> None:
        import nats

        from mrl_actors.see import EventLog

        nc = await nats.connect(
            cluster.urls().split(","), user=ADMIN, password=cluster.passwords[ADMIN]
        )
        try:
            sub = await nc.subscribe(f"mrl.{hc.RUN}.learner.llama")
            await sub.next_msg(timeout=300)
            log = await EventLog.open(nc, hc.RUN, create=False)
            await log.append(assigned(2, "h3", "move"))
            await log.append(assigned(1, "h2", "stale"))
        finally:
            await nc.close()

    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:

        async def start_and_move() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(move_at_first_llama_step)
                await anyio.sleep(0.5)  # subscribed before any node can take a step
                for n in NODES:
                    procs[n] = hc.start_node(cluster, spec, tmp_path, n, model_cache)

        anyio.run(start_and_move)
        hc.wait_nodes(procs, tmp_path)
    finally:
        hc.stop_all(procs)
    records = hc.read_records(cluster)
    consumed = []
    for p in hc.POLICIES:
        assert [e.step for e in hc.learner_steps(records, p)] == list(range(1, steps + 1))
        consumed += [c.seq for e in hc.learner_steps(records, p) for c in e.consumed]
    assert len(consumed) == len(set(consumed))
    epochs = [r.event.epoch for r in records if isinstance(r.event, ev.SlotsAssigned)]
    assert epochs == [1, 2, 1]  # the spec's, the forged move, the stale one: all in the log
    h2 = (tmp_path / "h2.out").read_text()
    h3 = (tmp_path / "h3.out").read_text()
    assert '"assignment_refused"' in h2 and '"actor_stopped"' not in h2
    assert '"actor_started"' not in h3
    final = tmp_path / "h2" / "checkpoints" / "llama" / f"step-{steps}" / "model.safetensors"
    assert final.exists()  # llama's steps were all taken on h2, as placed
    beats = [r.event for r in records if isinstance(r.event, ev.NodeHeartbeat)]
    assert max(b.epoch for b in beats if b.node == "h3") <= 1
