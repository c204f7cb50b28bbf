"""One run's event stream: appends with checked acks, single reads, ordered replay, claim-check.

Naming: the run `R` has the stream `MRL_R` with subjects `mrl.R.<kind>.<source>`; `kind` is the
event's `KIND` and `source` its `source` (a policy or a node). A `BlobPointer` is published on the
subject of the event it stands for, so kind filters see it; reads resolve it transparently.

Appends send `Nats-Msg-Id = event.event_id`: a publish retried inside the stream's duplicate
window is stored once, and its ack says `duplicate`. `append_many` pipelines the publishes and
then checks every ack (a missing or failed ack raises `LogError`; nothing is dropped silently).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

import anyio

from mrl_actors.errors import BlobIntegrityError, EventDecodeError, LogError, MrlError
from mrl_actors.events import (
    WRITER_ROLES,
    AnyEvent,
    BlobPointer,
    Event,
    decode,
    encode,
    encode_into,
    identity_error,
)
from mrl_actors.logs import get_logger
from mrl_actors.see.blobs import (
    BlobStore,
    ObjectStoreBlobs,
    ZarrBlobs,
    bucket_name,
    check_writer,
)
from mrl_actors.see.config import LogConfig
from mrl_actors.see.lease import ensure_lease_bucket
from mrl_actors.see.port import DeadLetterSink
from mrl_actors.see.pull import Puller
from mrl_actors.see.record import Ack, Record
from mrl_actors.see.subjects import check_token, delivery, filter_subjects, stream_name

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_HEADROOM = 8 * 1024  # subject, headers and protocol overhead on top of the payload


def _time_ns(t: dt.datetime | None) -> int:
    return int(t.timestamp() * 1e9) if t is not None else 0


_CONSUMER_CHECK_S = 5.0
# A read of a fixed range whose consumer still counts messages pending but delivers none for
# this long looks for the ones the server no longer has (a corrupt block: the server skips the
# message without a word, and its consumer would wait for it forever).
_STALL_S = 2.0
_STALL_LIMIT_S = 30.0  # ... and gives up with a LogError after this long without an answer
_MAX_PROBES = 20_000  # direct gets one stalled read may spend looking for lost sequences
_ATTEMPT_S = 5.0  # one publish attempt waits this long for its ack before it is sent again
_CLEANUP_S = 2.0  # a read's consumer cleanup waits this long for the server's answer
_WRONG_LAST_SEQUENCE = 10071  # JetStream: the expected last (subject) sequence did not match


def is_transient(exc: BaseException) -> bool:
    """An error a cluster failover or a reconnect causes, after which a retry can succeed."""
    import asyncio

    import nats.errors
    from nats.js.errors import APIError, NoStreamResponseError, ServiceUnavailableError

    if isinstance(exc, ServiceUnavailableError | NoStreamResponseError):
        return True
    if isinstance(exc, APIError):  # "JetStream system temporarily unavailable" and kin
        in_process = "duplicate message id is in process" in (exc.description or "")
        return exc.code in (503, 504) or exc.err_code == 10008 or in_process
    return isinstance(
        exc,
        nats.errors.TimeoutError
        | nats.errors.NoRespondersError
        | nats.errors.ConnectionReconnectingError
        | nats.errors.StaleConnectionError
        | asyncio.TimeoutError
        | TimeoutError,
    )  # after this long without messages, a read checks its consumer exists


class EventLog:
    """The stream of one run. Build with `await EventLog.open(nc, run, config)`."""

    def __init__(self, nc: Any, run: str, config: LogConfig, blobs: BlobStore) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=config.ack_timeout_s)
        self._js_quick = nc.jetstream(timeout=_ATTEMPT_S)  # single reads, retried on failover
        self.run = check_token("run", run)
        self.config = config
        self.stream = stream_name(run)
        self.blobs = blobs
        self.duplicates = 0  # publishes the server reported as already stored
        self.bad = 0  # undecodable messages met by reads without a dead-letter handler
        self.lost = 0  # sequences the server no longer has, met by reads (a corrupt store)
        self.inline_limit = config.inline_limit or max(1024, nc.max_payload - _HEADROOM)
        self._log = get_logger(__name__, run=run)

    @classmethod
    async def open(
        cls,
        nc: Any,
        run: str,
        config: LogConfig | None = None,
        *,
        create: bool = True,
        policies: Sequence[str] = (),
    ) -> EventLog:
        """Bind to the run's stream; with `create`, make it, the lease bucket and each of
        `policies`' blob buckets when missing (and, later, a bucket a blob is put in first).

        Creating needs the admin role: writers open with `create=False` and never hold the
        right to create, change or delete a stream (see `mrl_actors.see.auth`).
        """
        from nats.js.api import DiscardPolicy, StorageType, StreamConfig
        from nats.js.errors import APIError, NotFoundError

        config = config or LogConfig()
        js = nc.jetstream(timeout=config.ack_timeout_s)
        name = stream_name(run)
        limits: dict[str, Any] = {
            "max_age": config.max_age_s or None,
            "max_bytes": config.max_bytes,
            "max_msgs": config.max_msgs,
        }
        try:
            info = await js.stream_info(name)
            if create and _grown(info.config, limits):
                await js.update_stream(dataclasses.replace(info.config, **limits))
        except NotFoundError:
            if not create:
                raise LogError(f"no stream {name} for run {run!r} on this server") from None
            stream = StreamConfig(
                name=name,
                subjects=[f"{config.prefix}.{run}.>"],
                storage=StorageType.FILE if config.storage == "file" else StorageType.MEMORY,
                num_replicas=config.replicas,
                discard=DiscardPolicy.NEW,
                duplicate_window=config.duplicate_window_s,
                allow_direct=True,
                **limits,
            )
            try:  # a new cluster's first create can go unanswered; the same config again is
                await _retrying(lambda: js.add_stream(stream))  # no error, so a retry is safe
            except APIError as exc:
                raise _create_error(f"stream {name}", config, exc) from exc
        if create:  # and the lease bucket of run-wide roles (MWRA), whatever the blob store
            try:
                await ensure_lease_bucket(js, run, replicas=config.replicas)
            except APIError as exc:
                raise _create_error(f"lease bucket of run {run}", config, exc) from exc
        blobs: BlobStore
        if config.blob_store == "zarr":
            if not config.blob_dir:
                raise LogError("blob_store = 'zarr' needs blob_dir")
            blobs = ZarrBlobs(config.blob_dir)
        else:
            share = _bucket_bytes(config.max_bytes, len(policies))
            if create:  # the creator makes the buckets, so writers need no stream rights
                await _ensure_buckets(js, run, config, policies, share)
            blobs = ObjectStoreBlobs(
                js,
                run,
                replicas=config.replicas,
                timeout_s=config.ack_timeout_s,
                create=create,
                max_bytes=share,
            )
        return cls(nc, run, config, blobs)

    # ------------------------------------------------------------------ append

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)

    def subject_of(self, event: Event) -> str:
        if event.run != self.run:
            raise LogError(f"event {event.event_id} belongs to run {event.run!r}, not {self.run!r}")
        check_token("source", event.source)
        return f"{self.config.prefix}.{self.run}.{event.KIND}.{event.source}"

    async def prepare(self, event: Event) -> tuple[str, bytes]:
        """Subject and wire payload; an event above the inline limit goes to the blob store."""
        subject = self.subject_of(event)
        data = encode(event)
        if len(data) > self.inline_limit:
            if len(data) > self.config.max_event_bytes:
                raise LogError(
                    f"event {event.event_id} encodes to {len(data)} bytes, above "
                    f"max_event_bytes={self.config.max_event_bytes}"
                )
            if WRITER_ROLES.get(event.KIND) != "policy":
                raise LogError(
                    f"event {event.event_id} encodes to {len(data)} bytes, above the inline "
                    f"limit of {self.inline_limit}: only a policy's events go to the blob "
                    f"store (its own bucket), the run's and its nodes' must fit in a message"
                )
            ref = await self.blobs.put(data, writer=event.source)  # the source's own bucket
            pointer = BlobPointer(
                run=event.run,
                source=event.source,
                event_id=event.event_id,
                time_ns=event.time_ns,
                kind=event.KIND,
                ref=ref,
            )
            self._log.debug("blob_stored", event_id=event.event_id, size=len(data))
            data = encode(pointer)
        return subject, data

    async def append(self, event: Event, *, headers: dict[str, str] | None = None) -> int:
        """Publish one event and wait for its ack; returns its stream sequence."""
        return (await self.append_acked(event, headers=headers)).seq

    async def append_acked(self, event: Event, *, headers: dict[str, str] | None = None) -> Ack:
        subject, data = await self.prepare(event)
        hdrs = {"Nats-Msg-Id": event.event_id, **(headers or {})}
        try:
            ack = await self._publish(subject, data, hdrs)
        except Exception as exc:
            raise self._publish_error(event, exc) from exc
        return self._check(event, ack)

    async def append_first(self, event: Event, *, after: int = 0) -> Ack | None:
        """Append `event` only if the last message on its subject is at `after` (0: the subject
        is empty); None if another is there.

        The server checks it (`Nats-Expected-Last-Subject-Sequence`), so of two processes
        starting a run at once exactly one writes each start event; the other reads it back. The
        server checks the expected sequence before the msg id, so a retry of a publish of ours
        that landed (its ack lost in a failover) is a conflict too: it is answered as the
        duplicate it is when the subject's last message is this very event.
        """
        from nats.js.errors import APIError

        subject, data = await self.prepare(event)
        hdrs = {"Nats-Msg-Id": event.event_id, "Nats-Expected-Last-Subject-Sequence": str(after)}
        try:
            ack = await self._publish(subject, data, hdrs)
        except APIError as exc:
            if exc.err_code == _WRONG_LAST_SEQUENCE:
                return await self.stored_last(subject, event)
            raise self._publish_error(event, exc) from exc
        except Exception as exc:
            raise self._publish_error(event, exc) from exc
        return self._check(event, ack)

    async def stored_last(self, subject: str, event: Event) -> Ack | None:
        """A duplicate ack if the last message on `subject` is `event` (same id), else None."""
        seq = await self.last_seq(subject)
        if seq:
            try:
                stored = (await self.get(seq)).event
            except (EventDecodeError, LogError):
                return None
            if stored.event_id == event.event_id:
                self.duplicates += 1
                return Ack(seq=seq, duplicate=True)
        return None

    async def _publish(self, subject: str, data: bytes, headers: dict[str, str]) -> Any:
        """One publish, retried under the same `Nats-Msg-Id` while the cluster fails over.

        A timeout, no responders or "unavailable" (a stream leader being elected, a client
        reconnecting to another server) is retried with backoff until `ack_timeout_s` has passed;
        the msg id makes a retry of a publish that was in fact stored a duplicate, not a copy.
        Any other error (a full stream, a refused subject) is raised at once.
        """
        budget = self.config.ack_timeout_s
        start = time.monotonic()
        delay = 0.2
        while True:
            left = budget - (time.monotonic() - start)
            try:
                return await self.js.publish(
                    subject, data, headers=headers, timeout=max(0.5, min(left, _ATTEMPT_S))
                )
            except Exception as exc:
                if not is_transient(exc) or time.monotonic() - start + delay >= budget:
                    raise
                self._log.warning(
                    "publish_retry",
                    subject=subject,
                    msg_id=headers.get("Nats-Msg-Id"),
                    error=type(exc).__name__,
                )
            await anyio.sleep(delay)
            delay = min(2 * delay, 2.0)

    async def append_many(self, events: Sequence[Event]) -> list[int]:
        """Pipeline the publishes, then check every ack; returns sequences in input order."""
        return [a.seq for a in await self.append_many_acked(events)]

    async def append_many_acked(self, events: Sequence[Event]) -> list[Ack]:
        """Pipelined; the publishes whose acks fail transiently are retried one by one under
        their own msg ids (stored once however often they are sent).

        Each event is encoded into one reused buffer and published at once (the client copies
        the payload into its command when `publish_async` is called, so the buffer can be reused
        at once); the client's flusher sends what is pending whenever its buffer fills or the
        loop next yields. Yielding after every publish, so that the flusher sent each event while
        the next one encoded, cost a loop turn per event: 0.66-0.79x plain nats-py's publish
        rate, against 0.98-1.08x without (`tools/bench_see.py`, idle 2-core machine).
        """
        subjects = [self.subject_of(event) for event in events]  # all checked before any is sent
        futures = []
        buf = bytearray()
        for event, subject in zip(events, subjects, strict=True):
            encode_into(event, buf)
            data: bytes | bytearray = buf
            if len(buf) > self.inline_limit:  # to the blob store: its pointer is published
                subject, data = await self.prepare(event)
            fut = await self.js.publish_async(
                subject,
                data,  # nats-py copies any bytes-like payload into its command at once
                headers={"Nats-Msg-Id": event.event_id},
            )
            futures.append(fut)
        acks: list[Any] = [None] * len(events)
        with anyio.move_on_after(min(self.config.ack_timeout_s, _ATTEMPT_S)):
            for i, (event, fut) in enumerate(zip(events, futures, strict=True)):
                try:
                    acks[i] = await fut
                except Exception as exc:
                    if not is_transient(exc):
                        raise self._publish_error(event, exc) from exc
        for fut in futures:
            if not fut.done():
                fut.cancel()
        out: list[Ack] = []
        for i, event in enumerate(events):
            if acks[i] is None:  # no ack (yet): send again under the same id
                try:
                    subject, data = await self.prepare(event)  # encoded again: the buffer moved on
                    acks[i] = await self._publish(subject, data, {"Nats-Msg-Id": event.event_id})
                except Exception as exc:
                    raise LogError(
                        f"{len(events) - i} of {len(events)} publishes to {self.stream} got no "
                        f"ack within {self.config.ack_timeout_s}s; retry them (their ids make "
                        f"that safe): {self._publish_error(event, exc)}"
                    ) from exc
            out.append(self._check(event, acks[i]))
        return out

    def _check(self, event: Event, ack: Any) -> Ack:
        if ack.stream != self.stream or not ack.seq:
            raise LogError(f"event {event.event_id}: unexpected ack {ack!r}")
        if ack.duplicate:
            self.duplicates += 1
            self._log.info("publish_duplicate", event_id=event.event_id, seq=ack.seq)
        return Ack(seq=ack.seq, duplicate=bool(ack.duplicate))

    def _publish_error(self, event: Event, exc: Exception) -> MrlError:
        why = getattr(exc, "description", None) or repr(exc)  # e.g. "maximum messages exceeded"
        return LogError(f"publish of {event.event_id} to {self.stream} failed: {why}")

    # ------------------------------------------------------------------ read

    async def decode_payload(self, subject: str, seq: int, data: bytes) -> AnyEvent:
        """Decode a stored payload, following a `BlobPointer`; `EventDecodeError` has `.kind`."""
        event = decode(data, max_bytes=self.config.max_event_bytes)
        if isinstance(event, BlobPointer):
            ref = event.ref
            if ref.size > self.config.max_event_bytes:
                raise _decode_error("oversized", f"seq {seq}: blob of {ref.size} bytes")
            if ref.key != ref.sha256 or not _SHA256.match(ref.key):  # blobs are content-keyed
                raise _decode_error("schema", f"seq {seq}: blob key {ref.key[:80]!r}")
            source = subject.rsplit(".", 1)[-1]  # the authenticated writer: its own bucket
            if ref.writer not in ("", source):
                raise _decode_error(
                    "identity", f"seq {seq}: a blob of {source}'s in {ref.writer[:80]!r}'s bucket"
                )
            try:
                blob = await self.blobs.get(ref)
            except BlobIntegrityError as exc:
                raise _decode_error("blob_hash", f"seq {seq}: {exc}") from exc
            except LogError as exc:
                raise _decode_error("blob_missing", f"seq {seq}: {exc}") from exc
            event = decode(blob, max_bytes=self.config.max_event_bytes)
            if isinstance(event, BlobPointer):
                raise _decode_error("schema", f"seq {seq}: blob holds a {type(event).__name__}")
        # an event is only valid on its own subject: its run, kind and source (inline or blob)
        if subject != f"{self.config.prefix}.{event.run}.{event.KIND}.{event.source}":
            raise _decode_error("schema", f"seq {seq}: {type(event).__name__} on {subject}")
        why = identity_error(event)  # and names no writer but its subject's source
        if why is not None:
            raise _decode_error("identity", f"seq {seq}: {why}")
        return event

    async def get(self, seq: int) -> Record[AnyEvent]:
        """The record stored at `seq` (raises `LogError` if there is none, `EventDecodeError`)."""
        from nats.js.errors import NotFoundError

        try:
            msg = await _retrying(lambda: self._js_quick.get_msg(self.stream, seq))
        except NotFoundError as exc:
            raise LogError(f"{self.stream} has no message at seq {seq}") from exc
        data = bytes(msg.data or b"")
        event = await self.decode_payload(msg.subject, seq, data)
        return Record(seq, event, msg.subject, _time_ns(msg.time))

    async def last_seq(self, subject: str | None = None) -> int:
        """The stream's last sequence, or the last sequence stored on `subject` (0 when none)."""
        from nats.js.errors import NotFoundError

        js = self._js_quick
        if subject is None:
            info = await _retrying(lambda: js.stream_info(self.stream))
            return int(info.state.last_seq)
        try:
            msg = await _retrying(lambda: js.get_msg(self.stream, subject=subject))
        except NotFoundError:
            return 0
        return int(msg.seq or 0)

    async def read_raw(
        self,
        *,
        start_seq: int | None = None,
        start_time: dt.datetime | None = None,
        kinds: Iterable[str] = (),
        sources: Iterable[str] = (),
        follow: bool = False,
        batch: int = 256,
        on_lost: Callable[[list[int]], Awaitable[None]] | None = None,
    ) -> AsyncIterator[tuple[int, str, bytes, int]]:
        """Stored messages in sequence order as (seq, subject, payload, time_ns), undecoded.

        Without `follow`, stops when the read has caught up (no matching message pending); with
        it, waits for new ones. A read whose server-side consumer disappears (server restart,
        failover, inactivity) recreates it after the last sequence it yielded.

        A read without `follow` ends in bounded time even when the server has lost messages of
        its range (a corrupt store): once its consumer counts messages pending that it does not
        deliver, the sequences the server no longer has are named, to `on_lost` (else one
        warning line each, counted in `self.lost`), and the read ends; `_STALL_LIMIT_S` without
        finding them is a `LogError`.
        """
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        subjects = filter_subjects(self.config.prefix, self.run, kinds, sources)

        async def open_from(seq: int | None) -> tuple[Any, Any]:
            policy = DeliverPolicy.ALL
            if seq is not None:
                policy = DeliverPolicy.BY_START_SEQUENCE
            elif start_time is not None:
                policy = DeliverPolicy.BY_START_TIME
            cfg = ConsumerConfig(
                deliver_policy=policy,
                opt_start_seq=seq,
                opt_start_time=start_time if seq is None else None,
                ack_policy=AckPolicy.NONE,
                filter_subjects=subjects if len(subjects) > 1 else None,
                filter_subject=subjects[0] if len(subjects) == 1 else None,
                inactive_threshold=60.0,
                mem_storage=True,
                num_replicas=1,
            )
            delay, deadline = 0.2, time.monotonic() + max(self.config.ack_timeout_s, 60.0)
            while True:  # a failover leaves the stream without a leader for seconds
                try:
                    info = await self.js.add_consumer(self.stream, cfg, timeout=_ATTEMPT_S)
                    break
                except Exception as exc:
                    if not is_transient(exc) or time.monotonic() + delay > deadline:
                        raise
                    self._log.warning("read_consumer_retry", error=type(exc).__name__)
                await anyio.sleep(delay)
                delay = min(2 * delay, 2.0)
            return info, await Puller(self.nc, self.stream, info.name).start()

        info, puller = await open_from(start_seq)
        last = -1  # the last sequence yielded
        cseq = 0  # the consumer sequence of the last delivery from this consumer

        async def reopen(why: str) -> None:
            """Replace the consumer (and its puller) by a fresh one just after the last
            sequence yielded."""
            nonlocal info, puller, cseq
            self._log.warning(why, consumer=info.name, after_seq=last, cseq=cseq)
            with anyio.CancelScope(shield=True):
                await _quietly(puller.stop())
                await _quietly(self.js.delete_consumer(self.stream, info.name))
            info, puller = await open_from(last + 1 if last >= 0 else start_seq)
            cseq = 0

        idle_since = time.monotonic()
        # fixed-range reads: the sequences skipped between deliveries (other subjects, or lost)
        gaps: list[tuple[int, int]] = []
        prev = (start_seq - 1 if start_seq else 0) if start_time is None else -1
        pending = int(info.num_pending)
        named: set[int] = set()
        stalled_since = 0.0
        seen = -1  # the consumer's delivered sequence at the last stall check
        try:
            if not follow and info.num_pending == 0:
                return
            while True:
                msgs = await puller.fetch(batch, timeout=1.0)
                lost_in_transit = False
                for msg in msgs:
                    d = delivery(msg.reply)
                    if d.cseq > cseq + 1:
                        # the consumer sent deliveries this client never got (its connection
                        # dropped in a failover): without acks they are not sent again, so the
                        # read starts over after the last sequence it yielded
                        lost_in_transit = True
                        break
                    cseq = d.cseq
                    if not follow and prev >= 0 and d.seq > prev + 1:
                        gaps.append((prev + 1, d.seq - 1))
                    prev = last = d.seq
                    pending = d.pending
                    yield d.seq, msg.subject, msg.data, d.time_ns
                    if not follow and d.pending == 0:
                        return
                if lost_in_transit:
                    await reopen("read_deliveries_lost")
                    if not follow and info.num_pending == 0:
                        return
                    continue
                if not follow:
                    now = time.monotonic()
                    stalled_since = 0.0 if msgs else stalled_since or now
                    if stalled_since and now - stalled_since >= _STALL_S:
                        # delivered past `prev` and still moving: a slow client, not a gap (a
                        # server that skipped a lost message also counts it delivered, so a
                        # delivered count that stopped moving is looked into)
                        delivered = await self._delivered(info.name)
                        if delivered is None or (delivered > prev and delivered != seen):
                            seen = delivered if delivered is not None else seen
                            stalled_since = now
                            continue
                        found = await self._lost(gaps, prev, want=pending - len(named))
                        lost = [s for s in found if s not in named]
                        if lost:
                            named.update(lost)
                            await self._report_lost(lost, on_lost)
                        if len(named) >= pending:
                            return
                        if now - stalled_since >= _STALL_LIMIT_S:
                            raise LogError(
                                f"read of {self.stream} stalled after seq {prev}: the server "
                                f"counts {pending} messages pending but delivers none, and "
                                f"none of them is missing from the store"
                            )
                if msgs or time.monotonic() - idle_since < _CONSUMER_CHECK_S:
                    idle_since = time.monotonic() if msgs else idle_since
                    continue
                # quiet for a while: is our (in-memory, one-replica) consumer still there? A
                # server restart or failover, or its inactivity threshold, can remove it, and
                # then no fetch would ever be answered. Recreate it just after what we yielded;
                # likewise when it delivered more than we received (lost in transit).
                idle_since = time.monotonic()
                try:
                    ci = await self.js.consumer_info(self.stream, info.name, timeout=_ATTEMPT_S)
                    if int(ci.delivered.consumer_seq or 0) <= cseq:
                        continue
                    why = "read_deliveries_lost"
                except NotFoundError:
                    why = "read_consumer_lost"
                except Exception as exc:  # its server is gone (a one-replica consumer)
                    if not is_transient(exc):
                        raise
                    why = "read_consumer_lost"
                await reopen(why)
                if not follow and info.num_pending == 0:
                    return
        finally:
            with anyio.CancelScope(shield=True):
                await _quietly(puller.stop())
                await _quietly(self.js.delete_consumer(self.stream, info.name))

    async def _delivered(self, consumer: str) -> int | None:
        """The last stream sequence the server has delivered to `consumer`; None when the
        consumer cannot be asked (its loss is handled apart, by the consumer check)."""
        try:
            ci = await self.js.consumer_info(self.stream, consumer, timeout=_ATTEMPT_S)
        except Exception:  # gone or unreachable: the consumer check recreates it
            return None
        return int(ci.delivered.stream_seq or 0)

    async def _lost(self, gaps: list[tuple[int, int]], prev: int, *, want: int) -> list[int]:
        """The sequences after `prev` (up to the stream's last), then in `gaps`, that the
        server no longer has, probed one get each until `want` are found (at most
        `_MAX_PROBES` gets: a filtered read's gaps are mostly other subjects' messages)."""
        from nats.js.errors import NotFoundError

        end = await self.last_seq()
        candidates = [(max(prev, 0) + 1, end), *reversed(gaps)]
        lost: list[int] = []
        probes = 0
        for lo, hi in candidates:
            for seq in range(lo, hi + 1):
                probes += 1
                if probes > _MAX_PROBES or len(lost) >= want:
                    return sorted(lost)
                try:
                    await _retrying(lambda s=seq: self._js_quick.get_msg(self.stream, s))
                except NotFoundError:
                    lost.append(seq)
        return sorted(lost)

    async def _report_lost(
        self, seqs: list[int], on_lost: Callable[[list[int]], Awaitable[None]] | None
    ) -> None:
        if on_lost is not None:
            await on_lost(seqs)
            return
        for seq in seqs:
            self.lost += 1
            self._log.warning("message_lost", stream=self.stream, seq=seq)

    async def read(
        self,
        *,
        start_seq: int | None = None,
        start_time: dt.datetime | None = None,
        kinds: Iterable[str] = (),
        sources: Iterable[str] = (),
        follow: bool = False,
        strict: bool = False,
        dead_letters: DeadLetterSink | None = None,
        batch: int = 256,
    ) -> AsyncIterator[Record[AnyEvent]]:
        """Decoded records in sequence order from `start_seq` (or `start_time`, or the start).

        A message that does not decode, or is not valid on its subject, goes to `dead_letters`
        (counted, logged, dead-lettered where the reader may write) and the read goes on;
        without it, it is counted in `self.bad` and logged. `strict=True` raises instead.
        """

        async def lost(seqs: list[int]) -> None:
            if strict:
                raise LogError(f"{self.stream}: the server no longer has seq {seqs[0]}")
            for seq in seqs:
                exc = _decode_error("lost", f"seq {seq}: the server no longer has this message")
                if dead_letters is not None:
                    await dead_letters.add(seq, "", b"", exc)
                else:
                    await self._report_lost([seq], None)

        async for seq, subject, data, t in self.read_raw(
            start_seq=start_seq,
            start_time=start_time,
            kinds=kinds,
            sources=sources,
            follow=follow,
            batch=batch,
            on_lost=lost,
        ):
            try:
                event = await self.decode_payload(subject, seq, data)
            except EventDecodeError as exc:
                if strict:
                    raise
                if dead_letters is not None:
                    await dead_letters.add(seq, subject, data, exc)
                else:
                    self.bad += 1
                    self._log.warning("bad_message", seq=seq, subject=subject, reason=str(exc))
                continue
            yield Record(seq, event, subject, t)


