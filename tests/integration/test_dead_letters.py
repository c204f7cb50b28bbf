"""Every reader turns a bad message into (at most) one dead letter and goes on; tools never fail."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from mrl_actors.cli import main
from mrl_actors.errors import LogError
from mrl_actors.events import DeadLettered, RolloutGroupCompleted
from mrl_actors.see import EventLog, LogConfig, OwnedWriter
from mrl_actors.see.connection import connect
from mrl_actors.see.deadletter import DeadLetters
from mrl_actors.see.server import EmbeddedServer

pytestmark = pytest.mark.integration
async_test = pytest.mark.anyio

MakeRollout = Callable[..., RolloutGroupCompleted]


async def _dead_letters(log: EventLog) -> list[DeadLettered]:
    return [
        r.event async for r in log.read(kinds=["deadletter"]) if isinstance(r.event, DeadLettered)
    ]


@async_test
async def test_a_reader_dead_letters_each_bad_message_once_across_restarts(
    nats_server: EmbeddedServer, make_rollout: MakeRollout
) -> None:
    nc = await connect(nats_server.client(user="admin"))
    try:
        # a 1 s duplicate window: the second life's publishes fall outside it
        log = await EventLog.open(nc, "t1", LogConfig(duplicate_window_s=1.0))
        await log.append(make_rollout("t1", "qwen", 0))
        bad = [
            (await log.js.publish("mrl.t1.rollout.qwen", b"\xa1\xff")).seq,
            (await log.js.publish("mrl.t1.rollout.qwen", b"\xc1")).seq,
        ]
        await log.append(make_rollout("t1", "qwen", 1))
        for life in range(2):
            dead = DeadLetters(log, "qwen")
            got = [r.seq async for r in log.read(kinds=["rollout"], dead_letters=dead)]
            assert got == [1, 4]
            assert dead.count == 2 and dead.by_error == {"garbage": 2}
            assert dead.published == (2 if life == 0 else 0)
            await anyio.sleep(1.2)
        letters = await _dead_letters(log)
        assert sorted(d.original_seq for d in letters) == bad
        assert {d.source for d in letters} == {"qwen"}
        assert letters[0].raw_prefix == b"\xa1\xff" and letters[0].raw_size == 2
    finally:
        await nc.close()


@async_test
async def test_a_tool_that_may_not_write_reports_and_goes_on(
    nats_server: EmbeddedServer, make_rollout: MakeRollout
) -> None:
    """A sealed stream refuses every publish: a best-effort reader counts and reads on, an
    actor's reader (whose dead letters must be stored) raises."""
    from nats.js.api import StreamConfig

    nc = await connect(nats_server.client(user="admin"))
    try:
        log = await EventLog.open(nc, "t1", LogConfig(ack_timeout_s=2.0))
        await log.append(make_rollout("t1", "qwen", 0))
        await log.js.publish("mrl.t1.node.x", b"\xa1\xff")
        await log.append(make_rollout("t1", "qwen", 1))
        info = await log.js.stream_info(log.stream)
        cfg: Any = info.config
        await log.js.update_stream(StreamConfig.from_response({**cfg.as_dict(), "sealed": True}))

        tool = DeadLetters(log, "mrl-log", best_effort=True)
        assert [r.seq async for r in log.read(dead_letters=tool)] == [1, 3]
        assert tool.count == 1 and tool.published == 0 and not tool.publish

        actor = DeadLetters(log, "qwen")
        with pytest.raises(LogError):
            async for _ in log.read(dead_letters=actor):
                pass
    finally:
        await nc.close()


