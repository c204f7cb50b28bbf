"""The embedded nats-server: loopback, per-writer users, durable store, clean stop by pid;
configs rendered from checked values only."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from mrl_actors.errors import ServerError
from mrl_actors.see.connection import ConnectionConfig, connect
from mrl_actors.see.server import (
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


async def test_a_user_is_required_and_stop_ends_the_process(tmp_path: Path) -> None:
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
        # refused at once, not after the retries a server that is not up yet gets
        with pytest.raises(ServerError, match="refused the connection"):
            await connect(ConnectionConfig(url=srv.url, connect_timeout=1))
        with pytest.raises(ServerError, match="refused the connection"):
            await connect(ConnectionConfig(url=srv.url, token="wrong", connect_timeout=1))
        with pytest.raises(ServerError, match="refused the connection"):
            wrong = ConnectionConfig(url=srv.url, user="admin", password="x", connect_timeout=1)
            await connect(wrong)
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
    from mrl_actors.see.auth import run_permissions
    from mrl_actors.see.natsconf import password_variable

    env = {**os.environ, "MRL_STORE": str(tmp_path)}
    for user in [*run_permissions("demo", ["qwen", "llama"]), "node-host1"]:
        env[password_variable(user)] = "pw"
    _check_config(conf, env)


async def test_a_recorded_pid_counts_only_while_it_is_our_server(tmp_path: Path) -> None:
    """pids get reused: `server.json`'s pid is trusted only if it is nats-server on this store."""
    from mrl_actors.see.server import serves

    async with EmbeddedServer(tmp_path / "a" / "nats") as srv:
        assert serves(srv.pid, tmp_path / "a" / "nats")
        assert not serves(srv.pid, tmp_path / "b" / "nats")  # someone else's store
        pid = srv.pid
    assert not serves(os.getpid(), tmp_path / "a" / "nats")  # alive, but not a nats-server
    assert not serves(pid, tmp_path / "a" / "nats")  # stopped


def _check_config(conf: Path, env: dict[str, str] | None = None) -> None:
    """nats-server's own check of a config file (`-t`) passes."""
    out = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert out.returncode == 0 and "is valid" in out.stdout + out.stderr, out.stderr


INJECTION = 'x" }\nhttp: "0.0.0.0:18222"\n#'  # closes the string, opens a monitoring port


def test_spec_sync_interval_is_checked_at_parse_time() -> None:
    from mrl_actors.errors import ConfigError
    from mrl_actors.spec import parse_spec

    toml = '[run]\nname = "r"\n[[policies]]\nname = "a"\nmodel = "gpt2"\n'
    toml += "[server]\nsync_interval = {}\n"
    for bad in ("2m" + INJECTION, "2 m", "2d", "", "always; http: 1"):
        with pytest.raises(ConfigError, match="sync_interval"):
            parse_spec(toml.format(json.dumps(bad)))
    for good in ("2m", "always", "1m30s", "500ms"):
        assert parse_spec(toml.format(json.dumps(good))).server.sync_interval == good


async def test_rendered_configs_are_valid_and_strings_stay_strings(tmp_path: Path) -> None:
    """A store path full of config syntax is quoted, not interpreted: the server starts on it,
    with its users, and listens only where we said."""
    from mrl_actors.errors import ConfigError
    from mrl_actors.see.auth import run_permissions
    from mrl_actors.see.server import render_config

    store = tmp_path / 'we"ird $X {}#\\ dir' / "nats"
    with pytest.raises(ConfigError, match="sync_interval"):
        EmbeddedServer(store, sync_interval="2m" + INJECTION)
    async with EmbeddedServer(store, run="r", policies=["a", "b"]) as srv:
        conf = store.resolve() / "server.conf"
        _check_config(conf)
        assert conf.read_text().count("listen:") == 1 and "http" not in conf.read_text()
        assert (store / "jetstream").is_dir()  # JetStream stores where the (odd) path says
        nc = await connect(srv.client("policy-a"))
        await nc.close()
    users = {n: ("pw", p) for n, p in run_permissions("r", ["a"]).items()}
    for bad_path in (tmp_path / "new\nline", tmp_path / "tab\there"):
        with pytest.raises(ConfigError, match="control characters"):
            render_config(
                port=4222, store_dir=bad_path, users=users, sync_interval="2m", max_payload=1
            )
    with pytest.raises(ConfigError):
        users_bad = {'admin" }': users["admin"]}
        render_config(
            port=4222, store_dir=tmp_path, users=users_bad, sync_interval="2m", max_payload=1
        )


def test_shipped_users_are_the_ones_auth_py_gives() -> None:
    """runtime/nats/users-demo.conf is generated from `mrl_actors.see.auth`; it must not drift."""
    import contextlib
    import io

    from mrl_actors.see.natsconf import main

    shipped = Path(__file__).resolve().parents[2] / "runtime" / "nats" / "users-demo.conf"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        main(["demo", "qwen", "llama", "--node", "host1=qwen,llama"])
    body = [line for line in shipped.read_text().splitlines() if not line.startswith("#")]
    assert body == buf.getvalue().splitlines()


async def test_stale_server_is_stopped_without_blocking_the_loop(tmp_path: Path) -> None:
    """A server left by a killed owner is stopped by pid; the event loop keeps running."""
    import anyio

    from mrl_actors.see.server import SERVER_INFO, stop_stale_server

    run = tmp_path / "run"
    srv = EmbeddedServer(run / "nats")
    await srv.start()
    pid = srv.pid
    write_server_info(run, srv.info(run="r"))
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.sleep(0.001)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(tick)
            await stop_stale_server(run)
            tg.cancel_scope.cancel()
        assert not (run / SERVER_INFO).exists()
        for _ in range(100):  # reaped by its parent (us) once stopped
            if srv._proc is None or srv._proc.poll() is not None:
                break
            await anyio.sleep(0.05)
        assert srv._proc is not None and srv._proc.poll() is not None
        assert ticks > 0  # the loop ran while waiting for the server to go
    finally:
        await srv.stop()
    assert not _alive(pid)


def test_mrl_node_never_prints_a_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mrl_actors.cli import mrl_node as node_cli
    from mrl_actors.see.connection import redact
    from mrl_actors.see.server import free_port

    spec = tmp_path / "spec.toml"
    spec.write_text('[run]\nname = "r"\n[[policies]]\nname = "a"\nmodel = "gpt2"\n')
    url = f"nats://someone:hunter2@127.0.0.1:{free_port()}"  # nothing listens there
    assert node_cli.main([str(spec), "--run-dir", str(tmp_path / "n"), "--server", url]) == 2
    out = capsys.readouterr()
    assert "mrl-node: error: cannot connect to NATS at nats://***@127.0.0.1:" in out.err
    assert "hunter2" not in out.err + out.out
    cfg = ConnectionConfig(url=url, user="u", password="hunter2", token="s3cr3t")
    assert "hunter2" not in repr(cfg) and "s3cr3t" not in str(cfg)
    assert redact(f"at {url}, {url}") == f"at {url.replace('someone:hunter2', '***')}, " + (
        url.replace("someone:hunter2", "***")
    )
