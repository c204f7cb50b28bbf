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
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from mrl_actors import events as ev
from mrl_actors.see.auth import (
    ADMIN,
    READER,
    admin_permissions,
    node_permissions,
    reader_permissions,
)
from mrl_actors.see.natsconf import quote, users_block
from mrl_actors.see.server import free_port, nats_server_binary

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUN = "t-cluster"
POLICIES = ("gpt2", "llama")
STEPS = 4
# node -> the policies it may host (its user's rights); h3 is the extra node: no slot in the
# spec's placement, llama's learner slot when a newer epoch moves it there
NODES = {"h1": ["gpt2"], "h2": ["llama"], "h3": ["llama"]}


def spec_text(models_dir: Path, urls: str, steps: int = STEPS) -> str:
    policies = ""
    for name, model in (("gpt2", "gpt2"), ("llama", "mistral-7b")):
        policies += f"""
[[policies]]
name = "{name}"
model = "{models_dir / model}"
tiny = {{ hidden_size = 32, layers = 1, heads = 2, warm_start_steps = 20 }}
[policies.engine.sampling]
max_new_tokens = 4
"""
    return f"""
[run]
name = "{RUN}"
probe = "independent"
steps = {steps}
prompts_per_step = 2
group_size = 2
eval_every = {steps}
eval_size = 4
checkpoint_every = 2

[server]
url = "{urls}"
replicas = 3
max_bytes = 268435456

[[placement.slots]]
node = "h1"
slot = "cpu:0"
policy = "gpt2"
role = "learner"

[[placement.slots]]
node = "h2"
slot = "cpu:0"
policy = "llama"
role = "learner"
{policies}"""


# --------------------------------------------------------------------------- the cluster


@dataclass
class Server:
    name: str
    port: int
    cluster_port: int
    monitor_port: int
    proc: subprocess.Popen[bytes] | None = None


@dataclass
class Cluster:
    servers: list[Server]
    passwords: dict[str, str]
    logs: list[Path] = field(default_factory=list)

    def urls(self) -> str:
        return ",".join(f"nats://127.0.0.1:{s.port}" for s in self.servers)

    def env(self, user: str) -> dict[str, str]:
        return {
            **os.environ,
            "MRL_NATS_URL": self.urls(),
            "MRL_NATS_USER": user,
            "MRL_NATS_PASSWORD": self.passwords[user],
        }

    def by_name(self, name: str) -> Server:
        return next(s for s in self.servers if s.name == name)


def render(s: Server, peers: list[Server], store: Path, users: dict[str, Any]) -> str:
    routes = ", ".join(quote(f"nats-route://127.0.0.1:{p.cluster_port}") for p in peers)
    return (
        f"server_name: {quote(s.name)}\n"
        f"listen: {quote(f'127.0.0.1:{s.port}')}\n"
        f"http: {quote(f'127.0.0.1:{s.monitor_port}')}\n"
        "max_payload: 8388608\n"
        + users_block(users)
        + f"jetstream {{ store_dir: {quote(str(store))}, max_file_store: 2147483648,"
        " max_memory_store: 268435456 }\n"
        f"cluster {{ name: {quote('mrl-test')}, listen: {quote(f'127.0.0.1:{s.cluster_port}')},"
        f" routes: [{routes}] }}\n"
    )


def _get_json(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            data: dict[str, Any] = json.loads(response.read())
            return data
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path, NODES) as c:
        yield c


