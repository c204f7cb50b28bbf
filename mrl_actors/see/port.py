"""`LogPort`: what actors, replay and the report need from a run's log, as a typed interface.

`EventLog` is the one implementation (JetStream); the actors and replay are written against this
port, so what they may do with the log is visible in one place: read records in order (bad
messages go to a `DeadLetters`), fetch one record, append, and own a source's subjects.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

from mrl_actors.events import AnyEvent, Event
from mrl_actors.see.record import Record

if TYPE_CHECKING:
    from mrl_actors.see.deadletter import DeadLetters
    from mrl_actors.see.stream import LogConfig
    from mrl_actors.see.writer import OwnedWriter


class LogPort(Protocol):
    run: str
    config: LogConfig

    def read(
        self,
        *,
        start_seq: int | None = None,
        start_time: dt.datetime | None = None,
        kinds: Iterable[str] = (),
        sources: Iterable[str] = (),
        follow: bool = False,
        strict: bool = False,
        dead_letters: DeadLetters | None = None,
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

    def writer(self, source: str) -> OwnedWriter:
        """A writer that owns `source`'s subjects (expected-last-subject-sequence)."""
        ...
