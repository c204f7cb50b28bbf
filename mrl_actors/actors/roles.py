"""Entry points a node calls to host a policy's actors, by role (`ROLES`).

Each takes the log connection the actor writes through (its policy's user: the server decides
what it may publish), builds the actor's runtime in a worker thread, and runs the actor until its
work is done. `task_status.started()` is called once the actor follows the log (a learner: once
it has published its current weights, which is what rollout actors wait for).
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import anyio
from anyio.abc import TaskStatus

from mrl_actors.actors.learner import LearnerActor
from mrl_actors.actors.options import ActorOptions
from mrl_actors.actors.policy import PolicyActor
from mrl_actors.actors.replay import replay
from mrl_actors.actors.rollout import RolloutActor
from mrl_actors.actors.runtime import (
    PolicyRuntime,
    build_runtime,
    checkpoint_dir,
    engine_dir,
    prepare_runtime,
)
from mrl_actors.errors import ConfigError
from mrl_actors.events import SlotKey
from mrl_actors.logs import get_logger
from mrl_actors.models.load import is_complete
from mrl_actors.rollout.factory import evaluation_engine
from mrl_actors.see.port import LogPort
from mrl_actors.spec import PolicySpec, RunSpec
from mrl_actors.tasks import make_task


def _policy(spec: RunSpec, name: str) -> PolicySpec:
    for p in spec.policies:
        if p.name == name:
            return p
    raise ConfigError(f"policy {name!r} is not in run {spec.run.name!r}")


def _to_device(rt: PolicyRuntime, device: str) -> PolicyRuntime:
    """Move the runtime's model (in place: the optimizer keeps its parameters) to `device`."""
    if device != "cpu":
        rt.model.to(device)
    return rt


# transformers builds models under process-wide patches (meta-device initialisation), so two
# threads building at once corrupt each other's models: the actors of a process build in turn.
_BUILD_LOCK = threading.Lock()


def learner_runtime(spec: RunSpec, name: str, run_dir: Path, device: str = "cpu") -> PolicyRuntime:
    """The learner's runtime at step 0 (its `step-0` checkpoint, saved on the first start).

    An asynchronous learner samples nothing: it evaluates with an HF engine over its own model,
    so a vLLM policy's learner starts no engine of its own (its rollout actors do).
    """
    with _BUILD_LOCK:
        rt = prepare_runtime(spec, _policy(spec, name), run_dir, device)
    if spec.run.mode == "async" and rt.policy.engine.kind != "hf":
        rt.close()  # a vLLM engine starts on first use: this one never did
        rt.engine = evaluation_engine(rt.policy.engine, rt.model, rt.tokenizer)
    return rt


def rollout_runtime(spec: RunSpec, name: str, run_dir: Path, device: str = "cpu") -> PolicyRuntime:
    """A rollout actor's runtime: the model's architecture and tokenizer; weights come from the
    log (`WeightsPublished`), so on a host without the `step-0` checkpoint the initial model is
    built (not saved) just to have the right shapes."""
    start = checkpoint_dir(run_dir, name, 0)
    weights = start if is_complete(start) else None
    with _BUILD_LOCK:
        rt = build_runtime(
            spec,
            _policy(spec, name),
            make_task(spec.task),
            weights_dir=weights,
            engine_dir=engine_dir(run_dir, name),
            learns=False,
        )
        return _to_device(rt, device)


