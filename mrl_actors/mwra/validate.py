"""Which allocator decisions a node obeys: only a valid successor that MWRA's rule makes again.

Any node may hold the MWRA lease, so every node user may publish on `slots.mwra` (and, to start
a run, on `slots.placement`): the server cannot tell an honest decision from a forged one. A
node therefore checks each `SlotsAssigned` before it obeys it, from the log alone:

- the spec's placement (`source = "placement"`): valid only as epoch 1, the first decision;
- an MWRA decision (`source = "mwra"`, and only when the spec's allocator is MWRA): valid only
  as the successor of the last valid decision (epoch + 1), made from a prefix of the log that
  holds that decision (`seen_seq` at or after it, before the decision itself), stamped within a
  liveness interval of the time the server stored it, and only if MWRA's rule, asked at its
  `time_ns` with the fold of the log up to its `seen_seq`, makes exactly this decision (the
  check `mwra.replay.check` runs on a whole log, made record by record);
- any other `SlotsAssigned` is invalid.

An invalid decision is not folded (neither here nor into the MWRA state this check keeps), so
the run goes on under the last valid one, and a forged epoch of 10**9 cannot make every later
honest decision look stale.
"""

from __future__ import annotations

from collections import deque

import msgspec

from mrl_actors import events as ev
from mrl_actors.mwra.config import MwraConfig
from mrl_actors.mwra.rule import SOURCE, decide
from mrl_actors.mwra.state import MwraState, evolve

PLACEMENT_SOURCE = "placement"  # mrl_actors.run.placement.PLACEMENT_SOURCE
# States kept to replay a decision at its `seen_seq` (one per folded record since the last valid
# decision): a decision made from an older prefix than this is refused.
MAX_HISTORY = 20_000


class DecisionCheck:
    """The chain of valid decisions and MWRA's fold of the log, record by record."""

    def __init__(self, config: MwraConfig, *, mwra: bool) -> None:
        self.config = config
        self.mwra = mwra  # the spec's allocator is MWRA: its decisions may be valid
        self.state = MwraState()
        self.epoch = 0  # the last valid decision's epoch
        self.valid_seq = 0  # and its sequence
        self.refused = 0
        self._history: deque[tuple[int, MwraState]] = deque(maxlen=MAX_HISTORY)

    def observe(self, seq: int, event: ev.Event, at_ns: int = 0) -> str | None:
        """Fold the record at `seq` (stored at `at_ns`); for a `SlotsAssigned`, None when it
        is valid (obey it), else why it is not (it is then not folded)."""
        why = self.why_invalid(seq, event, at_ns) if isinstance(event, ev.SlotsAssigned) else None
        if why is not None:
            self.refused += 1
            return why
        self.state = evolve(
            self.state,
            event,
            alpha=self.config.ema_alpha,
            rate_window_s=self.config.rate_window_s,
            at_ns=at_ns,
        )
        if isinstance(event, ev.SlotsAssigned):
            self.epoch, self.valid_seq = event.epoch, seq
            self._history.clear()
        self._history.append((seq, self.state))
        return None

    def why_invalid(self, seq: int, event: ev.SlotsAssigned, at_ns: int) -> str | None:
        if event.epoch != self.epoch + 1:
            return f"epoch {event.epoch} is not the successor of epoch {self.epoch}"
        if event.source == PLACEMENT_SOURCE:
            return None if event.epoch == 1 else "a placement is valid only as epoch 1"
        if event.source != SOURCE or not self.mwra:
            return f"{event.source!r} does not make this run's decisions"
        if not self.valid_seq <= event.seen_seq < seq:
            return f"seen_seq {event.seen_seq} is not in [{self.valid_seq}, {seq})"
        tolerance_ns = int(self.config.liveness_interval_s * 1e9)
        if at_ns and abs(at_ns - event.time_ns) > tolerance_ns:
            return f"time_ns {event.time_ns} is not within a liveness interval of the server's"
        base = self._state_at(event.seen_seq)
        if base is None:
            return f"seen_seq {event.seen_seq} is older than the states kept"
        made = decide(base, event.time_ns, self.config)
        if made is None or msgspec.structs.replace(made, seen_seq=event.seen_seq) != event:
            return "MWRA's rule does not make this decision from the log up to its seen_seq"
        return None

    def _state_at(self, seen_seq: int) -> MwraState | None:
        """The fold of the log up to and including `seen_seq`."""
        best: MwraState | None = None
        for seq, state in self._history:
            if seq > seen_seq:
                break
            best = state
        if best is None and not self._history and self.valid_seq <= seen_seq:
            best = self.state
        return best
