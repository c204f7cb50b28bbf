"""Open a run's log from where a person or a process points: a run directory or a server URL.

This is the one way to open a log (`mrl run`, `mrl-node`, `mrl log` and the tests use it). A
run directory connects to its live server (`server.json`) as one of its users, or starts an
embedded one on its store (`mrl_actors.see.server.open_run_dir`). A URL connects with credentials
from `MRL_NATS_*`. The run is the one named, else the one in `server.json`, else the only run on
the server.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio

from mrl_actors.errors import LogError
from mrl_actors.see.auth import ADMIN
from mrl_actors.see.config import LogConfig
from mrl_actors.see.connection import ConnectionConfig, connect
from mrl_actors.see.server import ServerInfo, open_run_dir
from mrl_actors.see.stream import EventLog


async def list_runs(nc: Any) -> list[str]:
    """Run ids with a stream on this server (`MRL_<run>`, blob buckets excluded)."""
    names = await nc.jetstream().streams_info()
    return sorted(
        s.config.name.removeprefix("MRL_") for s in names if s.config.name.startswith("MRL_")
    )


async def _pick_run(nc: Any, run: str | None) -> str:
    if run:
        return run
    runs = await list_runs(nc)
    if len(runs) != 1:
        raise LogError(f"say which run with --run: this server holds {runs or 'no runs'}")
    return runs[0]


def spec_log_config(server: Any) -> LogConfig:
    """The stream settings a spec's `[server]` section (`spec.ServerSection`) asks for."""
    return LogConfig(
        replicas=server.replicas,
        max_bytes=server.max_bytes,
        max_msgs=server.max_msgs,
        max_age_s=server.max_age_s,
    )


@asynccontextmanager
async def open_log(
    *,
    run_dir: str | os.PathLike[str] | None = None,
    server: str | None = None,
    info: ServerInfo | None = None,
    run: str | None = None,
    config: LogConfig | None = None,
    user: str = ADMIN,
    policies: Sequence[str] = (),
    create: bool = False,
    on_lost: Callable[[str], None] | None = None,
) -> AsyncIterator[EventLog]:
    """The run's `EventLog` for as long as the context lasts (its connection closes after).

    Where: a run directory, a server URL, or `info`, a server already open (`open_run_dir`,
    `serve_run_dir`): exactly one. `user` picks the run directory server's user (`admin`,
    `reader`, `policy-<name>`; `policies` are the users to create if an embedded server must be
    started); by URL the user is whoever `MRL_NATS_*` says. `create` makes the stream if missing
    (admin only), with a blob bucket for each of `policies` (by default, on a server this
    project started, the policies it has users for). `on_lost(reason)` is called if the server
    goes away for good.
    """
    if sum(x is not None for x in (run_dir, server, info)) != 1:
        raise LogError("give either a run directory or --server URL")
    if server is not None:
        cfg = ConnectionConfig.from_env(url=server)
        async with _opened(cfg, run, config, create, on_lost, policies) as log:
            yield log
    elif info is not None:
        names = policies or _policies_of(info)
        cfg = info.client(user)
        async with _opened(cfg, run or info.run, config, create, on_lost, names) as log:
            yield log
    else:
        assert run_dir is not None
        async with open_run_dir(run_dir, run=run or "", policies=policies) as found:
            cfg = found.client(user)
            names = policies or _policies_of(found)
            async with _opened(cfg, run or found.run, config, create, on_lost, names) as log:
                yield log


def _policies_of(info: ServerInfo) -> list[str]:
    """The policies a server started by this project has a user for (`policy-<name>`)."""
    return [u.removeprefix("policy-") for u in info.users if u.startswith("policy-")]


@asynccontextmanager
async def _opened(
    cfg: ConnectionConfig,
    run: str | None,
    config: LogConfig | None,
    create: bool,
    on_lost: Callable[[str], None] | None,
    policies: Sequence[str] = (),
) -> AsyncIterator[EventLog]:
    nc = await connect(cfg, on_lost=on_lost)
    try:
        name = await _pick_run(nc, run)
        yield await EventLog.open(nc, name, config, create=create, policies=policies)
    finally:
        with anyio.CancelScope(shield=True):
            await nc.close()


@asynccontextmanager
async def ends_if_server_lost(hint: str) -> AsyncIterator[Callable[[str], None]]:
    """Run the body until a connection opened with the yielded `on_lost` loses its server;
    then cancel the body and raise one `LogError` that says so and `hint` (what to do next)."""
    lost: list[str] = []
    with anyio.CancelScope() as scope:

        def on_lost(reason: str) -> None:
            lost.append(reason)
            scope.cancel()

        try:
            yield on_lost
        except Exception as exc:
            if lost:  # whatever failed on the way down failed because the server was gone
                raise LogError(f"{lost[0]}; {hint}") from exc
            raise
    if lost:
        raise LogError(f"{lost[0]}; {hint}")
