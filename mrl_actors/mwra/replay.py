"""Driving the fold and the rule, live or from a log, and checking a log's decisions.

`Allocator` is the loop an MWRA actor (or the simulator) runs: `observe` every event it reads,
`step(now)` at each weight-version boundary and every `config.tick_s`; a decision is folded back
into the state at once, as the actor would read its own write.

`check` replays a log: before each recorded `SlotsAssigned` from MWRA, the rule is asked at that
event's `time_ns` with the state folded from everything before it, and must give the same event.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from mrl_actors import events as ev
from mrl_actors.mwra.config import MwraConfig
from mrl_actors.mwra.rule import SOURCE, decide
from mrl_actors.mwra.state import MwraState, evolve


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


def check(events: Iterable[ev.Event], config: MwraConfig) -> list[ReplayMismatch]:
    """Every recorded MWRA decision the rule does not reproduce (empty: the log replays)."""
    state = MwraState()
    mismatches: list[ReplayMismatch] = []
    for i, event in enumerate(events):
        if isinstance(event, ev.SlotsAssigned) and event.source == SOURCE:
            replayed = decide(state, event.time_ns, config)
            if replayed != event:
                mismatches.append(ReplayMismatch(i, event, replayed))
        state = evolve(state, event, alpha=config.ema_alpha, rate_window_s=config.rate_window_s)
    return mismatches
