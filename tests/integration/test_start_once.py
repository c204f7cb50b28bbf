"""A run's start events are written once, whoever starts first: the server checks it.

`EventLog.append_first` sends `Nats-Expected-Last-Subject-Sequence`; two starters racing (two
`mrl-node`s of one run) each write every start event at most once, and a retry of one's own
publish is answered as a duplicate, not as a conflict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from mrl_actors import events as ev
from mrl_actors.see import EventLog
from mrl_actors.see.connection import connect
from mrl_actors.see.server import EmbeddedServer

pytestmark = pytest.mark.anyio


def _started(n: int) -> ev.RunStarted:
    return ev.RunStarted(
        run="t1",
        source="mrl",
        event_id=ev.event_id("run", "t1", "mrl", "started", n),
        spec_toml="",
        seed=0,
        code_version="test",
    )


async def test_only_the_first_write_on_a_subject_lands(event_log: EventLog) -> None:
    first = await event_log.append_first(_started(1))
    assert first is not None and not first.duplicate
    assert await event_log.append_first(_started(2)) is None  # another starter's: refused
    again = await event_log.append_first(_started(1))  # our own retry: a duplicate
    assert again is not None and again.duplicate and again.seq == first.seq
    finished = ev.RunFinished(
        run="t1", source="mrl", event_id="t1/run/mrl/finished", status="completed"
    )
    assert await event_log.append_first(finished, after=first.seq) is not None
    other = ev.RunFinished(run="t1", source="mrl", event_id="t1/run/mrl/f2", status="completed")
    assert await event_log.append_first(other, after=first.seq) is None
    ids = [r.event.event_id async for r in event_log.read(start_seq=1)]
    assert ids == [_started(1).event_id, finished.event_id]


async def test_two_starters_at_once_write_each_start_event_once(
    nats_server: EmbeddedServer, models_dir: Path
) -> None:
    from mrl_actors.run.start import record_start
    from mrl_actors.spec import parse_spec

    text = f"""
[run]
name = "t2"
mode = "lockstep"
[[placement.slots]]
node = "h1"
slot = "cpu:0"
policy = "gpt2"
[[placement.slots]]
node = "h2"
slot = "cpu:0"
policy = "llama"
[[policies]]
name = "gpt2"
model = "{models_dir / "gpt2"}"
[[policies]]
name = "llama"
model = "{models_dir / "mistral-7b"}"
"""
    spec = parse_spec(text)
    # Two starters are two processes in real life; here they share one, and transformers' lazy
    # imports are not thread-safe: import before the two threads race for it.
    from transformers import AutoTokenizer  # noqa: F401

    a, b = await connect(nats_server.client()), await connect(nats_server.client())
    try:
        logs = [await EventLog.open(nc, "t2") for nc in (a, b)]

        async def start(log: Any) -> None:
            await record_start(log, spec, text)

        async with anyio.create_task_group() as tg:
            for log in logs:
                tg.start_soon(start, log)
        events = [r.event async for r in logs[0].read(start_seq=1)]
    finally:
        await a.close()
        await b.close()
    kinds = sorted(type(e).__name__ for e in events)
    assert kinds == ["PolicyRegistered", "PolicyRegistered", "RunStarted", "SlotsAssigned"]
    placed = next(e for e in events if isinstance(e, ev.SlotsAssigned))
    assert placed.epoch == 1 and [a.node for a in placed.assignments] == ["h1", "h2"]
