"""The event log against a real nats-server: the guarantees the SEE promises."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from mrl_actors.errors import WriterConflictError
from mrl_actors.events import (
    BlobPointer,
    DeadLettered,
    RewardSummary,
    RolloutGroupCompleted,
    decode,
    encode,
    event_id,
    pack_f32,
)
from mrl_actors.see import Consumer, EventLog, FoldApplier, LogConfig, OwnedWriter, Record
from mrl_actors.see.connection import connect
from mrl_actors.see.server import EmbeddedServer

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

MakeRollout = Callable[..., RolloutGroupCompleted]


class CountingApplier:
    """Counts how often each event id was applied; records the last applied seq."""

    def __init__(self) -> None:
        self.last_seq = 0
        self.applied: Counter[str] = Counter()

    async def apply(self, record: Record) -> None:
        self.applied[record.event.event_id] += 1
        self.last_seq = record.seq
        await anyio.sleep(0)


async def test_retried_publish_is_stored_once(
    event_log: EventLog, make_rollout: MakeRollout
) -> None:
    ev = make_rollout("t1", "qwen", 1)
    first = await event_log.append_acked(ev)
    again = await event_log.append_acked(ev)
    batch = await event_log.append_many_acked([ev, make_rollout("t1", "qwen", 2)])
    assert not first.duplicate and again.duplicate and batch[0].duplicate
    assert again.seq == first.seq == batch[0].seq
    assert await event_log.last_seq() == 2
    assert event_log.duplicates == 2


async def test_server_restart_on_same_store_loses_nothing(
    tmp_path: Path, make_rollout: MakeRollout
) -> None:
    events = [make_rollout("r1", "llama", i) for i in range(200)]
    async with EmbeddedServer(tmp_path / "nats") as srv:
        nc = await connect(srv.client())
        log = await EventLog.open(nc, "r1")
        await log.append_many(events)
        await nc.close()
    async with EmbeddedServer(tmp_path / "nats") as srv:
        nc = await connect(srv.client())
        log = await EventLog.open(nc, "r1", create=False)
        got = [r.event async for r in log.read()]
        await nc.close()
    assert got == events


async def _fetch_exactly(consumer: Consumer, n: int) -> list[Any]:
    """The next `n` messages, in stream order: under load one fetch can return part of a batch,
    and a wait for the rest can outlast ack_wait (a redelivery, kept once)."""
    got: dict[int, Any] = {}
    with anyio.fail_after(30):
        while len(got) < n:
            for m in await consumer.fetch(n - len(got)):
                got.setdefault(m.metadata.sequence.stream, m)
    return [got[s] for s in sorted(got)]


async def test_killed_consumer_restarted_applies_every_event_once(
    nats_server: EmbeddedServer, event_log: EventLog, make_rollout: MakeRollout
) -> None:
    n = 300
    await event_log.append_many([make_rollout("t1", "qwen", i) for i in range(n)])
    applier = CountingApplier()

    # First life: the process dies after applying 150 events of a 256-event batch, before acking.
    class Dies(Exception):
        pass

    async def apply_then_die(record: Record) -> None:
        await CountingApplier.apply(applier, record)
        if sum(applier.applied.values()) == 150:
            raise Dies

    consumer = Consumer(event_log, "learner", kinds=["rollout"], ack_wait_s=1.0)
    msgs = await _fetch_exactly(consumer, 256)
    assert [m.metadata.sequence.stream for m in msgs] == list(range(1, 257))
    with pytest.raises(Dies):
        for msg in msgs:  # the body of Consumer.handle up to the crash: apply, no ack
            seq = msg.metadata.sequence.stream
            ev = await event_log.decode_payload(msg.subject, seq, msg.data)
            await apply_then_die(Record(seq, ev, msg.subject))
    await consumer.close()
    await event_log.nc.close()

    # Second life: a new connection and consumer of the same name, the state as it was.
    nc = await connect(nats_server.client())
    log = await EventLog.open(nc, "t1")
    consumer = Consumer(log, "learner", kinds=["rollout"], ack_wait_s=1.0)
    with anyio.fail_after(30):
        stats = await consumer.run(applier, until_idle=True, fetch_timeout=0.5)
    assert stats.applied == n - 150
    assert len(applier.applied) == n
    assert set(applier.applied.values()) == {1}
    assert applier.last_seq == n

    # Within one life, a message whose ack was lost comes back and is acked without applying.
    more = [make_rollout("t1", "qwen", i) for i in range(n, n + 10)]
    await log.append_many(more)
    msgs = await _fetch_exactly(consumer, 10)
    for msg in msgs:
        seq = msg.metadata.sequence.stream
        await applier.apply(
            Record(seq, await log.decode_payload(msg.subject, seq, msg.data), msg.subject)
        )
    with anyio.fail_after(30):
        while consumer.stats.skipped < 10:
            await consumer.handle(await consumer.fetch(10, timeout=0.5), applier)
    assert set(applier.applied.values()) == {1} and len(applier.applied) == n + 10
    await consumer.close()
    await nc.close()


async def test_two_writers_on_one_subject_are_detected(
    event_log: EventLog, make_rollout: MakeRollout
) -> None:
    a = OwnedWriter(event_log, "qwen")
    b = OwnedWriter(event_log, "qwen")
    await a.resume(["rollout"])
    await b.resume(["rollout"])
    await a.append(make_rollout("t1", "qwen", 1))
    with pytest.raises(WriterConflictError, match="another writer"):
        await b.append(make_rollout("t1", "qwen", 2))
    # a restarted writer takes ownership from what the stream holds, then a stale one fails
    c = OwnedWriter(event_log, "qwen")
    seq = await c.append(make_rollout("t1", "qwen", 3))
    with pytest.raises(WriterConflictError):
        await a.append(make_rollout("t1", "qwen", 4))
    assert await event_log.last_seq("mrl.t1.rollout.qwen") == seq
    # other sources are not affected
    await OwnedWriter(event_log, "llama").append(make_rollout("t1", "llama", 5))


def _big(make_rollout: MakeRollout, i: int) -> RolloutGroupCompleted:
    return make_rollout("t1", "qwen", i, tokens=40_000, group=8)  # ~2.5 MB > 1 MiB max payload


@pytest.mark.parametrize("store", ["object", "zarr"])
async def test_large_payload_round_trips_through_blob_store(
    nc: Any, tmp_path: Path, make_rollout: MakeRollout, store: str
) -> None:
    log = await EventLog.open(
        nc,
        "t1",
        LogConfig(blob_store=store, blob_dir=str(tmp_path / "blobs")),  # type: ignore[arg-type]
    )
    big = _big(make_rollout, 1)
    assert len(encode(big)) > nc.max_payload
    seq = await log.append(big)
    raw = await log.js.get_msg(log.stream, seq)
    pointer = decode(raw.data)
    assert isinstance(pointer, BlobPointer) and raw.subject == "mrl.t1.rollout.qwen"
    assert (await log.get(seq)).event == big
    assert [r.event async for r in log.read(kinds=["rollout"])] == [big]

    # a blob altered behind the log's back is dead-lettered with `blob_hash`, not applied
    seq2 = await log.append(_big(make_rollout, 2))
    ref = decode((await log.js.get_msg(log.stream, seq2)).data).ref  # type: ignore[union-attr]
    await log.blobs.put_raw(ref, b"tampered" + bytes(100))  # type: ignore[attr-defined]
    applier = CountingApplier()
    stats = await Consumer(log, "c1", kinds=["rollout"]).run(applier, until_idle=True)
    assert stats.applied == 1 and stats.dead_by_error == {"blob_hash": 1}
    dead = [r.event async for r in log.read(kinds=["deadletter"])]
    assert isinstance(dead[0], DeadLettered) and dead[0].original_seq == seq2


BAD_KINDS = ("garbage", "unknown_tag", "schema", "non_finite", "oversized", "schema")


def _malformed(i: int, template: RolloutGroupCompleted) -> tuple[str, bytes]:
    """Six kinds of bad input (`BAD_KINDS[i % 6]`), on the subject a rollout consumer reads."""
    subject = "mrl.t1.rollout.qwen"
    good = msgspec.msgpack.decode(encode(template))
    match i % 6:
        case 0:
            return subject, b"\xc1garbage" + i.to_bytes(4, "little")
        case 1:
            return subject, msgspec.msgpack.encode({**good, "type": "Mystery.v9"})
        case 2:
            return subject, msgspec.msgpack.encode({**good, "policy_version": "seven"})
        case 3:
            comp = {**good["completions"][0], "logprobs": pack_f32([0.0, float("nan")])}
            comp["token_ids"] = bytes(8)
            return subject, msgspec.msgpack.encode({**good, "completions": [comp]})
        case 4:
            return subject, msgspec.msgpack.encode({**good, "prompt_text": "x" * 70_000})
        case _:
            r = RewardSummary(
                run="t1",
                source="qwen",
                event_id=f"bad-{i}",
                policy="qwen",
                policy_version=0,
                prompt_id="p",
                rewards=pack_f32([1.0]),
                success_rate=1.0,
            )
            return subject, encode(r)  # a valid event on the wrong subject


@pytest.mark.timeout(150)
async def test_malformed_messages_are_dead_lettered_and_consumer_goes_on(
    nc: Any, make_rollout: MakeRollout
) -> None:
    log = await EventLog.open(nc, "t1", LogConfig(max_event_bytes=64 * 1024))
    js = log.js
    n_bad, n_good = 10_000, 2_000
    futures = []
    good_ids = []
    template = make_rollout("t1", "qwen", 999_999, tokens=2, group=1)
    for i in range(n_bad):
        subject, data = _malformed(i, template)
        futures.append(await js.publish_async(subject, data))
        if i % 5 == 0:
            ev = make_rollout("t1", "qwen", i, tokens=4, group=1)
            good_ids.append(ev.event_id)
            subject, data = await log.prepare(ev)
            futures.append(await js.publish_async(subject, data))
    for f in futures:
        await f
    assert len(good_ids) == n_good

    state: FoldApplier[list[str]] = FoldApplier(lambda s, r: [*s, r.event.event_id], [])
    consumer = Consumer(log, "sgt", kinds=["rollout"])
    with anyio.fail_after(120):
        stats = await consumer.run(state, batch=1000, until_idle=True)
    assert stats.applied == n_good and state.state == good_ids
    assert stats.dead_lettered == n_bad
    assert stats.dead_by_error == Counter(BAD_KINDS[i % 6] for i in range(n_bad))
    info = await js.stream_info(log.stream, subjects_filter="mrl.t1.deadletter.>")
    assert info.state.subjects == {"mrl.t1.deadletter.sgt": n_bad}
    first = await log.get(n_good + n_bad + 1)
    assert isinstance(first.event, DeadLettered) and first.event.original_seq == 1


async def test_replay_from_seq_returns_exactly_the_suffix(
    event_log: EventLog, make_rollout: MakeRollout
) -> None:
    events = [make_rollout("t1", "qwen" if i % 2 else "llama", i) for i in range(60)]
    seqs = await event_log.append_many(events)
    assert seqs == list(range(1, 61))
    for n in (1, 17, 60):
        got = [r async for r in event_log.read(start_seq=n)]
        assert [r.seq for r in got] == list(range(n, 61))
        assert [r.event for r in got] == events[n - 1 :]
    assert [r async for r in event_log.read(start_seq=61)] == []
    only_qwen = [r.event async for r in event_log.read(start_seq=10, sources=["qwen"])]
    assert only_qwen == [e for e in events[9:] if e.source == "qwen"]
    assert [r.event async for r in event_log.read(kinds=["reward"])] == []
    rec = await event_log.get(17)
    assert rec.event == events[16] and rec.subject == events[16].subject() and rec.time_ns > 0
    later = dt.datetime.fromtimestamp(rec.time_ns / 1e9, dt.UTC)
    by_time = [r.seq async for r in event_log.read(start_time=later)]
    assert by_time and by_time[0] <= 17 and by_time[-1] == 60


def _following(event_log: EventLog, got: list[int], n: int) -> Callable[[], Awaitable[None]]:
    """A task that follows the log, noting each sequence in `got`, until it has seen `n`."""

    async def tail() -> None:
        async for r in event_log.read(follow=True):
            got.append(r.seq)
            if len(got) == n:
                return

    return tail


async def test_follow_sees_events_appended_later(
    event_log: EventLog, make_rollout: MakeRollout
) -> None:
    tail = _following(event_log, got := [], 3)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(tail)
            for i in range(3):
                await anyio.sleep(0.1)
                await event_log.append(make_rollout("t1", "qwen", i))
    assert got == [1, 2, 3]


async def test_a_follow_read_whose_consumer_is_lost_recreates_it_and_misses_nothing(
    event_log: EventLog, make_rollout: MakeRollout
) -> None:
    """Regression: a read's consumer removed under it (server restart, failover, inactivity)
    used to leave the read waiting forever without an error."""
    got: list[int] = []
    tail = _following(event_log, got, 6)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(tail)
            for i in range(3):
                await event_log.append(make_rollout("t1", "qwen", i))
            while len(got) < 3:
                await anyio.sleep(0.05)
            for c in await event_log.js.consumers_info(event_log.stream):
                await event_log.js.delete_consumer(event_log.stream, c.name)
            for i in range(3, 6):
                await event_log.append(make_rollout("t1", "qwen", i))
    assert got == [1, 2, 3, 4, 5, 6]


def _drop_deliveries(monkeypatch: pytest.MonkeyPatch, drop: set[int]) -> list[int]:
    """Make the client lose the consumer's deliveries of these stream sequences once each, as a
    connection dropped in a failover loses what was in flight (acks off: never sent again)."""
    from mrl_actors.see import pull
    from mrl_actors.see.subjects import delivery

    dropped: list[int] = []
    on_msg = pull.Puller._on_msg

    async def lossy(self: pull.Puller, msg: Any) -> None:
        if msg.reply and not (msg.headers or {}).get("Status"):
            seq = delivery(msg.reply).seq
            if seq in drop:
                drop.discard(seq)
                dropped.append(seq)
                return
        await on_msg(self, msg)

    monkeypatch.setattr(pull.Puller, "_on_msg", lossy)
    return dropped


async def test_a_follow_read_that_loses_deliveries_in_transit_reads_them_again(
    event_log: EventLog, make_rollout: MakeRollout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a delivery lost between server and client (seen when a stream leader was
    killed) was skipped, and the follower's fold passed a learner step it never folded."""
    dropped = _drop_deliveries(monkeypatch, {2})
    got: list[int] = []
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(_following(event_log, got, 4))
            for i in range(4):
                await event_log.append(make_rollout("t1", "qwen", i))
    assert dropped == [2]
    assert got == [1, 2, 3, 4]


async def test_a_read_whose_last_delivery_was_lost_asks_the_consumer_and_reads_it(
    event_log: EventLog, make_rollout: MakeRollout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No later delivery shows the jump: the quiet-consumer check sees that the consumer
    delivered more than the read received."""
    for i in range(3):
        await event_log.append(make_rollout("t1", "qwen", i))
    dropped = _drop_deliveries(monkeypatch, {3})
    with anyio.fail_after(30):
        got = [r.seq async for r in event_log.read()]
    assert dropped == [3]
    assert got == [1, 2, 3]


async def test_events_of_another_run_or_bad_source_are_refused(
    event_log: EventLog, make_rollout: MakeRollout
) -> None:
    from mrl_actors.errors import LogError

    with pytest.raises(LogError, match="belongs to run"):
        await event_log.append(make_rollout("other", "qwen", 1))
    with pytest.raises(LogError, match="subject token"):
        await event_log.append(make_rollout("t1", "qw.en", 1))
    assert event_id("x", "t1", "q", 1) == "t1/x/q/1"