@contextmanager
def running_cluster(tmp_path: Path, nodes: dict[str, list[str]]) -> Iterator[Cluster]:
    """Three routed JetStream servers with the run's users (a `node-<name>` per entry of
    `nodes`, hosting its policies); ready when every server has both routes and reports healthy
    (JetStream meta leader elected)."""
    import secrets

    servers = [Server(f"s{i}", free_port(), free_port(), free_port()) for i in (1, 2, 3)]
    roles = {ADMIN: admin_permissions(), READER: reader_permissions(RUN)}
    for node, hosted in nodes.items():
        roles[f"node-{node}"] = node_permissions(
            RUN, node, hosted, list(POLICIES), user=f"node-{node}"
        )
    passwords = {name: secrets.token_urlsafe(18) for name in roles}
    users = {name: (passwords[name], perms) for name, perms in roles.items()}
    c = Cluster(servers, passwords)
    binary = nats_server_binary()
    try:
        for s in servers:
            conf = tmp_path / f"{s.name}.conf"
            conf.write_text(render(s, servers, tmp_path / "js" / s.name, users))
            conf.chmod(0o600)
            log = tmp_path / f"{s.name}.log"
            c.logs.append(log)
            with log.open("wb") as out:
                s.proc = subprocess.Popen(
                    [binary, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT
                )
        deadline = time.monotonic() + 60
        while True:
            assert all(s.proc and s.proc.poll() is None for s in servers), "a server exited"
            routes = [_get_json(f"http://127.0.0.1:{s.monitor_port}/routez") for s in servers]
            health = [_get_json(f"http://127.0.0.1:{s.monitor_port}/healthz") for s in servers]
            if all(r and r.get("num_routes", 0) >= 2 for r in routes) and all(
                h and h.get("status") == "ok" for h in health
            ):
                break
            assert time.monotonic() < deadline, f"cluster not ready: {routes} {health}"
            time.sleep(0.25)
        yield c
    finally:
        for s in servers:
            _stop(s.proc)


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mrl-cache")


def _create_stream(c: Cluster, spec_path: Path) -> None:
    """The operator's one step as admin: the run's replicated stream and blob bucket."""
    from mrl_actors.see.access import open_log, spec_log_config
    from mrl_actors.spec import load_spec

    spec, _ = load_spec(spec_path)

    async def create() -> None:
        os.environ.update(
            MRL_NATS_USER=ADMIN, MRL_NATS_PASSWORD=c.passwords[ADMIN]
        )  # by URL, credentials come from the environment
        try:
            async with open_log(
                server=c.urls(), run=RUN, config=spec_log_config(spec.server), create=True
            ):
                pass
        finally:
            os.environ.pop("MRL_NATS_USER")
            os.environ.pop("MRL_NATS_PASSWORD")

    anyio.run(create)


def _start_node(
    c: Cluster,
    spec: Path,
    tmp: Path,
    node: str,
    cache: Path,
    *,
    kill_in_save: str = "",
    slots: str = "cpu:1",
) -> subprocess.Popen[bytes]:
    env = {**c.env(f"node-{node}"), "MRL_CACHE_DIR": str(cache)}
    if kill_in_save:
        env["MRL_TEST_KILL_IN_SAVE"] = kill_in_save
    cmd = [sys.executable, "-m", "mrl_actors.cli.mrl_node", str(spec), "--node", node]
    cmd += ["--run-dir", str(tmp / node), "--server", c.urls(), "--slots", slots]
    cmd += ["--liveness-s", "1"]
    log = (tmp / f"{node}.out").open("wb")
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait(procs: dict[str, subprocess.Popen[bytes]], tmp: Path, timeout: float = 400) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(p.poll() is None for p in procs.values()):
        if any(p.poll() not in (None, 0) for p in procs.values()):
            break  # one failed: the others may wait for it forever
        time.sleep(0.5)
    for name, p in procs.items():
        out = (tmp / f"{name}.out").read_text(errors="replace")[-3000:]
        assert p.poll() in (None, 0), f"node {name} exited {p.returncode}:\n{out}"
    for name, p in procs.items():
        out = (tmp / f"{name}.out").read_text(errors="replace")[-3000:]
        assert p.poll() is not None, f"node {name} still running after {timeout}s:\n{out}"


def _stop_all(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for p in procs.values():
        if p.poll() is None:
            p.kill()
            p.wait(timeout=30)


def _events(c: Cluster) -> list[Any]:
    from mrl_actors.see import EventLog
    from mrl_actors.see.connection import ConnectionConfig, connect

    async def read() -> list[Any]:
        cfg = ConnectionConfig(url=c.urls(), user=READER, password=c.passwords[READER])
        nc = await connect(cfg)
        try:
            log = await EventLog.open(nc, RUN, create=False)
            return [rec async for rec in log.read(start_seq=1)]
        finally:
            await nc.close()

    return anyio.run(read)


def _steps(records: list[Any], policy: str) -> list[ev.LearnerStepCompleted]:
    return [
        r.event
        for r in records
        if isinstance(r.event, ev.LearnerStepCompleted) and r.event.policy == policy
    ]


def _check_whole_run(records: list[Any]) -> None:
    """Every policy took steps 1..N exactly once; no sequence was consumed twice; the run's
    start events are in the log once each."""
    consumed: list[int] = []
    for p in POLICIES:
        taken = _steps(records, p)
        assert [e.step for e in taken] == list(range(1, STEPS + 1)), p
        consumed += [c.seq for e in taken for c in e.consumed]
    assert len(consumed) == len(set(consumed))  # disjoint, and none twice
    events = [r.event for r in records]
    assert sum(isinstance(e, ev.RunStarted) for e in events) == 1
    assert sum(isinstance(e, ev.PolicyRegistered) for e in events) == len(POLICIES)
    placed = [e for e in events if isinstance(e, ev.SlotsAssigned)]
    assert [e.epoch for e in placed] == [1]
    assert sum(isinstance(e, ev.RunFinished) for e in events) == 1


def _write_spec(models_dir: Path, c: Cluster, tmp: Path, steps: int = STEPS) -> Path:
    spec = tmp / "spec.toml"
    spec.write_text(spec_text(models_dir, c.urls(), steps))
    _create_stream(c, spec)
    return spec


# --------------------------------------------------------------------------- tests


def test_three_nodes_run_a_placed_spec_and_the_report_comes_from_the_log(
    cluster: Cluster, models_dir: Path, model_cache: Path, tmp_path: Path
) -> None:
    spec = _write_spec(models_dir, cluster, tmp_path)
    procs = {n: _start_node(cluster, spec, tmp_path, n, model_cache) for n in NODES}
    try:
        _wait(procs, tmp_path)
    finally:
        _stop_all(procs)
    records = _events(cluster)
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
        [*cmd, "--run", RUN, "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["status"] == "completed" and summary["run"]["probe"] == "independent"
    assert set(summary["policies"]) == set(POLICIES)
    assert "<svg" in (out / "report.html").read_text()

    cmd = [sys.executable, "-m", "mrl_actors.cli", "status", "--server", cluster.urls()]
    shown = subprocess.run(
        [*cmd, "--run", RUN, "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    status = json.loads(shown.stdout)
    assert status["finished"] and status["epoch"] == 1
    assert {n: s["state"] for n, s in status["nodes"].items()} == dict.fromkeys(NODES, "left")
    assert {p: v["version"] for p, v in status["policies"].items()} == dict.fromkeys(
        POLICIES, STEPS
    )
    assert all(v["backlog"] == 0 for v in status["policies"].values())


def test_killing_the_stream_leader_mid_run_does_not_stop_the_run(
    cluster: Cluster, models_dir: Path, model_cache: Path, tmp_path: Path
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
            sub = await nc.subscribe(f"mrl.{RUN}.learner.*")
            await sub.next_msg(timeout=300)
            info = await nc.jetstream().stream_info(f"MRL_{RUN}")
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
                    procs[n] = _start_node(cluster, spec, tmp_path, n, model_cache)

        anyio.run(start_and_kill)
        _wait(procs, tmp_path)
    finally:
        _stop_all(procs)
    records = _events(cluster)
    _check_whole_run(records)
    after = [e for p in POLICIES for e in _steps(records, p) if e.time_ns > killed_ns]
    assert len(after) >= STEPS - 1  # the run went on without the killed leader


def test_a_killed_node_restarted_resumes_and_finishes(
    cluster: Cluster, models_dir: Path, model_cache: Path, tmp_path: Path
) -> None:
    """h2 is SIGKILLed by the test hook while saving llama's step-2 checkpoint (after step 2
    is logged, mid-run); restarted, it replays the log and takes steps 3 and 4 only."""
    spec = _write_spec(models_dir, cluster, tmp_path)
    procs = {n: _start_node(cluster, spec, tmp_path, n, model_cache) for n in ("h1", "h3")}
    try:
        procs["h2"] = _start_node(
            cluster, spec, tmp_path, "h2", model_cache, kill_in_save="llama/step-2"
        )
        procs["h2"].wait(timeout=400)
        assert procs["h2"].returncode == -signal.SIGKILL, (tmp_path / "h2.out").read_text()[-3000:]
        assert len(_steps(_events(cluster), "llama")) == 2
        (tmp_path / "h2.out").rename(tmp_path / "h2-killed.out")
        procs["h2"] = _start_node(cluster, spec, tmp_path, "h2", model_cache)
        _wait(procs, tmp_path)
    finally:
        _stop_all(procs)
    records = _events(cluster)
    _check_whole_run(records)
    joined = [r.event for r in records if isinstance(r.event, ev.NodeJoined)]
    assert sorted(j.node for j in joined) == ["h1", "h2", "h2", "h3"]
    step2 = tmp_path / "h2" / "checkpoints" / "llama" / "step-2"
    assert (step2 / "saved.json").exists()  # the resumed actor redid the killed save


def test_a_newer_epoch_moves_an_actor_and_an_older_one_is_ignored(
    cluster: Cluster, models_dir: Path, model_cache: Path, tmp_path: Path
) -> None:
    """When llama's first step is published, epoch 2 moves llama's learner from h2 to h3; then a
    late epoch-1 assignment that would give it back to h2 arrives. h2 stops its actor, h3 starts
    one that resumes from the log, the stale epoch changes nothing; llama takes steps 1..N once.
    (More steps than the other tests: h2 must not finish them all before it sees the move.)"""
    steps = 2 * STEPS
    spec = _write_spec(models_dir, cluster, tmp_path, steps)

    def assigned(epoch: int, llama_on: str, tag: str) -> ev.SlotsAssigned:
        return ev.SlotsAssigned(
            run=RUN,
            source="mwra",
            event_id=ev.event_id("slots", RUN, "mwra", epoch, tag),
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
            sub = await nc.subscribe(f"mrl.{RUN}.learner.llama")
            await sub.next_msg(timeout=300)
            log = await EventLog.open(nc, RUN, create=False)
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
                    procs[n] = _start_node(cluster, spec, tmp_path, n, model_cache)

        anyio.run(start_and_move)
        _wait(procs, tmp_path)
    finally:
        _stop_all(procs)
    records = _events(cluster)
    consumed = []
    for p in POLICIES:
        assert [e.step for e in _steps(records, p)] == list(range(1, steps + 1))
        consumed += [c.seq for e in _steps(records, p) for c in e.consumed]
    assert len(consumed) == len(set(consumed))
    epochs = [r.event.epoch for r in records if isinstance(r.event, ev.SlotsAssigned)]
    assert epochs == [1, 2, 1]  # the spec's, the move, the stale one (ignored by every node)
    h2 = (tmp_path / "h2.out").read_text()
    h3 = (tmp_path / "h3.out").read_text()
    assert '"actor_stopped"' in h2 and '"assignment_ignored"' in h2
    assert '"actor_started"' in h3
    final = tmp_path / "h3" / "checkpoints" / "llama" / f"step-{steps}" / "model.safetensors"
    assert final.exists()  # llama's last steps were taken on h3
    beats = [r.event for r in records if isinstance(r.event, ev.NodeHeartbeat)]
    assert max(b.epoch for b in beats if b.node == "h3") == 2
