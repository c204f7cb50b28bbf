"""What the log hands back: a `Record` for a read, an `Ack` for a write.

`Record` is an event as the log stored it, the one fold input of the codebase.

Every fold (`PolicyState`'s `evolve`, a `FoldApplier`, the probes' inputs, replay) takes records,
so what an actor consumed can always be named by stream sequence. Tests and replay build them
with just `Record(seq, event)`; reads from the log also fill in the subject and server time.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import msgspec

E = TypeVar("E", covariant=True)  # a Record[RolloutGroupCompleted] is a Record[Event]


class Record(msgspec.Struct, Generic[E], frozen=True):
    """An event with its stream sequence, subject and server timestamp (ns since epoch)."""

    seq: int
    event: E
    subject: str = ""
    time_ns: int = 0


class Ack(msgspec.Struct, frozen=True):
    """A stored append: its stream sequence, and whether the server had it already."""

    seq: int
    duplicate: bool = False  # the same Nats-Msg-Id was stored before (a retried publish)
