"""A local three-server JetStream cluster for tests, and `mrl-node` processes on it.

Three real `nats-server` processes on 127.0.0.1 free ports, routed to each other, with the run's
per-writer users (`mrl_actors.see.auth`: admin, reader, one `node-<name>` per node) rendered with
`mrl_actors.see.natsconf`. Every server and node is stopped by its PID; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from mrl_actors import events as ev
from mrl_actors.see import EventLog
from mrl_actors.see.access import open_log, spec_log_config
from mrl_actors.see.auth import (
    ADMIN,
    READER,
    admin_permissions,
    node_permissions,
    reader_permissions,
)
from mrl_actors.see.connection import ConnectionConfig, connect
from mrl_actors.see.natsconf import quote, users_block
from mrl_actors.see.server import free_port, nats_server_binary
from mrl_actors.spec import load_spec

RUN = "t-cluster"
POLICIES = ("gpt2", "llama")


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


def get_json(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            data: dict[str, Any] = json.loads(response.read())
            return data
    except (urllib.error.URLError, OSError, ValueError):
        return None


class ServerExited(AssertionError):
    """A server of the cluster exited while it was starting."""


def wait_ready(
    monitor_ports: list[int], procs: list[subprocess.Popen[bytes] | None], timeout: float = 60
) -> None:
    """Until every server routes to both peers and reports healthy (a JetStream meta leader)."""
    deadline = time.monotonic() + timeout
    while True:
        if not all(p is not None and p.poll() is None for p in procs):
            raise ServerExited("a server exited")
        routes = [get_json(f"http://127.0.0.1:{port}/routez") for port in monitor_ports]
        health = [get_json(f"http://127.0.0.1:{port}/healthz") for port in monitor_ports]
        if all(r and r.get("num_routes", 0) >= 2 for r in routes) and all(
            h and h.get("status") == "ok" for h in health
        ):
            return
        assert time.monotonic() < deadline, f"cluster not ready: {routes} {health}"
        time.sleep(0.25)


@dataclass
class Started:
    procs: list[subprocess.Popen[bytes]]
    monitor_ports: list[int]
    logs: list[Path]


def start_ready(launch: Callable[[], Started], attempts: int = 3) -> Started:
    """`launch()` until its servers are ready: it picks fresh ports each time, since a port
    `free_port` found free can be taken (by another test worker) before the server binds it.
    Only that clash is retried; any other exit fails with the servers' logs."""
    for attempt in range(1, attempts + 1):
        started = launch()
        try:
            wait_ready(started.monitor_ports, list(started.procs))
            return started
        except BaseException as exc:
            for proc in started.procs:
                stop(proc)
            if not isinstance(exc, ServerExited):
                raise
            logs = "\n".join(
                f"--- {log.name}\n{log.read_text(errors='replace')[-1500:]}"
                for log in started.logs
                if log.exists()
            )
            if "address already in use" not in logs or attempt == attempts:
                raise ServerExited(
                    f"a server exited (try {attempt}); the logs end:\n{logs}"
                ) from None
    raise AssertionError("unreachable")


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextmanager
def running_cluster(tmp_path: Path, nodes: dict[str, list[str]]) -> Iterator[Cluster]:
    """Three routed JetStream servers with the run's users (a `node-<name>` per entry of
    `nodes`, hosting its policies); ready when every server has both routes and reports healthy
    (JetStream meta leader elected)."""
    roles = {ADMIN: admin_permissions(), READER: reader_permissions(RUN)}
    for node, hosted in nodes.items():
        roles[f"node-{node}"] = node_permissions(
            RUN, node, hosted, list(POLICIES), user=f"node-{node}"
        )
    passwords = {name: secrets.token_urlsafe(18) for name in roles}
    users = {name: (passwords[name], perms) for name, perms in roles.items()}
    binary = nats_server_binary()
    servers: list[Server] = []

    def launch() -> Started:
        servers[:] = [Server(f"s{i}", free_port(), free_port(), free_port()) for i in (1, 2, 3)]
        shutil.rmtree(tmp_path / "js", ignore_errors=True)  # nothing of a failed try's state
        started = Started([], [s.monitor_port for s in servers], [])
        for s in servers:
            conf = tmp_path / f"{s.name}.conf"
            conf.write_text(render(s, servers, tmp_path / "js" / s.name, users))
            conf.chmod(0o600)
            log = tmp_path / f"{s.name}.log"
            started.logs.append(log)
            with log.open("wb") as out:
                s.proc = subprocess.Popen(
                    [binary, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT
                )
            started.procs.append(s.proc)
        return started

    started = start_ready(launch)
    c = Cluster(servers, passwords, started.logs)
    try:
        yield c
    finally:
        for s in servers:
            stop(s.proc)


def create_stream(c: Cluster, spec_path: Path) -> None:
    """The operator's one step as admin: the run's replicated stream and blob buckets."""
    spec, _ = load_spec(spec_path)

    async def create() -> None:
        os.environ.update(
            MRL_NATS_USER=ADMIN, MRL_NATS_PASSWORD=c.passwords[ADMIN]
        )  # by URL, credentials come from the environment
        try:
            async with open_log(
                server=c.urls(),
                run=RUN,
                config=spec_log_config(spec.server),
                create=True,
                policies=[p.name for p in spec.policies],  # each gets its blob bucket
            ):
                pass
        finally:
            os.environ.pop("MRL_NATS_USER")
            os.environ.pop("MRL_NATS_PASSWORD")

    anyio.run(create)


def start_node(
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


def wait_nodes(procs: dict[str, subprocess.Popen[bytes]], tmp: Path, timeout: float = 400) -> None:
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


def stop_all(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for p in procs.values():
        if p.poll() is None:
            p.kill()
            p.wait(timeout=30)


def read_records(c: Cluster) -> list[Any]:
    async def read() -> list[Any]:
        cfg = ConnectionConfig(url=c.urls(), user=READER, password=c.passwords[READER])
        nc = await connect(cfg)
        try:
            log = await EventLog.open(nc, RUN, create=False)
            return [rec async for rec in log.read(start_seq=1)]
        finally:
            await nc.close()

    return anyio.run(read)


def learner_steps(records: list[Any], policy: str) -> list[ev.LearnerStepCompleted]:
    return [
        r.event
        for r in records
        if isinstance(r.event, ev.LearnerStepCompleted) and r.event.policy == policy
    ]


def run_nodes(c: Cluster, nodes: Any, start: Any, spec: Path, tmp: Path, cache: Path) -> list[Any]:
    """Start `start(c, spec, tmp, node, cache)` for each node, wait until all have exited (0),
    stop any left, and read the run's records back."""
    procs = {n: start(c, spec, tmp, n, cache) for n in nodes}
    try:
        wait_nodes(procs, tmp)
    finally:
        stop_all(procs)
    return read_records(c)
