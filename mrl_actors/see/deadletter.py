"""Dead letters: what a reader does with a message it cannot use, so that it can go on.

Every reader of the log (a policy actor's fold, a durable `Consumer`, replay, the report, `mrl log`)
meets bad messages the same way: it counts the message, logs one warning line naming its stream
sequence, subject and reason, and (where it may write) publishes a `DeadLettered` event on
`mrl.<run>.deadletter.<reader>`, `<reader>` being its own name. Then it reads on.

One dead letter per (reader, original sequence): its id is deterministic, so the server's
duplicate window stores a retried publish once, and before its first publish a reader reads the
dead letters it already wrote (a resumed actor re-reads the whole log) and skips those.

Read-only tools are `best_effort`: a refused publish (no permission, a read-only store) is logged
once and publishing stops (a publish the server does not answer is given up after 3 s); the
count and the warnings remain. Actors are not: a dead letter they
cannot publish is a broken log, and the error propagates.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import TYPE_CHECKING

import anyio

from mrl_actors.errors import EventDecodeError
from mrl_actors.events import DeadLettered, decode, event_id
from mrl_actors.logs import get_logger
from mrl_actors.see.subjects import check_token

if TYPE_CHECKING:
    from mrl_actors.see.port import LogPort

RAW_PREFIX_BYTES = 4096
_REASON_CHARS = 1000
BEST_EFFORT_WAIT_S = 3.0  # how long a read-only tool waits for a dead letter's ack


def error_kind(exc: EventDecodeError) -> str:
    """The `DeadLettered.error` value of a decode failure."""
    return str(getattr(exc, "kind", "schema"))


class DeadLetters:
    """The bad messages one reader met: counted, logged, and dead-lettered when it may write."""

    def __init__(
        self, log: LogPort, reader: str, *, publish: bool = True, best_effort: bool = False
    ) -> None:
        self.log = log
        self.reader = check_token("reader", reader)
        self.publish = publish
        self.best_effort = best_effort
        self.count = 0  # bad messages met (each once per read)
        self.published = 0  # dead letters this reader stored (not counting ones already there)
        self.by_error: Counter[str] = Counter()
        self._done: set[int] | None = None  # original seqs this reader has dead-lettered
        self._noted: set[int] = set()  # seqs met by this instance (a re-read notes them once)
        self._log = get_logger(__name__, run=log.run, reader=reader)

    @property
    def subject(self) -> str:
        return f"{self.log.config.prefix}.{self.log.run}.deadletter.{self.reader}"

    def letter(self, seq: int, subject: str, data: bytes, error: str, reason: str) -> DeadLettered:
        raw = bytes(data)
        return DeadLettered(
            run=self.log.run,
            source=self.reader,
            event_id=event_id("deadletter", self.log.run, self.reader, seq),
            time_ns=time.time_ns(),
            original_subject=subject,
            original_seq=seq,
            error=error,
            reason=reason[:_REASON_CHARS],
            raw_prefix=raw[:RAW_PREFIX_BYTES],
            raw_size=len(raw),
        )

    def note(self, seq: int, subject: str, error: str, reason: str) -> None:
        """Count one bad message and log its one warning line."""
        self.count += 1
        self.by_error[error] += 1
        self._log.warning("bad_message", seq=seq, subject=subject, error=error, reason=reason[:200])

    async def add(self, seq: int, subject: str, data: bytes, exc: EventDecodeError) -> None:
        """A message that did not decode (or is not valid where it was stored)."""
        await self.add_many([self.letter(seq, subject, data, error_kind(exc), str(exc))])

    async def add_many(self, letters: list[DeadLettered]) -> None:
        letters = [dl for dl in letters if dl.original_seq not in self._noted]
        for dl in letters:
            self._noted.add(dl.original_seq)
            self.note(dl.original_seq, dl.original_subject, dl.error, dl.reason)
        if not self.publish or not letters:
            return
        try:
            # a refused publish (no permission) is never answered: wait for it only so long
            with anyio.fail_after(BEST_EFFORT_WAIT_S if self.best_effort else math.inf):
                done = await self._already()
                fresh = [dl for dl in letters if dl.original_seq not in done]
                if fresh:
                    await self.log.append_many(fresh)
        except Exception as exc:  # permission, a read-only store, a lost connection
            if not self.best_effort:
                raise
            self.publish = False
            self._log.warning(
                "dead_letter_not_published", subject=self.subject, error=f"{exc!r}"[:300]
            )
            return
        done.update(dl.original_seq for dl in fresh)
        self.published += len(fresh)

    async def _already(self) -> set[int]:
        """The original seqs this reader dead-lettered before (read once, on first need)."""
        if self._done is None:
            done: set[int] = set()
            async for _seq, _subject, data, _t in self.log.read_raw(
                kinds=["deadletter"], sources=[self.reader]
            ):
                try:
                    ev = decode(data)
                except EventDecodeError:
                    continue  # someone else's garbage on our subject: not ours to trust
                if isinstance(ev, DeadLettered) and ev.source == self.reader:
                    done.add(ev.original_seq)
            self._done = done
        return self._done
