"""MWRA's knobs: one frozen Struct, every field with a default and the reason for it.

Decoded from the `[mwra]` table of a spec (or built in code); imports nothing heavy.
"""

from __future__ import annotations

import math

import msgspec

from mrl_actors.checks import check_float
from mrl_actors.errors import ConfigError

_FLOATS = (
    "max_move_fraction",
    "liveness_interval_s",
    "dead_after",
    "gain_horizon_s",
    "default_move_s",
    "hysteresis",
    "ema_alpha",
    "rate_window_s",
    "reverse_margin",
    "uncertainty_z",
)


class MwraConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the allocator trades throughput balance against the cost of moving slots."""

    # Target ratio of learner step rates, by policy name; a policy not named weighs 1.0, so the
    # default asks every policy to take steps at the same rate.
    ratio: dict[str, float] = {}
    # Learner slots each policy holds (data-parallel learner width); MWRA places them first and
    # moves only rollout slots when it rebalances.
    learner_slots: dict[str, int] = {}
    # At most this share of the rollout slots changes owner in one decision (verl's dynamic
    # scheduler steps its ratio by 0.02 to 0.1); always at least one slot.
    max_move_fraction: float = 0.1
    # Nodes send `NodeHeartbeat` this often; a node silent for `dead_after` intervals is dead.
    liveness_interval_s: float = 10.0
    # 1.5 intervals, with the actor ticking every quarter interval, reassigns a dead node's
    # slots within 1.75 intervals of its last heartbeat (the promise is two).
    dead_after: float = 1.5
    # Move only when the expected gain over `gain_horizon_s` beats the measured cost of the moves.
    cost_gate: bool = True
    # The horizon a move's gain is counted over (about the time to the next real change).
    gain_horizon_s: float = 300.0
    # The gate's cost is the mean of the last this-many measured moves (`SlotMoveMeasured`).
    cost_window: int = 3
    # Seconds a move is assumed to cost before any has been measured.
    default_move_s: float = 30.0
    # Do not move for less than this relative gain in balanced step rate: estimates are noisy,
    # and two nearly equal allocations must not alternate.
    hysteresis: float = 0.02
    # A move is not reversed within this many decision intervals (an interval: every policy's
    # learner stepped once and every node reported once, i.e. at least `liveness_interval_s`),
    # unless the membership changed or reversing gains `reverse_margin` beyond the hysteresis.
    # Rates measured right after a move are few and noisy; undoing a move on them is churn.
    hold_intervals: int = 6
    # The extra relative gain a reversal inside the hold needs on top of `hysteresis`.
    reverse_margin: float = 0.25
    # A move's gain must clear the hysteresis even with the rates it is planned on taken this
    # many standard errors against it (errors from the number and spread of the reports in
    # `rate_window_s`); a policy with fewer than two reports there is not moved for. 0: off.
    # 0.5 keeps the simulator's noisy-rate runs at 0.98 of the best static split at 8 slots.
    uncertainty_z: float = 0.5
    # Weight of a new learner timing (wait, compute, samples per step) in its running average.
    ema_alpha: float = 0.3
    # Time constant of each node's throughput average: long enough that per-report noise (20%
    # is common) cannot flip a decision, short against how fast completion lengths drift.
    rate_window_s: float = 120.0

    def __post_init__(self) -> None:
        for name in _FLOATS:  # NaN passes every comparison below: refuse it (and inf) first
            check_float(self, name)
        for name, weight in self.ratio.items():
            if not math.isfinite(weight):
                raise ConfigError(f"mwra.ratio.{name} is {weight}; weights must be finite")
        if not 0.0 < self.max_move_fraction <= 1.0:
            raise ConfigError(f"mwra.max_move_fraction is {self.max_move_fraction}; need (0, 1]")
        if self.liveness_interval_s <= 0 or self.dead_after < 1.0:  # 1: one missed beat
            raise ConfigError("mwra.liveness_interval_s must be > 0 and mwra.dead_after >= 1")
        if self.dead_after > 1.75:
            raise ConfigError(
                f"mwra.dead_after is {self.dead_after}; above 1.75 a dead node's slots may wait "
                "more than two liveness intervals"
            )
        if not 0.0 < self.ema_alpha <= 1.0:
            raise ConfigError(f"mwra.ema_alpha is {self.ema_alpha}; need (0, 1]")
        if self.rate_window_s <= 0:
            raise ConfigError(f"mwra.rate_window_s is {self.rate_window_s}; need > 0")
        if self.cost_window < 1 or self.gain_horizon_s <= 0 or self.default_move_s < 0:
            raise ConfigError("mwra.cost_window >= 1, gain_horizon_s > 0, default_move_s >= 0")
        if self.hold_intervals < 0 or self.reverse_margin < 0 or self.uncertainty_z < 0:
            raise ConfigError("mwra.hold_intervals, reverse_margin, uncertainty_z must be >= 0")
        if self.hysteresis < 0:
            raise ConfigError(f"mwra.hysteresis is {self.hysteresis}; need >= 0")
        for name, weight in self.ratio.items():
            if not weight > 0:
                raise ConfigError(f"mwra.ratio.{name} is {weight}; weights must be > 0")
        for name, n in self.learner_slots.items():
            if n < 1:
                raise ConfigError(f"mwra.learner_slots.{name} is {n}; need >= 1")

    def weight(self, policy: str) -> float:
        return self.ratio.get(policy, 1.0)

    def learners(self, policy: str) -> int:
        return self.learner_slots.get(policy, 1)

    @property
    def tick_s(self) -> float:
        """How often the actor re-checks liveness between weight-version boundaries."""
        return self.liveness_interval_s / 4
