"""Open a run's log from where a person points: a run directory or a server URL.

A run directory connects to its live server (`server.json`) or starts an embedded one on its
store (`mrl_actors.server.open_run_dir`). A URL connects with credentials from `MRL_NATS_*`.
The run is the one named, else the one in `server.json`, else the only run on the server.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mrl_actors.connection import ConnectionConfig, connect
from mrl_actors.errors import LogError
from mrl_actors.see.stream import EventLog, LogConfig
from mrl_actors.server import open_run_dir


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


@asynccontextmanager
async def open_log(
    *,
    run_dir: str | os.PathLike[str] | None = None,
    server: str | None = None,
    run: str | None = None,
    config: LogConfig | None = None,
) -> AsyncIterator[EventLog]:
    if (run_dir is None) == (server is None):
        raise LogError("give either a run directory or --server URL")
    if server is not None:
        nc = await connect(ConnectionConfig.from_env(url=server))
        try:
            yield await EventLog.open(nc, await _pick_run(nc, run), config, create=False)
        finally:
            await nc.close()
        return
    assert run_dir is not None
    async with open_run_dir(run_dir) as info:
        nc = await connect(ConnectionConfig(url=info.url, token=info.token))
        try:
            name = await _pick_run(nc, run or info.run or None)
            yield await EventLog.open(nc, name, config, create=False)
        finally:
            await nc.close()
