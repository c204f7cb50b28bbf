"""The part of a learner step every learning actor shares: from the learner's metrics to the
step in the log, and the loop of steps around it.

A lockstep `PolicyActor` and an asynchronous `LearnerActor` gather their inputs differently
(sampling their own groups, or waiting for rollout actors' groups); once the probe and learner
have run, both finish a step the same way: the step-0 evaluation and the due evaluations join
the metrics, `LearnerStepCompleted` records every sequence consumed and the weights' checksum,
and the actor waits until its own fold has taken the step (its next step reads that state).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import anyio
import numpy as np

from mrl_actors.actors.follow import Follower
from mrl_actors.actors.options import ActorOptions
from mrl_actors.actors.runtime import PolicyRuntime
from mrl_actors.actors.state import start_state
from mrl_actors.errors import LogError
from mrl_actors.events import ConsumedEvent, LearnerStepCompleted, RolloutGroupCompleted, event_id
from mrl_actors.logs import get_logger
from mrl_actors.report.tensorboard import StepScalars, spec_hparams
from mrl_actors.see.port import LogPort
from mrl_actors.see.record import Record
from mrl_actors.see.writer import OwnedWriter


class LearningActor:
    """What an actor that takes its policy's learner steps holds: the log, the runtime, its peers,
    its fold's state, a follower of its own and its peers' subjects, a writer owning its subject
    and the step tail. Subclasses name their role and the kinds they fold, and define `_fold`."""

    ROLE: ClassVar[str]
    KINDS: ClassVar[tuple[str, ...]]

    def __init__(self, log: LogPort, rt: PolicyRuntime, run_dir: Path, opts: ActorOptions) -> None:
        self.log = log
        self.rt = rt
        self.spec = rt.spec
        self.run_id = rt.spec.run.name
        self.name = rt.name
        self.run_dir = run_dir
        self.peers = [p.name for p in rt.spec.policies if p.name != self.name]
        self.state = start_state(rt.spec, self.name)
        self._log = get_logger(
            type(self).__module__, run=self.run_id, actor=self.ROLE, policy=self.name
        )
        self.follower = Follower(
            log, self.name, self._fold, kinds=self.KINDS, sources=[self.name, *self.peers]
        )
        self._writer = OwnedWriter(log, self.name)
        self.tail = StepTail(rt, self._writer, self.follower, opts, run_dir)

    def _fold(self, rec: Record[Any]) -> None:
        raise NotImplementedError


def outcome(groups: Sequence[Record[RolloutGroupCompleted]]) -> dict[str, float]:
    """Mean training reward and success rate of the step's own groups (0 without any)."""
    rewards = np.concatenate([g.event.rewards_array() for g in groups] or [np.zeros(0)])
    successes = [c.success for g in groups for c in g.event.completions]
    return {
        "reward_mean": float(rewards.mean()) if rewards.size else 0.0,
        "success_rate": float(np.mean(successes)) if successes else 0.0,
    }


class StepTail:
    """What finishing a learner step takes, for one actor: its runtime, its writer and follower,
    its host's options, the evaluation items and its TensorBoard scalars."""

    def __init__(
        self,
        rt: PolicyRuntime,
        writer: OwnedWriter,
        follower: Follower,
        opts: ActorOptions,
        run_dir: Path,
    ) -> None:
        self.rt = rt
        self.writer = writer
        self.follower = follower
        self.opts = opts
        self.eval_items = rt.task.test_items()[: rt.spec.run.eval_size]
        self.scalars = StepScalars(  # [run] tensorboard, with the policy's hyperparameters
            run_dir,
            rt.name,
            enabled=rt.spec.run.tensorboard or "tensorboard" in rt.spec.run.report_to,
            last_step=rt.spec.run.steps,
            hparams=spec_hparams(rt.spec, rt.name),
        )

    async def take_steps(
        self,
        start: int,
        step: Callable[[int, dict[str, float] | None], Awaitable[None]],
        logged_version: Callable[[], int],
    ) -> None:
        """Steps `start + 1 ..= run.steps` (or `opts.stop_after` of them), each checked against
        the fold: after step k the log must say the policy is at version k."""
        rt, opts = self.rt, self.opts
        initial: dict[str, float] | None = None
        if start == 0:  # measured before the first step, reported with it
            initial = await anyio.to_thread.run_sync(rt.evaluate, self.eval_items)
        last = rt.spec.run.steps
        if opts.stop_after is not None:
            last = min(last, opts.stop_at.setdefault(rt.name, start + opts.stop_after))
        version = start
        while version < last:
            await step(version, initial)
            version += 1
            if logged_version() != version:
                raise LogError(
                    f"{rt.name}: took step {version} but the log says {logged_version()}"
                )
            initial = None

    async def complete(
        self,
        *,
        version: int,
        metrics: dict[str, float],
        initial: dict[str, float] | None,
        consumed: Sequence[Record[Any]],
        t_start: float,
    ) -> str:
        """Evaluate when due, append `LearnerStepCompleted` for step `version + 1` and wait until
        the fold has it. Returns the new weights' sha256."""
        rt = self.rt
        run, spec = rt.spec.run.name, rt.spec.run
        step = version + 1
        if initial is not None:
            metrics.update({f"{k}_initial": v for k, v in initial.items()})
            metrics.update(rt.start_metrics())  # where the warm start stopped
        if step % spec.eval_every == 0 or step == spec.steps:
            metrics.update(await anyio.to_thread.run_sync(rt.evaluate, self.eval_items))
        metrics["step_time_s"] = time.perf_counter() - t_start
        sha = await anyio.to_thread.run_sync(rt.learner.state_dict_sha256)
        seq = await self.writer.append(
            LearnerStepCompleted(
                run=run,
                source=rt.name,
                event_id=event_id("learner", run, rt.name, step),
                time_ns=time.time_ns(),
                policy=rt.name,
                step=step,
                probe=spec.probe,
                consumed=[ConsumedEvent(s.seq, s.event.event_id) for s in consumed],
                weights_sha256=sha,
                metrics=metrics,
            )
        )
        await self.follower.folded(seq, f"learner step {step}")
        return sha

    def announce(self, logger: Any, step: int, metrics: dict[str, float], **fields: Any) -> None:
        """The step's log line, TensorBoard scalars and the host's callback (progress bars)."""
        acc = metrics.get("eval_accuracy")
        logger.info("step", step=step, reward=metrics["reward_mean"], acc=acc, **fields)
        self.scalars.write(step, metrics)
        if self.opts.on_step is not None:
            self.opts.on_step(self.rt.name, step, metrics)
