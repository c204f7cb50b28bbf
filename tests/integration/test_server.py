"""The embedded nats-server: loopback, token auth, durable store, clean stop by pid."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from mrl_actors.connection import ConnectionConfig, connect
from mrl_actors.errors import ServerError
from mrl_actors.server import (
    EmbeddedServer,
    ServerInfo,
    nats_server_binary,
    open_run_dir,
    write_server_info,
)

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_token_is_required_and_stop_ends_the_process(tmp_path: Path) -> None:
    srv = EmbeddedServer(tmp_path / "nats", sync_interval="always")
    await srv.start()
    pid = srv.pid
    try:
        assert srv.url.startswith("nats://127.0.0.1:") and _alive(pid)
        conf = (tmp_path / "nats" / "server.conf").read_text()
        assert (
            "sync_interval: always" in conf
            and oct((tmp_path / "nats" / "server.conf").stat().st_mode)[-3:] == "600"
        )
        with pytest.raises(ServerError):
            await connect(ConnectionConfig(url=srv.url, connect_timeout=1))
        with pytest.raises(ServerError):
            await connect(ConnectionConfig(url=srv.url, token="wrong", connect_timeout=1))
        nc = await connect(srv.client())
        assert nc.max_payload == srv.max_payload
        await nc.close()
    finally:
        await srv.stop()
    assert not _alive(pid)
    await srv.stop()  # idempotent


async def test_taken_port_is_a_server_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ServerError, match="did not start"):
            await EmbeddedServer(tmp_path / "nats", port=port, start_timeout=5).start()


async def test_open_run_dir_uses_live_server_or_starts_one(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(ServerError, match="not a run directory"):
        async with open_run_dir(run):
            pass
    async with EmbeddedServer(run / "nats") as srv:
        write_server_info(run, srv.info(run="r1"))
        first_pid = srv.pid
        async with open_run_dir(run) as info:
            assert info == ServerInfo(
                url=srv.url, users=srv.users, pid=srv.pid, run="r1", store_dir=str(srv.store_dir)
            )
    # the server is gone: server.json is stale, so an embedded server serves the store
    async with open_run_dir(run) as info:
        assert info.pid != first_pid and info.run == "r1" and _alive(info.pid)
        nc = await connect(info.client())
        await nc.close()
        started = info.pid
    assert not _alive(started)


@pytest.mark.parametrize(
    "conf",
    sorted((Path(__file__).resolve().parents[2] / "runtime" / "nats").glob("*.conf")),
    ids=lambda p: p.name,
)
def test_shipped_server_configs_are_valid(conf: Path, tmp_path: Path) -> None:
    from mrl_actors.auth import run_permissions
    from mrl_actors.natsconf import password_variable

    env = {**os.environ, "MRL_STORE": str(tmp_path)}
    for user in [*run_permissions("demo", ["qwen", "llama"]), "node-host1"]:
        env[password_variable(user)] = "pw"
    out = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert out.returncode == 0 and "is valid" in out.stdout + out.stderr, out.stderr


async def test_a_recorded_pid_counts_only_while_it_is_our_server(tmp_path: Path) -> None:
    """pids get reused: `server.json`'s pid is trusted only if it is nats-server on this store."""
    from mrl_actors.server import serves

    async with EmbeddedServer(tmp_path / "a" / "nats") as srv:
        assert serves(srv.pid, tmp_path / "a" / "nats")
        assert not serves(srv.pid, tmp_path / "b" / "nats")  # someone else's store
        pid = srv.pid
    assert not serves(os.getpid(), tmp_path / "a" / "nats")  # alive, but not a nats-server
    assert not serves(pid, tmp_path / "a" / "nats")  # stopped
