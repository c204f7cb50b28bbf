"""`ActorOptions`: what the host of an actor (a node, a test) tells it beyond the spec."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class ActorOptions:
    node: str = "local"  # the node hosting the actor: reported in its throughput events
    # called after each learner step with (policy, step, metrics): progress bars, tests
    on_step: Callable[[str, int, dict[str, float]], None] | None = None
    # stop after this many steps in this process (tests that kill a run mid-way); None: run all
    stop_after: int | None = None