def _grown(current: Any, limits: dict[str, Any]) -> bool:
    """The asked limits are larger than the stream's (a resume that raised them)."""

    def more(asked: Any, now: Any) -> bool:
        unlimited = (None, 0, -1)
        if now in unlimited:
            return False
        return asked in unlimited or float(asked) > float(now)

    return any(more(limits[k], getattr(current, k)) for k in limits)


def _bucket_bytes(max_bytes: int, policies: int) -> int:
    """Each policy's blob bucket holds an equal share of `max_bytes` (-1: no limit), so the
    buckets together reserve what one shared bucket did, and no policy can fill a peer's."""
    return max(1, max_bytes // max(1, policies)) if max_bytes > 0 else -1


async def _ensure_buckets(
    js: Any, run: str, config: LogConfig, policies: Sequence[str], max_bytes: int
) -> None:
    """Each policy's own blob bucket (made when missing, with rollups refused), and the one
    shared bucket of a run written by an older version hardened where it exists."""
    from nats.js.errors import APIError, NotFoundError

    from mrl_actors.see.objstore import create_blob_bucket, harden_blob_bucket, open_blob_bucket

    try:  # read-only now (no writer may publish there), kept for the refs that name it
        await open_blob_bucket(js, bucket_name(run))
        await harden_blob_bucket(js, bucket_name(run))
    except NotFoundError:
        pass
    for policy in policies:
        bucket = bucket_name(run, check_writer(policy))
        try:
            await open_blob_bucket(js, bucket)
            await harden_blob_bucket(js, bucket, max_bytes=max_bytes)  # a resume asking more
        except NotFoundError:
            try:  # rollups refused by the stream (see.objstore): no writer can erase it
                await create_blob_bucket(js, bucket, replicas=config.replicas, max_bytes=max_bytes)
            except APIError as exc:
                raise _create_error(f"blob bucket {bucket}", config, exc) from exc


def _create_error(what: str, config: LogConfig, exc: Any) -> LogError:
    """JetStream reserves `max_bytes` of its store limit (75% of the free disk by default)."""
    return LogError(
        f"cannot create {what} (max_bytes={config.max_bytes}, replicas={config.replicas}): "
        f"{exc.description}; lower [server] max_bytes (-1: no limit) or free disk space"
    )


async def _retrying(call: Any, budget_s: float = 60.0) -> Any:
    """`await call()`, again with backoff while it fails transiently (a failover)."""
    delay, deadline = 0.2, time.monotonic() + budget_s
    while True:
        try:
            return await call()
        except Exception as exc:
            if not is_transient(exc) or time.monotonic() + delay > deadline:
                raise
        await anyio.sleep(delay)
        delay = min(2 * delay, 2.0)


async def _quietly(aw: Any) -> None:
    """Best-effort cleanup of an ephemeral consumer (it also expires on its own), for at most
    `_CLEANUP_S`: it runs shielded, and a server going away left a read's end waiting out the
    client's whole request timeout (30 s: `mrl log tail -f` ended that late after its run)."""
    with contextlib.suppress(Exception), anyio.move_on_after(_CLEANUP_S):
        await aw


def _decode_error(kind: str, message: str) -> EventDecodeError:
    err = EventDecodeError(message)
    err.kind = kind  # type: ignore[attr-defined]
    return err
