"""An asynchronous run on several hosts: three `mrl-node` processes on the local three-server
cluster of `test_cluster_run` (its helpers, its servers, its per-node users).

The spec's `[placement]` puts each policy's learner on its own node (h1: gpt2, h2: llama) and
both policies' rollout actors on a third (h3, two CPU slots: one rollout slot per policy); the
learner and rollout actors meet only in the replicated log (groups one way, `WeightsPublished`
the other). Checked: the run completes, `mrl report --server` builds its summary and report from
the log, and an exact replay of each policy from the log reproduces every logged weights
checksum; SIGKILL of the rollout node mid-run (restarted) or of a learner node (restarted: it
resumes from its stored checkpoint and the log's tail) leaves no partial or duplicate group in
the log; in every case each policy takes steps 1..N exactly once and no sequence is consumed
twice.
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
from helpers.specs import TINY16, slots, spec_toml

from mrl_actors import events as ev
from mrl_actors.see.auth import ADMIN, READER

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEPS = 4
GROUP_SIZE = 2
PROMPTS = 2
# node -> the policies its user may write for: a learner node per policy, the rollout node both
NODES = {"h1": ["gpt2"], "h2": ["llama"], "h3": ["gpt2", "llama"]}
SLOTS = {"h1": "cpu:1", "h2": "cpu:1", "h3": "cpu:2"}
# the learner node of each policy, and where its step-0 checkpoint is (for the replay)
LEARNER_NODE = {"gpt2": "h1", "llama": "h2"}

PLACEMENT = slots(
    ("h1", "cpu:0", "gpt2", "learner"),
    ("h2", "cpu:0", "llama", "learner"),
    ("h3", "cpu:0", "gpt2", "rollout"),
    ("h3", "cpu:1", "llama", "rollout"),
)


def spec_text(models_dir: Path, urls: str) -> str:
    return spec_toml(
        models_dir,
        run={
            "name": hc.RUN,
            "probe": "independent",
            "mode": "async",
            "rollout_replicas": 1,
            "max_staleness": 1,
            "steps": STEPS,
            "prompts_per_step": PROMPTS,
            "group_size": GROUP_SIZE,
        },
        server={"url": urls, "replicas": 3, "max_bytes": 268435456},
        placement=PLACEMENT,
        tiny=TINY16,
        grpo={
            "lr": 1e-3,
            "weight_decay": 0.1,
        },  # every step changes the weights, whatever the rewards
    )


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[hc.Cluster]:
    with hc.running_cluster(tmp_path, NODES) as c:
        yield c


def _write_spec(models_dir: Path, c: hc.Cluster, tmp: Path) -> Path:
    spec = tmp / "spec.toml"
    spec.write_text(spec_text(models_dir, c.urls()))
    hc.create_stream(c, spec)
    return spec


def _start(c: hc.Cluster, spec: Path, tmp: Path, node: str, cache: Path) -> subprocess.Popen[bytes]:
    return hc.start_node(c, spec, tmp, node, cache, slots=SLOTS[node])


def _steps(records: list[Any], policy: str) -> list[ev.LearnerStepCompleted]:
    return [
        r.event
        for r in records
        if isinstance(r.event, ev.LearnerStepCompleted) and r.event.policy == policy
    ]


def _check_async_run(records: list[Any]) -> None:
    """Each policy took steps 1..N exactly once, each from its whole prompt batch of its own
    groups; no sequence was consumed twice; every group in the log is whole and logged once;
    each group's summary logged once; one weights version per step; the run finished once."""
    by_seq = {r.seq: r.event for r in records}
    consumed: list[int] = []
    for p in hc.POLICIES:
        taken = _steps(records, p)
        assert [e.step for e in taken] == list(range(1, STEPS + 1)), p
        seqs = [c.seq for e in taken for c in e.consumed]
        own = [
            by_seq[q]
            for q in seqs
            if isinstance(by_seq[q], ev.RolloutGroupCompleted) and by_seq[q].policy == p
        ]
        assert len(own) == PROMPTS * STEPS, p
        consumed += seqs
        versions = [
            r.event.version
            for r in records
            if isinstance(r.event, ev.WeightsPublished) and r.event.policy == p
        ]
        assert versions == list(range(STEPS + 1)), p
    assert len(consumed) == len(set(consumed))  # disjoint, and none twice
    groups = [r.event for r in records if isinstance(r.event, ev.RolloutGroupCompleted)]
    assert groups and all(len(g.completions) == GROUP_SIZE for g in groups)  # no partial group
    ids = [g.event_id for g in groups]
    assert len(ids) == len(set(ids))  # no group logged twice
    summaries = [r.event for r in records if isinstance(r.event, ev.RewardSummary)]
    keys = [(s.policy, s.event_id.split("/", 3)[3]) for s in summaries]
    assert len(keys) == len(set(keys))  # each group's experience closed once, by its summary
    assert sorted(keys) == sorted((g.policy, g.event_id.split("/", 3)[3]) for g in groups)
    events = [r.event for r in records]
    assert sum(isinstance(e, ev.RunStarted) for e in events) == 1
    assert [e.epoch for e in events if isinstance(e, ev.SlotsAssigned)] == [1]
    assert sum(isinstance(e, ev.RunFinished) for e in events) == 1
    roles = {
        (e.node, e.policy, e.role)
        for e in events
        if isinstance(e, ev.SlotsAssigned)
        for e in e.assignments
    }
    assert roles == {
        ("h1", "gpt2", "learner"),
        ("h2", "llama", "learner"),
        ("h3", "gpt2", "rollout"),
        ("h3", "llama", "rollout"),
    }


