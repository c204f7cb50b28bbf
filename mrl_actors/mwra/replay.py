"""Driving the fold and the rule, live or from a log, and checking a log's decisions.

`Allocator` is the loop an MWRA actor (or the simulator) runs: `observe` every event it reads,
`step(now)` at each weight-version boundary and every `config.tick_s`; a decision is folded back
into the state at once, as the actor would read its own write.

`check` replays a log: for each recorded `SlotsAssigned` from MWRA, the rule is asked at that
event's `time_ns` with the state folded from the log up to the event's `seen_seq` (the prefix the
live actor had read; everything before the event when it has none, as in the simulator), and
must give the same event. Records are folded at the time the server stored them, as the live
actor folded them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from mrl_actors import events as ev
from mrl_actors.mwra.config import MwraConfig
from mrl_actors.mwra.rule import SOURCE, decide
from mrl_actors.mwra.state import MwraState, evolve
from mrl_actors.see.record import Record


class Allocator:
    """MWRA's state and rule held together; no I/O."""

    def __init__(self, config: MwraConfig, state: MwraState | None = None) -> None:
        self.config = config
        self.state = state or MwraState()
        self.decisions: list[ev.SlotsAssigned] = []

    def observe(self, event: ev.Event) -> None:
        self.state = evolve(
            self.state,
            event,
            alpha=self.config.ema_alpha,
            rate_window_s=self.config.rate_window_s,
        )

    def step(self, now_ns: int) -> ev.SlotsAssigned | None:
        decision = decide(self.state, now_ns, self.config)
        if decision is not None:
            self.observe(decision)
            self.decisions.append(decision)
        return decision


class ReplayMismatch(msgspec.Struct, frozen=True):
    index: int  # position of the recorded decision in the replayed events
    recorded: ev.SlotsAssigned
    replayed: ev.SlotsAssigned | None


def check(records: Iterable[Record[Any] | ev.Event], config: MwraConfig) -> list[ReplayMismatch]:
    """Every recorded MWRA decision the rule does not reproduce (empty: the log replays).

    `records` are the log's records in sequence order (any kinds: the fold ignores what it does
    not read), or bare events, numbered 1, 2, ... in the order given.
    """
    items = [
        (r.seq, r.event, r.time_ns) if isinstance(r, Record) else (i + 1, r, 0)
        for i, r in enumerate(records)
    ]
    wanted = sorted(
        {e.seen_seq for _, e, _ in items if isinstance(e, ev.SlotsAssigned) and e.seen_seq > 0}
    )
    snapshots: dict[int, MwraState] = {}
    state = MwraState()
    mismatches: list[ReplayMismatch] = []
    for i, (seq, event, at_ns) in enumerate(items):
        while wanted and wanted[0] < seq:  # the state of the log up to and including wanted[0]
            snapshots[wanted.pop(0)] = state
        if isinstance(event, ev.SlotsAssigned) and event.source == SOURCE:
            base = snapshots.get(event.seen_seq, state) if event.seen_seq else state
            replayed = decide(base, event.time_ns, config)
            if replayed is not None and event.seen_seq:
                replayed = msgspec.structs.replace(replayed, seen_seq=event.seen_seq)
            if replayed != event:
                mismatches.append(ReplayMismatch(i, event, replayed))
        state = evolve(
            state, event, alpha=config.ema_alpha, rate_window_s=config.rate_window_s, at_ns=at_ns
        )
    return mismatches
