"""What MWRA remembers besides the state: its recent moves, and how sure its rate estimates are.

A pure fold beside `state.evolve` (same events, same order, same determinism), kept apart from
the state so that each stays one idea:

- `moves`: the last few changes of the rollout split made on an unchanged membership, each with
  the learner versions at the time, so the rule can tell a move it is about to reverse from one
  the cluster has long lived with (`rule._rebalance` holds a move for
  `MwraConfig.hold_intervals` decision intervals);
- `rates`: per policy, the reports' rates (`ThroughputReported`, role rollout) as decayed sums
  over about `rate_window_s` of report time: the number of reports in the window (an effective
  count) and their spread, hence the standard error of the rate the rule plans with. A move
  must gain more than that uncertainty (`MwraConfig.uncertainty_z` standard errors).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from mrl_actors import events as ev

MOVES_KEPT = 8


@dataclass(frozen=True, slots=True)
class Move:
    """One change of the rollout split on an unchanged membership."""

    epoch: int
    time_ns: int
    delta: dict[str, int]  # rollout slots gained (> 0) or given up (< 0), per policy
    members: frozenset[str]  # the nodes the assignment named
    versions: dict[str, int]  # each policy's learner version when it was made


@dataclass(frozen=True, slots=True)
class RateStats:
    """Decayed sums of one policy's reported rates: weights, weighted values and squares."""

    w: float = 0.0  # sum of weights
    w2: float = 0.0  # sum of squared weights (effective count = w^2 / w2)
    s1: float = 0.0
    s2: float = 0.0
    last_ns: int = 0

    @property
    def reports(self) -> float:
        """The effective number of reports in the window."""
        return self.w * self.w / self.w2 if self.w2 > 0 else 0.0

    @property
    def mean(self) -> float:
        return self.s1 / self.w if self.w > 0 else 0.0

    def rel_error(self) -> float:
        """Standard error of the mean over the mean; inf with fewer than two reports."""
        n = self.reports
        if n < 2.0 - 1e-9 or self.mean <= 0:
            return math.inf
        var = max(0.0, self.s2 / self.w - self.mean**2) * n / (n - 1.0)
        return math.sqrt(var / n) / self.mean


@dataclass(frozen=True, slots=True)
class Memory:
    epoch: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # rollout slots per policy in force
    members: frozenset[str] = frozenset()
    versions: dict[str, int] = field(default_factory=dict)  # learner versions seen
    moves: tuple[Move, ...] = ()  # oldest first
    rates: dict[str, RateStats] = field(default_factory=dict)


def _counts(event: ev.SlotsAssigned) -> dict[str, int]:
    out: dict[str, int] = {}
    for a in event.assignments:
        if a.role == "rollout":
            out[a.policy] = out.get(a.policy, 0) + 1
    return out


def remember(memory: Memory, event: ev.Event, *, rate_window_s: float = 120.0) -> Memory:
    """The memory after `event` (the same object for an event it does not read)."""
    match event:
        case ev.SlotsAssigned(epoch=epoch) if epoch > memory.epoch:
            counts = _counts(event)
            members = frozenset(a.node for a in event.assignments)
            moves = memory.moves
            names = set(counts) | set(memory.counts)
            delta = {p: counts.get(p, 0) - memory.counts.get(p, 0) for p in sorted(names)}
            if memory.epoch and members == memory.members and any(delta.values()):
                move = Move(epoch, event.time_ns, delta, members, dict(memory.versions))
                moves = (*moves, move)[-MOVES_KEPT:]
            return replace(memory, epoch=epoch, counts=counts, members=members, moves=moves)
        case (
            ev.LearnerStepTimed(policy=name, step=step)
            | ev.LearnerStepCompleted(policy=name, step=step)
        ):
            if step > memory.versions.get(name, 0):
                versions = dict(memory.versions)
                versions[name] = step
                return replace(memory, versions=versions)
        case ev.ThroughputReported(role="rollout", policy=name, time_ns=t):
            x = event.samples_per_s
            if not (math.isfinite(x) and x > 0):
                return memory
            old = memory.rates.get(name, RateStats())
            dt = max(0, t - old.last_ns) / 1e9 if old.last_ns else 0.0
            decay = math.exp(-dt / rate_window_s)
            stats = RateStats(
                w=old.w * decay + 1.0,
                w2=old.w2 * decay * decay + 1.0,
                s1=old.s1 * decay + x,
                s2=old.s2 * decay + x * x,
                last_ns=max(t, old.last_ns),
            )
            rates = dict(memory.rates)
            rates[name] = stats
            return replace(memory, rates=rates)
        case _:
            pass
    return memory