def _replay_shas(
    c: hc.Cluster, spec_path: Path, tmp: Path, policy: str
) -> tuple[list[str], list[str]]:
    """Replay `policy` step by step from its learner node's `step-0` checkpoint through the
    cluster's log (as the reader); each step's checksum, and the logged ones."""
    import os

    from mrl_actors.actors.replay import learner_steps, replay
    from mrl_actors.actors.runtime import build_runtime, checkpoint_dir
    from mrl_actors.see.access import open_log
    from mrl_actors.spec import load_spec
    from mrl_actors.tasks import make_task

    spec, _ = load_spec(spec_path)
    p = next(x for x in spec.policies if x.name == policy)
    start = checkpoint_dir(tmp / LEARNER_NODE[policy], policy, 0)
    rt = build_runtime(spec, p, make_task(spec.task), weights_dir=start)

    async def each() -> tuple[list[str], list[str]]:
        shas = []
        async with open_log(server=c.urls(), run=hc.RUN) as log:
            for k in range(1, STEPS + 1):  # verify=True checks each step's logged checksum
                assert await replay(log, rt, upto=k, after=k - 1) == 1
                shas.append(rt.learner.state_dict_sha256())
            logged = [s.weights_sha256 for s in await learner_steps(log, policy)]
        return shas, logged

    os.environ.update(MRL_NATS_USER=READER, MRL_NATS_PASSWORD=c.passwords[READER])
    try:
        return anyio.run(each)
    finally:
        os.environ.pop("MRL_NATS_USER")
        os.environ.pop("MRL_NATS_PASSWORD")


def _kill_at_first(
    c: hc.Cluster,
    spec: Path,
    tmp: Path,
    cache: Path,
    subject: str,
    victim: str,
) -> int:
    """Start the three nodes; SIGKILL `victim` the moment a message on `subject` is published
    (a core subscription sees it); restart it; wait for the run's end. Returns the kill's
    wall-clock time (ns)."""
    procs: dict[str, subprocess.Popen[bytes]] = {}
    killed_ns = 0

    async def kill_at_first() -> None:
        import nats

        nonlocal killed_ns
        nc = await nats.connect(c.urls().split(","), user=ADMIN, password=c.passwords[ADMIN])
        try:
            sub = await nc.subscribe(subject)
            await sub.next_msg(timeout=300)
        finally:
            await nc.close()
        procs[victim].send_signal(signal.SIGKILL)
        killed_ns = time.time_ns()
        procs[victim].wait(timeout=30)

    async def start_and_kill() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(kill_at_first)
            await anyio.sleep(0.5)  # subscribed before any node can publish
            for n in NODES:
                procs[n] = _start(c, spec, tmp, n, cache)

    try:
        anyio.run(start_and_kill)
        assert procs[victim].returncode == -signal.SIGKILL
        (tmp / f"{victim}.out").rename(tmp / f"{victim}-killed.out")
        procs[victim] = _start(c, spec, tmp, victim, cache)
        hc.wait_nodes(procs, tmp)
    finally:
        hc.stop_all(procs)
    return killed_ns


