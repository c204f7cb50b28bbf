"""`Follower`: how every actor reads the log, so that each one only says what it folds.

An actor's state is a fold over the records it reads. Each actor reads the same way: one
server-filtered read of the kinds it folds from the sources it listens to (its own policy, its
peers, the assigners), bad messages dead-lettered on `mrl.<run>.deadletter.<reader>` while the
read goes on; first the whole log (`rebuild`, which is how a killed actor resumes), then live
(`follow`, in the actor's task group). Its step loop waits on the fold (`until`: a condition
rechecked after every record; `folded`: the fold has reached a sequence this actor appended).

A record at or below the last sequence folded is skipped: a read resumed after a reconnect may
hand it over again, and folds are written for each sequence once.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Iterable

import anyio

from mrl_actors.errors import LogError
from mrl_actors.events import AnyEvent
from mrl_actors.see.deadletter import DeadLetters
from mrl_actors.see.port import LogPort
from mrl_actors.see.record import Record

FOLD_TIMEOUT_S = 120.0  # how long the live fold may lag behind this actor's own appends


class Follower:
    """One actor's read of the log, feeding `fold` each new record once, in sequence order."""

    def __init__(
        self,
        log: LogPort,
        reader: str,
        fold: Callable[[Record[AnyEvent]], None],
        *,
        kinds: Iterable[str],
        sources: Iterable[str],
    ) -> None:
        self.log = log
        self.reader = reader
        self.kinds = tuple(kinds)
        self.sources = tuple(sources)
        self.dead_letters = DeadLetters(log, reader)
        self.last_seq = 0  # the newest sequence folded
        self._fold = fold
        self._changed: anyio.Event | None = None  # set (and replaced) after every fold

    def _read(self, *, start_seq: int, follow: bool) -> AsyncIterator[Record[AnyEvent]]:
        """The server filters by subject (`mrl.<run>.<kind>.<source>` for each pair), so events
        of other sources never reach this process."""
        return self.log.read(
            start_seq=start_seq,
            kinds=self.kinds,
            sources=self.sources,
            follow=follow,
            dead_letters=self.dead_letters,
        )

    def apply(self, rec: Record[AnyEvent]) -> None:
        if rec.seq <= self.last_seq:
            return
        self.last_seq = rec.seq
        self._fold(rec)
        changed, self._changed = self._changed, anyio.Event()
        if changed is not None:
            changed.set()  # wakes every `until` waiting on the state

    async def rebuild(self) -> None:
        """Fold every matching event already in the log (resume starts here)."""
        async for rec in self._read(start_seq=1, follow=False):
            self.apply(rec)

    async def follow(self) -> None:
        """Keep folding new events as they are stored."""
        async for rec in self._read(start_seq=self.last_seq + 1, follow=True):
            self.apply(rec)

    async def until(self, ready: Callable[[], bool], timeout: float = math.inf) -> bool:
        """Wait (at most `timeout` s) until `ready()` holds; it is rechecked after each fold."""
        with anyio.move_on_after(timeout):
            while not ready():
                if self._changed is None:
                    self._changed = anyio.Event()
                await self._changed.wait()
            return True
        return ready()

    async def folded(self, seq: int, what: str) -> None:
        """Wait until the fold has reached `seq`; a fold that falls behind is an error, not a
        reason to go on from stale state (it would repeat a step the log already holds)."""
        if not await self.until(lambda: self.last_seq >= seq, FOLD_TIMEOUT_S):
            raise LogError(
                f"{self.reader}: the log follower did not reach seq {seq} ({what}) within "
                f"{FOLD_TIMEOUT_S:.0f} s (folded up to {self.last_seq}); the run can be "
                "resumed with `mrl run --resume`"
            )
