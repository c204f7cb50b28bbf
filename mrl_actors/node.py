"""A node hosts policy actors on one machine, in one anyio task group.

`mrl run` runs one node in its own process next to the embedded server; `mrl-node` runs the same
code as a daemon that joins a server by URL and hosts the policies it is given. Before an actor
starts, its policy is brought to the last step its log records (from the `step-0` checkpoint,
replaying the logged inputs), so a killed node resumes where the log says it was.

With `[run] mode = "async"` a policy is hosted as its learner and `run.rollout_replicas` rollout
actors (`mrl_actors.actors.roles`), each on its own connection; the learner restores itself from
its newest stored checkpoint and the log's tail.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from mrl_actors.actors.policy import ActorOptions, PolicyActor
from mrl_actors.actors.runtime import PolicyRuntime, build_runtime, checkpoint_dir
from mrl_actors.events import NodeJoined, NodeLeft, event_id
from mrl_actors.logs import get_logger
from mrl_actors.spec import PolicySpec, RunSpec
from mrl_actors.tasks import make_task


def prepare_runtime(spec: RunSpec, policy: PolicySpec, run_dir: Path) -> PolicyRuntime:
    """The policy at step 0: from its `step-0` checkpoint, saved (atomically) on the first start.

    A start killed while saving `step-0` leaves no `step-0` (or, from older versions, one without
    the completeness marker): it is discarded with any temporary leftovers and saved again.
    """
    from mrl_actors.models import discard, discard_partial_saves, is_complete

    task = make_task(spec.task)
    start = checkpoint_dir(run_dir, policy.name, 0)
    logger = get_logger(__name__, run=spec.run.name, policy=policy.name)
    for gone in discard_partial_saves(start.parent):  # this process owns the policy's directory
        logger.warning("partial_checkpoint_discarded", path=str(gone))
    if is_complete(start):
        return build_runtime(spec, policy, task, weights_dir=start)
    if start.exists():
        logger.warning("incomplete_checkpoint_discarded", path=str(start))
        discard(start)
    rt = build_runtime(spec, policy, task)
    rt.learner.save_checkpoint(start, rt.tokenizer)
    return rt


def set_threads(spec: RunSpec) -> None:
    """Share the cores between the spec's policies, however many this process hosts.

    The count depends only on the machine and the spec, so a run, its resume and its replay (by
    `mrl run` or by an `mrl-node` hosting some of the policies) do the same float arithmetic.
    """
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, len(spec.policies))))


async def run_node(
    log: Any,
    spec: RunSpec,
    run_dir: Path,
    *,
    node: str = "local",
    policies: Sequence[str] | None = None,
    opts: ActorOptions | None = None,
    log_for: Callable[[str], AbstractAsyncContextManager[Any]] | None = None,
) -> None:
    """Host `policies` (all of the spec's by default) until each has taken its steps.

    `log` writes the node's own events. With `log_for`, each policy actor gets its own
    connection, `log_for(policy)`, as its own user: the server, not this process, decides what
    each actor may write (`mrl_actors.auth`). Without it, the actors share `log`.
    """
    from mrl_actors.replay import replay

    chosen = [p for p in spec.policies if policies is None or p.name in policies]
    opts = opts or ActorOptions(node=node)
    logger = get_logger(__name__, run=spec.run.name, node=node)
    set_threads(spec)
    await log.append(
        NodeJoined(
            run=spec.run.name,
            source=node,
            event_id=event_id("node", spec.run.name, node, "joined", time.time_ns()),
            time_ns=time.time_ns(),
            node=node,
            host=socket.gethostname(),
            pid=os.getpid(),
            slots=len(chosen),
            devices=["cpu"],
        )
    )
    reason = "completed"
    try:
        if spec.run.mode == "async":
            await _host_async(log, spec, run_dir, chosen, opts, log_for)
            return
        async with AsyncExitStack() as stack:
            actors = []
            for p in chosen:
                own = log if log_for is None else await stack.enter_async_context(log_for(p.name))
                rt = await anyio.to_thread.run_sync(prepare_runtime, spec, p, run_dir)
                replayed = await replay(own, rt)
                logger.info("policy_ready", policy=p.name, replayed_steps=replayed)
                actors.append(PolicyActor(own, rt, run_dir, opts))
            async with anyio.create_task_group() as tg:
                for actor in actors:
                    await tg.start(actor.run)
    except BaseException as exc:
        reason = f"{type(exc).__name__}: {exc}"[:500]
        raise
    finally:
        if log.nc.is_connected:  # with the server gone there is no one to tell: do not wait
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await log.append(
                    NodeLeft(
                        run=spec.run.name,
                        source=node,
                        event_id=event_id("node", spec.run.name, node, "left", time.time_ns()),
                        time_ns=time.time_ns(),
                        node=node,
                        reason=reason,
                    )
                )


async def _host_async(
    log: Any,
    spec: RunSpec,
    run_dir: Path,
    chosen: Sequence[PolicySpec],
    opts: ActorOptions,
    log_for: Callable[[str], AbstractAsyncContextManager[Any]] | None,
) -> None:
    """Each policy's learner and `run.rollout_replicas` rollout actors, each on its own
    connection as its policy's user (or all on `log` without `log_for`)."""
    from mrl_actors.actors.roles import run_policy_async

    async with AsyncExitStack() as stack:

        async def connect(name: str) -> Any:
            return log if log_for is None else await stack.enter_async_context(log_for(name))

        async with anyio.create_task_group() as tg:
            for p in chosen:
                learner_log = await connect(p.name)
                rollout_logs = [await connect(p.name) for _ in range(spec.run.rollout_replicas)]
                host = partial(
                    run_policy_async, learner_log, rollout_logs, spec, p.name, run_dir, opts=opts
                )
                tg.start_soon(host)  # every policy's actors start side by side
