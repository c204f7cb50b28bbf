"""`ActorOptions`: what the host of an actor (a node, a test) tells it beyond the spec."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class ActorOptions:
    node: str = "local"  # the node hosting the actor: reported in its throughput events
    # called after each learner step with (policy, step, metrics): progress bars, tests
    on_step: Callable[[str, int, dict[str, float]], None] | None = None
    # stop after this many steps in this process (tests that kill a run mid-way); None: run all
    stop_after: int | None = None
    # the step each policy stops at under `stop_after`, fixed by its first learner here: a
    # learner that MWRA moves and restarts in this process keeps it rather than counting anew
    stop_at: dict[str, int] = field(default_factory=dict)
