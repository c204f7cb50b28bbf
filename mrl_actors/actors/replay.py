"""Exact replay: re-feed a policy's learner the inputs its `LearnerStepCompleted` events recorded.

Each learner step names the stream sequences it consumed. Replay fetches exactly those events,
assembles them as the live actor did (`actors.state.assemble`), runs the same probe and learner
step, and checks the weights' sha256 against the one the step logged. On CPU the match is bitwise
(same thread count); a mismatch raises `ReplayMismatchError` naming the step.

Resume uses it to bring a restarted policy back to its last logged step from its `step-0`
checkpoint, so a resumed run continues from weights the log vouches for.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

from mrl_actors.actors.runtime import PolicyRuntime
from mrl_actors.actors.state import assemble, split_consumed
from mrl_actors.errors import EventDecodeError, MrlError
from mrl_actors.events import Event, LearnerStepCompleted
from mrl_actors.logs import get_logger
from mrl_actors.probes import PromptInputs
from mrl_actors.probes.config import ProbeName
from mrl_actors.probes.registry import PROBE_NAMES
from mrl_actors.see.deadletter import DeadLetters
from mrl_actors.see.port import LogPort
from mrl_actors.see.record import Record


class ReplayMismatchError(MrlError):
    """Replayed weights differ from the checksum a learner step logged."""


async def learner_steps(log: LogPort, policy: str) -> list[LearnerStepCompleted]:
    """A policy's learner steps in log order.

    Replay runs as the policy (before its actor starts), so a bad message on its learner subject
    becomes a dead letter of that policy, as in its actor's fold, and is skipped.
    """
    out = []
    dead = DeadLetters(log, policy)
    async for rec in log.read(start_seq=1, kinds=["learner"], sources=[policy], dead_letters=dead):
        if isinstance(rec.event, LearnerStepCompleted) and rec.event.policy == policy:
            out.append(rec.event)
    return out


# Called after each replayed (and verified) step with its event, inputs and learner metrics.
StepHook = Callable[[LearnerStepCompleted, list[PromptInputs], dict[str, float]], Awaitable[None]]


async def replay(
    log: LogPort,
    rt: PolicyRuntime,
    *,
    upto: int | None = None,
    after: int = 0,
    verify: bool = True,
    on_step: StepHook | None = None,
) -> int:
    """Re-run `rt`'s logged learner steps `after`+1..`upto` (all by default); returns how many.

    `after` > 0 continues a learner restored from its step-`after` checkpoint (an asynchronous
    learner's restart: the newest stored checkpoint plus the log's tail).
    """
    steps = await learner_steps(log, rt.name)
    steps = steps[:upto] if upto is not None else steps
    steps = [ev for ev in steps if ev.step > after]
    logger = get_logger(__name__, policy=rt.name)
    for ev in steps:
        records: list[Record[Event]] = []
        for c in ev.consumed:
            try:
                rec = await log.get(c.seq)
            except EventDecodeError as exc:
                raise ReplayMismatchError(
                    f"{rt.name} step {ev.step}: seq {c.seq}, which the step consumed, no longer "
                    f"decodes ({exc}); the log was altered"
                ) from exc
            if rec.event.event_id != c.event_id:
                raise ReplayMismatchError(
                    f"{rt.name} step {ev.step}: seq {c.seq} holds {rec.event.event_id!r}, the step "
                    f"recorded {c.event_id!r}"
                )
            records.append(rec)
        own, peers = split_consumed(rt.name, records)
        probe = _probe(ev)
        inputs = assemble(own, peers)
        _, metrics = await anyio.to_thread.run_sync(rt.learn, probe, inputs, ev.step - 1)
        if verify:
            sha = await anyio.to_thread.run_sync(rt.learner.state_dict_sha256)
            if sha != ev.weights_sha256:
                raise ReplayMismatchError(
                    f"{rt.name} step {ev.step}: replayed weights {sha[:12]} differ from the "
                    f"logged {ev.weights_sha256[:12]}"
                )
        if on_step is not None:
            await on_step(ev, inputs, metrics)
        logger.debug("replayed", step=ev.step)
    return len(steps)


def _probe(ev: LearnerStepCompleted) -> ProbeName:
    for name in PROBE_NAMES:
        if name == ev.probe:
            return name
    raise ReplayMismatchError(f"{ev.policy} step {ev.step}: unknown probe {ev.probe!r} in the log")
