"""`LogPort`: what actors, replay and the report need from a run's log, as a typed interface.

`EventLog` is the one implementation (JetStream); the actors and replay are written against this
port, so what they may do with the log is visible in one place: read records in order (bad
messages go to a `DeadLetterSink`), fetch one record, append (also conditionally), and
look up what a subject last stored, which is all an `OwnedWriter` needs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Protocol

from mrl_actors.errors import EventDecodeError
from mrl_actors.events import AnyEvent, Event
from mrl_actors.see.blobs import BlobStore
from mrl_actors.see.record import Ack, Record

if TYPE_CHECKING:
    from mrl_actors.see.config import LogConfig


class DeadLetterSink(Protocol):
    """Where a reader sends a message it cannot use (`mrl_actors.see.deadletter.DeadLetters`)."""

    async def add(self, seq: int, subject: str, data: bytes, exc: EventDecodeError) -> None:
        """Count, log and (where the reader may write) publish one bad message."""
        ...


class LogPort(Protocol):
    run: str
    config: LogConfig
    blobs: BlobStore  # where payloads above the inline limit and weights versions live

    @property
    def connected(self) -> bool:
        """The connection to the server is up (a reader of a lost server need not wait)."""
        ...

    def read(
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
        """Decoded records in sequence order; bad messages go to `dead_letters`."""
        ...

    def read_raw(
        self,
        *,
        start_seq: int | None = None,
        start_time: dt.datetime | None = None,
        kinds: Iterable[str] = (),
        sources: Iterable[str] = (),
        follow: bool = False,
        batch: int = 256,
    ) -> AsyncIterator[tuple[int, str, bytes, int]]:
        """Stored messages as (seq, subject, payload, time_ns), undecoded."""
        ...

    async def get(self, seq: int) -> Record[AnyEvent]:
        """The record at `seq` (`LogError` if none, `EventDecodeError` if it is bad)."""
        ...

    async def append(self, event: Event, *, headers: dict[str, str] | None = None) -> int: ...

    async def append_many(self, events: Sequence[Event]) -> list[int]: ...

    async def append_acked(self, event: Event, *, headers: dict[str, str] | None = None) -> Ack: ...

    async def append_first(self, event: Event, *, after: int = 0) -> Ack | None: ...

    async def stored_last(self, subject: str, event: Event) -> Ack | None: ...

    async def last_seq(self, subject: str | None = None) -> int: ...

    async def decode_payload(self, subject: str, seq: int, data: bytes) -> AnyEvent: ...

    def subject_of(self, event: Event) -> str: ...


# How a host opens a policy's own connection to the log (as that policy's user).
LogFor = Callable[[str], AbstractAsyncContextManager[LogPort]]
