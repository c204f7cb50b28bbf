"""Durable pull consumers with explicit ack, idempotent apply and a dead-letter subject.

Delivery is at least once; the effect is exactly once because the applier's state records the
stream sequence of the last event it applied (`Applier.last_seq`), and a redelivered message at
or below it is acked and skipped. On start the consumer is positioned just after that seq, so a
consumer killed between applying and acking, then restarted on the same state, applies every
event exactly once and in order. One consumer name has one running instance at a time.

A message that cannot be decoded (garbage, unknown tag, wrong field type, NaN, oversized, a blob
whose hash does not match) or whose apply raised becomes a `DeadLettered` event on
`mrl.<run>.deadletter.<consumer>` with the reason and the original sequence (`DeadLetters`, the
same handling every reader of the log uses); then it is acked and the consumer goes on. Dead
letters have deterministic ids, so a redelivered bad message is dead-lettered once.

The fold contract is the same as the actors': `evolve(state, record) -> state` over
`Record`s in sequence order (`FoldApplier`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import anyio
from anyio.abc import TaskStatus

from mrl_actors.errors import EventDecodeError
from mrl_actors.events import AnyEvent, DeadLettered
from mrl_actors.logs import get_logger
from mrl_actors.see.deadletter import DeadLetters, error_kind
from mrl_actors.see.pull import Puller
from mrl_actors.see.record import Record
from mrl_actors.see.stream import EventLog
from mrl_actors.see.subjects import check_token, delivery, filter_subjects


class Applier(Protocol):
    """What a consumer feeds: state that knows the last stream sequence folded into it."""

    @property
    def last_seq(self) -> int: ...

    async def apply(self, record: Record[AnyEvent]) -> None:
        """Fold `record` into the state and set `last_seq = record.seq` together with it."""
        ...


S = TypeVar("S")


class FoldApplier(Generic[S]):
    """An `Applier` over a pure `evolve(state, record) -> state` (the actors' fold)."""

    def __init__(
        self, evolve: Callable[[S, Record[AnyEvent]], S], state: S, last_seq: int = 0
    ) -> None:
        self.evolve = evolve
        self.state = state
        self.last_seq = last_seq

    async def apply(self, record: Record[AnyEvent]) -> None:
        self.state = self.evolve(self.state, record)
        self.last_seq = record.seq


@dataclass
class ConsumerStats:
    delivered: int = 0
    applied: int = 0
    skipped: int = 0  # redeliveries at or below the applier's last_seq
    dead_lettered: int = 0
    dead_by_error: dict[str, int] = field(default_factory=dict)


class Consumer:
    """A named durable pull consumer on one run's stream, filtered by kinds and sources."""

    def __init__(
        self,
        log: EventLog,
        name: str,
        *,
        kinds: Iterable[str] = (),
        sources: Iterable[str] = (),
        ack_wait_s: float = 30.0,
        max_ack_pending: int = 20_000,
    ) -> None:
        self.log = log
        self.name = check_token("consumer", name)
        self.subjects = filter_subjects(log.config.prefix, log.run, kinds, sources)
        self.ack_wait_s = ack_wait_s
        self.max_ack_pending = max_ack_pending
        self.stats = ConsumerStats()
        self.dead = DeadLetters(log, self.name)
        self._sub: Any = None
        self._log = get_logger(__name__, run=log.run, actor=name)

    @property
    def dead_letter_subject(self) -> str:
        return self.dead.subject

    async def bind(self, after_seq: int | None = None) -> None:
        """Attach to the durable consumer; with `after_seq`, (re)position it just after that seq.

        The applier's recorded seq is the truth about what was applied, the durable consumer only
        a delivery cursor: `run` repositions it at `applier.last_seq + 1`, so unacked messages
        of a previous life are delivered again in order instead of after newer ones (a
        watermark is only safe for in-order delivery). Without `after_seq` an existing durable
        is reused as it is, and a missing one starts at the beginning of the stream.
        """
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        js = self.log.js
        if after_seq is None:
            try:
                await js.consumer_info(self.log.stream, self.name)
                exists = True
            except NotFoundError:
                exists = False
        else:
            await self.close()
            with contextlib.suppress(NotFoundError):
                await js.delete_consumer(self.log.stream, self.name)
            exists = False
        if not exists:
            start = (after_seq or 0) + 1
            cfg = ConsumerConfig(
                durable_name=self.name,
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start > 1 else DeliverPolicy.ALL,
                opt_start_seq=start if start > 1 else None,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self.ack_wait_s,
                max_deliver=-1,
                max_ack_pending=self.max_ack_pending,
                filter_subjects=self.subjects if len(self.subjects) > 1 else None,
                filter_subject=self.subjects[0] if len(self.subjects) == 1 else None,
            )
            await js.add_consumer(self.log.stream, cfg)
            self._log.info("consumer_bound", start_seq=start, subjects=self.subjects)
        if self._sub is None:
            self._sub = await Puller(self.log.nc, self.log.stream, self.name).start()

    async def close(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.stop()

    async def fetch(self, batch: int = 256, timeout: float = 1.0) -> list[Any]:
        """Raw messages (possibly none) from the server."""
        if self._sub is None:
            await self.bind()
        return await self._sub.fetch(batch, timeout)

    async def handle(self, msgs: list[Any], applier: Applier) -> None:
        """Apply (or skip, or dead-letter) each message in order, publish dead letters, ack all."""
        dead: list[DeadLettered] = []
        for msg in msgs:
            d = delivery(msg.reply)
            seq = d.seq
            self.stats.delivered += 1
            if seq <= applier.last_seq:
                self.stats.skipped += 1
                continue
            try:
                event = await self.log.decode_payload(msg.subject, seq, msg.data)
            except EventDecodeError as exc:
                dead.append(self.dead.letter(seq, msg.subject, msg.data, error_kind(exc), str(exc)))
                continue
            try:
                await applier.apply(Record(seq, event, msg.subject, d.time_ns))
            except Exception as exc:
                self._log.exception("apply_failed", seq=seq, event_id=event.event_id)
                reason = f"{type(exc).__name__}: {exc}"
                dead.append(self.dead.letter(seq, msg.subject, msg.data, "apply", reason))
                continue
            self.stats.applied += 1
        if dead:
            await self.dead.add_many(dead)
            for dl in dead:
                self.stats.dead_by_error[dl.error] = self.stats.dead_by_error.get(dl.error, 0) + 1
            self.stats.dead_lettered += len(dead)
        for msg in msgs:
            await msg.ack()

    async def run(
        self,
        applier: Applier,
        *,
        batch: int = 256,
        until_idle: bool = False,
        stop: Callable[[ConsumerStats], bool] | None = None,
        fetch_timeout: float = 1.0,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> ConsumerStats:
        """Consume until cancelled, until `stop(stats)` holds after a batch, or (`until_idle`)
        until a fetch comes back empty. Batches are applied one after the other, in order.

        (Fetching the next batch while applying the current one was tried: no faster, since
        nats-py parses incoming messages on the same thread.)
        """
        await self.bind(after_seq=applier.last_seq)
        task_status.started()
        try:
            while stop is None or not stop(self.stats):
                msgs = await self.fetch(batch, timeout=fetch_timeout)
                if msgs:
                    await self.handle(msgs, applier)
                elif until_idle:
                    break
            return self.stats
        finally:
            with anyio.CancelScope(shield=True):
                await self.close()
