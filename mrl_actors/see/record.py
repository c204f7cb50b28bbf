"""`Record`: an event as the log stored it. The one fold input of the codebase.

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