@pytest.fixture
def odd_run_dir(tmp_path: Path, make_rollout: MakeRollout) -> Path:
    """A stopped run whose stream holds a three-token subject and invalid bytes on several."""

    async def build() -> None:
        async with EmbeddedServer(tmp_path / "run" / "nats") as srv:
            nc = await connect(srv.client(user="admin"))
            try:
                log = await EventLog.open(nc, "demo")
                await log.append(make_rollout("demo", "qwen", 0))
                await log.js.publish("mrl.demo.x", b"three tokens")
                await log.js.publish("mrl.demo.node.x", b"\xa1\xff")
                await log.js.publish("mrl.demo.rollout.qwen", b"\xa1\xff")
                await log.js.publish("mrl.demo.a.b.c.d", b"\x80")  # an empty map: no tag
                await log.append(make_rollout("demo", "qwen", 1))
            finally:
                await nc.close()

    anyio.run(build)
    return tmp_path / "run"


def test_log_tools_read_any_subject_shape_and_any_bytes(
    odd_run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: `mrl log stats` failed on a three-token subject; tail/export on bad bytes."""
    assert main(["log", "stats", str(odd_run_dir), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    counts = {(r["kind"], r["source"]): r["count"] for r in st["rows"]}
    assert counts[("x", "")] == 1 and counts[("a", "b.c.d")] == 1
    assert st["bad_messages"] == {"count": 4, "by_error": {"garbage": 3, "unknown_tag": 1}}

    assert main(["log", "tail", str(odd_run_dir), "--json"]) == 0
    out = capsys.readouterr()
    lines = [json.loads(x) for x in out.out.split("\n") if x]
    assert [x["event"]["type"] for x in lines[:2]] == ["RolloutGroupCompleted.v1"] * 2
    assert "skipped 4 bad message(s)" in out.err and "mrl.demo.node.x" in out.err

    assert main(["log", "export", str(odd_run_dir), "--out", str(tmp_path / "e")]) == 0
    rows = (tmp_path / "e" / "events.jsonl").read_text(encoding="utf-8").split("\n")[:-1]
    assert sum('"RolloutGroupCompleted.v1"' in r for r in rows) == 2


@async_test
async def test_a_blob_pointer_with_a_foreign_key_is_dead_lettered_without_a_fetch(
    nats_server: EmbeddedServer,
) -> None:
    """A pointer's key reaches the blob store only when it is the blob's sha256 (blobs are
    content-keyed): a key like `../x y` is refused as `schema` before any request is made."""
    import msgspec

    nc = await connect(nats_server.client(user="admin"))
    try:
        log = await EventLog.open(nc, "t1")
        ref = {"store": "object", "key": "../x y", "sha256": "0" * 64, "size": 10}
        pointer = {"type": "BlobPointer.v1", "run": "t1", "source": "qwen", "event_id": "e"}
        data = msgspec.msgpack.encode({**pointer, "kind": "rollout", "ref": ref})
        await log.js.publish("mrl.t1.rollout.qwen", data)
        dead = DeadLetters(log, "qwen")
        assert [r async for r in log.read(dead_letters=dead)] == []
        assert dead.by_error == {"schema": 1}
    finally:
        await nc.close()


@async_test
async def test_an_owned_writer_steps_over_garbage_but_not_over_another_writer(
    nats_server: EmbeddedServer, make_rollout: MakeRollout
) -> None:
    """Garbage on a policy's subject used to fail its next owned publish as a writer conflict."""
    from mrl_actors.errors import WriterConflictError

    nc = await connect(nats_server.client(user="admin"))
    try:
        log = await EventLog.open(nc, "t1")
        writer = OwnedWriter(log, "qwen")
        await writer.append(make_rollout("t1", "qwen", 0))
        await log.js.publish("mrl.t1.rollout.qwen", b"\xa1\xff")
        await log.js.publish("mrl.t1.rollout.qwen", b"\xc1")
        assert await writer.append(make_rollout("t1", "qwen", 1)) == 4
        await OwnedWriter(log, "qwen").append(make_rollout("t1", "qwen", 2))  # a second live writer
        with pytest.raises(WriterConflictError):
            await writer.append(make_rollout("t1", "qwen", 3))
    finally:
        await nc.close()