# --------------------------------------------------------------------------- tests


def test_an_async_run_on_three_nodes_reports_and_replays_from_the_log(
    cluster: hc.Cluster, models_dir: Path, model_cache: Path, tmp_path: Path
) -> None:
    spec = _write_spec(models_dir, cluster, tmp_path)
    records = hc.run_nodes(cluster, NODES, _start, spec, tmp_path, model_cache)
    _check_async_run(records)
    for p, node in LEARNER_NODE.items():  # each learner ran (and checkpointed) where placed
        assert (tmp_path / node / "checkpoints" / p / f"step-{STEPS}").is_dir()
        assert not (tmp_path / "h3" / "checkpoints" / p / "step-1").exists()
    h3 = (tmp_path / "h3.out").read_text()
    assert h3.count('"actor_started"') == 2 and '"role": "rollout"' in h3

    out = tmp_path / "report"
    cmd = [sys.executable, "-m", "mrl_actors.cli", "report", "--server", cluster.urls()]
    done = subprocess.run(
        [*cmd, "--run", hc.RUN, "--out", str(out)],
        env=cluster.env(READER),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["status"] == "completed"
    assert set(summary["policies"]) == set(hc.POLICIES)
    assert "<svg" in (out / "report.html").read_text()

    for p in hc.POLICIES:
        shas, logged = _replay_shas(cluster, spec, tmp_path, p)
        assert shas == logged, p
        assert len(set(shas)) == STEPS  # weight decay: each version differs from the last


def test_a_killed_rollout_node_restarted_leaves_no_partial_group(
    cluster: hc.Cluster, models_dir: Path, model_cache: Path, tmp_path: Path
) -> None:
    """h3 (both policies' rollouts) is SIGKILLed when the first group is published, mid-run;
    restarted, its rollout actors go on from the log: no group is partial or logged twice."""
    spec = _write_spec(models_dir, cluster, tmp_path)
    killed = _kill_at_first(cluster, spec, tmp_path, model_cache, f"mrl.{hc.RUN}.rollout.>", "h3")
    records = hc.read_records(cluster)
    _check_async_run(records)
    for p in hc.POLICIES:  # the restarted rollout actors sampled the rest of the run
        later = [
            r.event
            for r in records
            if isinstance(r.event, ev.RolloutGroupCompleted)
            and r.event.policy == p
            and r.event.time_ns > killed
        ]
        assert later, p
    joined = sorted(r.event.node for r in records if isinstance(r.event, ev.NodeJoined))
    assert joined == ["h1", "h2", "h3", "h3"]


def test_a_killed_learner_node_restarted_resumes_from_its_checkpoint_and_the_log(
    cluster: hc.Cluster, models_dir: Path, model_cache: Path, tmp_path: Path
) -> None:
    """h1 (gpt2's learner) is SIGKILLed when gpt2's first learner step is published; restarted,
    the learner restores its newest stored checkpoint and replays the log's tail."""
    spec = _write_spec(models_dir, cluster, tmp_path)
    killed = _kill_at_first(
        cluster, spec, tmp_path, model_cache, f"mrl.{hc.RUN}.learner.gpt2", "h1"
    )
    records = hc.read_records(cluster)
    _check_async_run(records)
    taken = _steps(records, "gpt2")
    assert taken[0].time_ns < killed < taken[-1].time_ns  # killed mid-run
    restarted = [s for s in taken if "restored_from_step" in s.metrics]
    assert len(restarted) == 1 and restarted[0].step >= 2
    assert restarted[0].metrics["restored_from_step"] + restarted[0].metrics[
        "replayed_steps"
    ] == float(restarted[0].step - 1)
