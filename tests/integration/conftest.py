"""A real `nats-server` per test: loopback, free port, temporary store, stopped by pid."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mrl_actors.events import Completion, RolloutGroupCompleted, event_id, pack_f32, pack_i32
from mrl_actors.see import EventLog, LogConfig
from mrl_actors.see.connection import connect
from mrl_actors.see.server import EmbeddedServer

pytestmark = pytest.mark.integration


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[EmbeddedServer]:
    """An embedded server on `tmp_path/nats` with a 1 MiB max payload (claim-check tests)."""
    srv = EmbeddedServer(tmp_path / "nats", max_payload=1024 * 1024)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def nc(nats_server: EmbeddedServer) -> AsyncIterator[Any]:
    client = await connect(nats_server.client())
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def event_log(nc: Any) -> EventLog:
    return await EventLog.open(nc, "t1", LogConfig())


def rollout(
    run: str, source: str, i: int, *, tokens: int = 16, group: int = 2
) -> RolloutGroupCompleted:
    """A small valid rollout group whose id and content derive from `i`."""
    rng = np.random.default_rng(i)
    comps = [
        Completion(
            token_ids=pack_i32(rng.integers(0, 50_000, tokens)),
            logprobs=pack_f32(-rng.random(tokens)),
            text=f"answer {i}.{g}",
            finish_reason="stop",
            reward=float(g % 2),
            success=bool(g % 2),
        )
        for g in range(group)
    ]
    return RolloutGroupCompleted(
        run=run,
        source=source,
        event_id=event_id("rollout", run, source, i),
        policy=source,
        policy_version=0,
        prompt_id=f"p{i}",
        prompt_text=f"prompt {i}",
        completions=comps,
    )


@pytest.fixture
def make_rollout() -> Callable[..., RolloutGroupCompleted]:
    return rollout