async def run_learner(
    log: LogPort,
    spec: RunSpec,
    policy_name: str,
    run_dir: Path,
    *,
    device: str = "cpu",
    opts: ActorOptions | None = None,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Host `policy_name`'s learner until it has taken `run.steps` (or `opts.stop_after`) steps."""
    if _policy(spec, policy_name).learner_slots > 1:  # ranks 1..N-1 in processes of their own
        from mrl_actors.actors.learner_ranks import hosted_ranks

        build = partial(learner_runtime, spec, policy_name, run_dir)
        async with hosted_ranks(spec, policy_name, run_dir, device, build) as lead:
            actor = LearnerActor(log, lead, run_dir, opts or ActorOptions())
            await actor.run(task_status=task_status)
        return
    rt = await anyio.to_thread.run_sync(learner_runtime, spec, policy_name, run_dir, device)
    actor = LearnerActor(log, rt, run_dir, opts or ActorOptions())
    try:
        await actor.run(task_status=task_status)
    finally:
        rt.close()


async def run_rollout(
    log: LogPort,
    spec: RunSpec,
    policy_name: str,
    replica: int,
    run_dir: Path,
    *,
    device: str = "cpu",
    opts: ActorOptions | None = None,
    slot: SlotKey | None = None,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Host one rollout replica of `policy_name` until its learner has finished: replica
    `replica` of `run.rollout_replicas`, or, given its node's `slot`, whatever share of the
    batches the log's assignments give that slot."""
    if slot is None and not 0 <= replica < spec.run.rollout_replicas:
        raise ConfigError(
            f"rollout replica {replica} of {policy_name!r}: the spec has "
            f"run.rollout_replicas = {spec.run.rollout_replicas}"
        )
    rt = await anyio.to_thread.run_sync(rollout_runtime, spec, policy_name, run_dir, device)
    actor = RolloutActor(log, rt, replica, opts or ActorOptions(), slot=slot, run_dir=run_dir)
    try:
        await actor.run(task_status=task_status)
    finally:
        rt.close()


async def run_policy_async(
    learner_log: LogPort,
    rollout_logs: Sequence[LogPort],
    spec: RunSpec,
    policy_name: str,
    run_dir: Path,
    *,
    device: str = "cpu",
    opts: ActorOptions | None = None,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """A policy's learner and its rollout replicas (one log each) in one task group.

    The rollouts stop when the learner returns (its steps done, or `opts.stop_after`).
    """
    async with anyio.create_task_group() as tg:

        async def learn(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            await run_learner(
                learner_log,
                spec,
                policy_name,
                run_dir,
                device=device,
                opts=opts,
                task_status=task_status,
            )
            tg.cancel_scope.cancel()

        await tg.start(learn)
        for replica, log in enumerate(rollout_logs):
            rollout = partial(
                run_rollout, log, spec, policy_name, replica, run_dir, device=device, opts=opts
            )
            await tg.start(rollout)
        task_status.started()


@dataclass
class Hosting:
    """What an actor entry point gets: its policy, where it runs and its log connection."""

    log: LogPort  # the actor's own connection (its user), or the node's
    spec: RunSpec
    policy: PolicySpec
    device: str  # the slot's device: "cpu" or "cuda:N"
    slot: int  # the slot's index on its node
    run_dir: Path
    opts: ActorOptions


async def host_lockstep(h: Hosting, *, task_status: TaskStatus[None]) -> None:
    """A lockstep policy: learner and rollouts in one actor (`PolicyActor`), resumed by replay."""
    rt = await anyio.to_thread.run_sync(prepare_runtime, h.spec, h.policy, h.run_dir, h.device)
    replayed = await replay(h.log, rt)
    get_logger(__name__, run=h.spec.run.name, policy=h.policy.name).info(
        "policy_ready", replayed_steps=replayed, device=h.device
    )
    try:
        await PolicyActor(h.log, rt, h.run_dir, h.opts).run(task_status=task_status)
    finally:
        rt.close()  # a vLLM engine's processes and files


async def host_learner(h: Hosting, *, task_status: TaskStatus[None]) -> None:
    """The learner slot of a policy: the lockstep actor, or the asynchronous learner."""
    if h.spec.run.mode != "async":
        await host_lockstep(h, task_status=task_status)
        return
    await run_learner(
        h.log,
        h.spec,
        h.policy.name,
        h.run_dir,
        device=h.device,
        opts=h.opts,
        task_status=task_status,
    )


async def host_rollout(h: Hosting, *, task_status: TaskStatus[None]) -> None:
    """A rollout slot of an asynchronous policy: it samples the prompt batches the log's
    assignments give its (node, slot) (`mrl_actors.actors.shares`), so the policy's slots
    partition the batches without overlap however the allocator moves them."""
    await run_rollout(
        h.log,
        h.spec,
        h.policy.name,
        h.slot,
        h.run_dir,
        device=h.device,
        opts=h.opts,
        slot=(h.opts.node, h.slot),
        task_status=task_status,
    )


# Actor entry points by role. A lockstep policy is one learner actor that also samples; an
# asynchronous one is a learner plus rollout actors (`mrl_actors.actors.roles`).
ROLES: dict[str, Callable[..., Awaitable[None]]] = {
    "learner": host_learner,
    "rollout": host_rollout,
}
