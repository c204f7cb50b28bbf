"""`StepTail.take_steps` under `stop_after`: a stop at a step of the run, not a count per actor."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import anyio

from mrl_actors.actors.options import ActorOptions
from mrl_actors.actors.step import StepTail


def _tail(opts: ActorOptions, steps: int, log: list[int]) -> tuple[StepTail, Any]:
    tail = StepTail.__new__(StepTail)  # only what take_steps reads: no writer, no follower
    tail.rt = SimpleNamespace(name="gpt2", spec=SimpleNamespace(run=SimpleNamespace(steps=steps)))
    tail.opts = opts

    async def step(version: int, initial: dict[str, float] | None) -> None:
        log.append(version + 1)

    return tail, step


def test_a_learner_restarted_in_the_same_process_keeps_the_stop_of_the_first() -> None:
    """A node restarts a learner that returned (a new MWRA epoch names its slot again): the
    second must not take another `stop_after` steps."""
    opts, taken = ActorOptions(stop_after=1), []
    tail, step = _tail(opts, steps=3, log=taken)
    anyio.run(tail.take_steps, 1, step, lambda: taken[-1] if taken else 1)
    assert taken == [2]
    again, step = _tail(opts, steps=3, log=taken)
    anyio.run(again.take_steps, 2, step, lambda: taken[-1])
    assert taken == [2]
    assert opts.stop_at == {"gpt2": 2}


def test_without_stop_after_every_remaining_step_is_taken() -> None:
    taken: list[int] = []
    tail, step = _tail(ActorOptions(), steps=4, log=taken)
    anyio.run(tail.take_steps, 1, step, lambda: taken[-1] if taken else 1)
    assert taken == [2, 3, 4]
