"""A node hosts actors on one machine's slots, in one anyio task group.

`mrl run` runs one node in its own process next to the embedded server (with the MWRA allocator,
a node of CPU slots that runs it: `RunSpec.local_slot_count`); `mrl-node` runs the same code as
a daemon that joins a server by URL. A node offers slots (its GPUs, or CPU slots: see
`mrl_actors.run.placement`), says it is alive with a `NodeHeartbeat` event every liveness interval,
and hosts either

- the policies it is given (`policies`; all by default): the one-machine layout, or
- what `SlotsAssigned` events give its slots, when the spec has a `[placement]` (or its
  allocator is MWRA: then the node is also a candidate to run it, `mrl_actors.mwra.actor`,
  and reports how long each slot it switched took, `SlotMoveMeasured`): it follows the
  log's `slots` subjects, applies only a newer epoch than the one it holds (fencing), stops the
  actors whose slot moved and starts the newly assigned ones, each on its slot's device. It
  ends when every policy of the run has taken its steps (any node may have done them).

Liveness goes in the log (not a KV key with a TTL) because MWRA is a fold over the log: its
decisions must replay from the same events, heartbeats included. Before an actor starts, its
policy is brought to the last step its log records (from the `step-0` checkpoint, replaying the
logged inputs), so a killed node resumes where the log says it was.

With `[run] mode = "async"` a policy is its learner and `run.rollout_replicas` rollout actors
(`mrl_actors.actors.roles`), each on its own connection; the learner restores itself from its
newest stored checkpoint and the log's tail.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus

from mrl_actors.actors.options import ActorOptions
from mrl_actors.actors.policy import PolicyActor
from mrl_actors.actors.replay import replay
from mrl_actors.actors.roles import ROLES, Hosting, run_policy_async
from mrl_actors.actors.runtime import load_initial_model, prepare_runtime
from mrl_actors.errors import MrlError
from mrl_actors.events import (
    LearnerStepCompleted,
    NodeHeartbeat,
    NodeJoined,
    NodeLeft,
    RunFinished,
    SlotMoveMeasured,
    SlotsAssigned,
    event_id,
)
from mrl_actors.logs import get_logger
from mrl_actors.models.heap import set_mmap_threshold
from mrl_actors.mwra.actor import MWRA_KINDS, run_mwra
from mrl_actors.mwra.validate import DecisionCheck
from mrl_actors.report.metrics import MetricsConfig, serve_log
from mrl_actors.run.placement import (
    DeviceSlot,
    Hosted,
    NodeAssignment,
    apply,
    default_slots,
    ignored,
)
from mrl_actors.run.roster import Roster
from mrl_actors.see.port import LogFor, LogPort
from mrl_actors.see.stream import EventLog
from mrl_actors.spec import PolicySpec, RunSpec
from mrl_actors.tasks import make_task


def set_threads(spec: RunSpec, hosted: Sequence[str] | None = None) -> None:
    """Share the cores between the spec's policies, however many this process hosts.

    The count depends only on the machine and the spec, so a run, its resume and its replay (by
    `mrl run` or by an `mrl-node` hosting some of the policies) do the same float arithmetic. A
    process hosting one policy whose spec gives it `threads` takes that budget instead.
    """
    import torch

    budget = [p.threads for p in spec.policies if hosted is not None and list(hosted) == [p.name]]
    if budget and budget[0]:
        torch.set_num_threads(budget[0])
        return
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, len(spec.policies))))


def set_heap(spec: RunSpec) -> None:
    """The run's C heap setting for this process (`[run] malloc_mmap_threshold_mib`)."""
    set_mmap_threshold(spec.run.malloc_mmap_threshold_mib)


async def run_node(
    log: EventLog,  # the node's own connection (MWRA's lease needs the JetStream log itself)
    spec: RunSpec,
    run_dir: Path,
    *,
    node: str = "local",
    policies: Sequence[str] | None = None,
    slots: Sequence[DeviceSlot] | None = None,
    opts: ActorOptions | None = None,
    log_for: LogFor | None = None,
    liveness_s: float | None = None,
    metrics: MetricsConfig | None = None,
) -> None:
    """Host actors until the run (or this node's share of it) is done.

    With a spec `[placement]` and no `policies`, what `SlotsAssigned` gives this node's `slots`;
    otherwise `policies` (all of the spec's by default), each a lockstep actor on the first slot.
    `log` writes the node's own events. With `log_for`, each policy actor gets its own
    connection, `log_for(policy)`, as its own user: the server, not this process, decides what
    each actor may write (`mrl_actors.see.auth`). Without it, the actors share `log`. With
    `metrics`, the node serves the run's Prometheus metrics there, read from `log`, for as long
    as it runs (`mrl_actors.report.metrics.serve_log`).
    """
    slots = list(slots or default_slots())
    opts = dataclasses.replace(opts or ActorOptions(), node=node)  # actors report their node
    logger = get_logger(__name__, run=spec.run.name, node=node)
    set_threads(spec, policies)
    set_heap(spec)
    # the spec's `[mwra] liveness_interval_s` by default: MWRA judges a node by that interval
    liveness_s = liveness_s or spec.mwra.liveness_interval_s
    booted = time.time_ns()
    await log.append(
        NodeJoined(
            run=spec.run.name,
            source=node,
            event_id=event_id("node", spec.run.name, node, "joined", booted),
            time_ns=booted,
            node=node,
            host=socket.gethostname(),
            pid=os.getpid(),
            slots=len(slots),
            devices=[s.device for s in slots],
        )
    )
    epoch = [0]  # the newest assignment applied, for the heartbeat
    reason = "completed"
    try:
        async with anyio.create_task_group() as outer:
            outer.start_soon(_heartbeat, log, spec, node, booted, len(slots), epoch, liveness_s)
            if metrics is not None:
                await outer.start(serve_log, log, metrics)
            if spec.placement.allocator == "mwra" and policies is None:
                outer.start_soon(run_mwra, log, spec.run.name, node, spec.mwra_config())
            if spec.placement.assigned and policies is None:
                await _host_assigned(log, spec, run_dir, node, slots, opts, log_for, epoch)
            else:
                await _host_policies(log, spec, run_dir, slots[0], policies, opts, log_for)
            outer.cancel_scope.cancel()
    except BaseException as exc:
        reason = f"{type(exc).__name__}: {exc}"[:500]
        raise
    finally:
        if log.connected:  # with the server gone there is no one to tell: do not wait
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
        logger.info("node_stopped", reason=reason)


async def _heartbeat(
    log: LogPort, spec: RunSpec, node: str, booted: int, slots: int, epoch: list[int], every: float
) -> None:
    """`NodeHeartbeat` every `every` seconds; a failed one is logged and the next one tried."""
    logger = get_logger(__name__, run=spec.run.name, node=node)
    beat = 0
    while True:
        await anyio.sleep(every)
        beat += 1
        try:
            await log.append(
                NodeHeartbeat(
                    run=spec.run.name,
                    source=node,
                    event_id=event_id("node", spec.run.name, node, "heartbeat", booted, beat),
                    time_ns=time.time_ns(),
                    node=node,
                    slots=slots,
                    epoch=epoch[0],
                )
            )
        except MrlError as exc:  # a failover longer than the publish retries: try next time
            logger.warning("heartbeat_failed", error=str(exc))


@asynccontextmanager
async def _connection(log: LogPort, log_for: LogFor | None, policy: str) -> Any:
    if log_for is None:
        yield log
    else:
        async with log_for(policy) as own:
            yield own


async def _host_policies(
    log: LogPort,
    spec: RunSpec,
    run_dir: Path,
    slot: DeviceSlot,
    policies: Sequence[str] | None,
    opts: ActorOptions,
    log_for: LogFor | None,
) -> None:
    """The one-machine layout: the given policies, each a lockstep actor on `slot`.

    Every runtime is prepared (and replayed) before any actor starts, as `mrl run` always did.
    """
    logger = get_logger(__name__, run=spec.run.name, node=opts.node)
    chosen = [p for p in spec.policies if policies is None or p.name in policies]
    if spec.run.mode == "async":
        await _host_async(log, spec, run_dir, chosen, opts, log_for, slot.device)
        return
    async with AsyncExitStack() as stack:
        actors = []
        for p in chosen:
            own = await stack.enter_async_context(_connection(log, log_for, p.name))
            rt = await anyio.to_thread.run_sync(prepare_runtime, spec, p, run_dir, slot.device)
            stack.callback(rt.close)  # a vLLM engine's processes and files
            replayed = await replay(own, rt)
            logger.info("policy_ready", policy=p.name, replayed_steps=replayed)
            actors.append(PolicyActor(own, rt, run_dir, opts))
        async with anyio.create_task_group() as tg:
            for actor in actors:
                await tg.start(actor.run)


class _Assigned:
    """This node's share of a placed run: the assignment fold, running actors, the run's end."""

    def __init__(self, log: LogPort, spec: RunSpec, node: str, slots: list[DeviceSlot]) -> None:
        self.spec = spec
        self.slots = slots
        self.names = [p.name for p in spec.policies]
        self.state = NodeAssignment(node=node)
        self.finished: set[str] = set()  # policies whose last learner step is in the log
        self.run_finished = False
        self.run_subject_last = 0  # last sequence on the run's `run` subject (RunFinished guard)
        self.last_seq = 0
        # obey only valid decisions (mrl_actors.mwra.validate): a node user may write any
        self.check = DecisionCheck(spec.mwra, mwra=spec.placement.allocator == "mwra")
        self.logger = get_logger(__name__, run=spec.run.name, node=node)

    def fold(self, rec: Any) -> bool:
        """Fold one record; True when it is a newer assignment for this node."""
        self.last_seq = rec.seq
        ev = rec.event
        refused = self.check.observe(rec.seq, ev, rec.time_ns)
        if refused is not None:
            self.logger.warning("assignment_refused", seq=rec.seq, epoch=ev.epoch, reason=refused)
            return False
        if isinstance(ev, SlotsAssigned):
            new = apply(self.state, ev, self.slots, self.names)
            if new.epoch == self.state.epoch:
                self.logger.info("assignment_ignored", epoch=ev.epoch, holding=self.state.epoch)
                return False
            for why in ignored(ev, self.state.node, self.slots, self.names):
                self.logger.warning("assignment_dropped", epoch=ev.epoch, reason=why)
            self.state = new
            return True
        if isinstance(ev, LearnerStepCompleted) and ev.policy == ev.source:
            if ev.step >= self.spec.run.steps:
                self.finished.add(ev.policy)
        elif ev.KIND == "run" and ev.source == "mrl":
            self.run_subject_last = rec.seq
            self.run_finished = self.run_finished or isinstance(ev, RunFinished)
        return False

    @property
    def done(self) -> bool:
        # by the log's learner steps, not a `RunFinished` (any node user may write one)
        return self.finished >= set(self.names)


async def _host_assigned(
    log: LogPort,
    spec: RunSpec,
    run_dir: Path,
    node: str,
    slots: list[DeviceSlot],
    opts: ActorOptions,
    log_for: LogFor | None,
    epoch: list[int],
) -> None:
    """Host what `SlotsAssigned` gives this node until every policy has taken its steps."""
    by_slot = {s.index: s for s in slots}
    policies = {p.name: p for p in spec.policies}
    seen = _Assigned(log, spec, node, slots)
    kinds = ["slots", "learner", "run", *MWRA_KINDS]  # what the decision check replays

    async def host(h: Hosted, *, task_status: TaskStatus[None]) -> None:
        entry = ROLES.get(h.role)
        if entry is None:
            seen.logger.warning("role_not_hosted", role=h.role, policy=h.policy)
            task_status.started()
            return
        if h.role == "learner" and _further_rank(h, seen.state.hosted):
            # a multi-rank learner's other slot: its rank runs in a process spawned by the
            # learner on the policy's first slot (`actors.learner_ranks`)
            task_status.started()
            await anyio.sleep_forever()
        async with _connection(log, log_for, h.policy) as own:
            slot = by_slot[h.slot]
            hosting = Hosting(own, spec, policies[h.policy], slot.device, slot.index, run_dir, opts)
            await entry(hosting, task_status=task_status)
        if h.role == "learner" and opts.stop_after is not None:
            # it took its `stop_after` steps: once every policy's has, the node stops as if
            # stopped (its rollouts wait for steps that will not come)
            stopped.add(h.policy)
            if stopped >= set(seen.names):
                group[0].cancel_scope.cancel()

    actors = Roster(host)
    held: dict[int, Hosted] = {}  # what each slot ran last: a different one is a move
    stopped: set[str] = set()  # policies whose learner returned after `opts.stop_after` steps
    group: list[Any] = []  # the task group the actors run in

    async def reconcile(tg: Any) -> None:
        epoch[0] = seen.state.epoch
        applied = time.monotonic()
        for h in await actors.stop_all_but(seen.state.hosted):
            seen.logger.info("actor_stopped", slot=h.slot, policy=h.policy, role=h.role)
        for h in sorted(seen.state.hosted, key=lambda x: (x.slot, x.policy, x.role)):
            if h.role == "learner" and h.policy in stopped:
                continue  # it took its `stop_after` steps here: a new epoch must not restart it
            if h not in actors.running and h.policy not in seen.finished:
                seen.logger.info("actor_started", slot=h.slot, policy=h.policy, role=h.role)
                await actors.start(tg, h)
                before, held[h.slot] = held.get(h.slot), h
                if before is not None and before != h:
                    await _move_measured(log, spec, node, seen.state.epoch, before, h, applied)

    async with anyio.create_task_group() as tg:
        group.append(tg)
        async for rec in log.read(start_seq=1, kinds=kinds):  # catch up, then act
            seen.fold(rec)
        if not seen.done:
            await reconcile(tg)
            async for rec in log.read(start_seq=seen.last_seq + 1, kinds=kinds, follow=True):
                if seen.fold(rec):
                    await reconcile(tg)
                if seen.done:
                    break
    # every actor here has returned: the run is complete when each policy's steps are logged
    if seen.finished >= set(seen.names) and not seen.run_finished:
        await _finish(log, spec, seen.run_subject_last)


def _further_rank(h: Hosted, hosted: Any) -> bool:
    """`h` is a learner slot of a policy that holds a lower learner slot on this node."""
    return any(o.role == "learner" and o.policy == h.policy and o.slot < h.slot for o in hosted)


async def _move_measured(
    log: LogPort, spec: RunSpec, node: str, epoch: int, before: Hosted, now: Hosted, since: float
) -> None:
    """`SlotMoveMeasured`: the seconds from applying the assignment to the slot's new actor
    being ready (model built, log caught up), which MWRA's cost gate weighs moves by."""
    t = time.time_ns()
    try:
        await log.append(
            SlotMoveMeasured(
                run=spec.run.name,
                source=node,
                event_id=event_id("slotmove", spec.run.name, node, epoch, now.slot),
                time_ns=t,
                node=node,
                slot=now.slot,
                epoch=epoch,
                from_policy=before.policy,
                to_policy=now.policy,
                seconds=time.monotonic() - since,
            )
        )
    except MrlError as exc:  # a measurement lost is a default cost used, not a failed node
        get_logger(__name__, run=spec.run.name, node=node).warning(
            "slot_move_not_recorded", error=str(exc)
        )


async def _finish(log: LogPort, spec: RunSpec, after: int) -> None:
    """`RunFinished`, once: only if the run's subject still ends at `after` (server-checked)."""
    finished = RunFinished(
        run=spec.run.name,
        source="mrl",
        event_id=event_id("run", spec.run.name, "mrl", "finished"),
        time_ns=time.time_ns(),
        status="completed",
    )
    await log.append_first(finished, after=after)


async def _host_async(
    log: LogPort,
    spec: RunSpec,
    run_dir: Path,
    chosen: Sequence[PolicySpec],
    opts: ActorOptions,
    log_for: LogFor | None,
    device: str,
) -> None:
    """Each policy's learner and `run.rollout_replicas` rollout actors, each on its own
    connection as its policy's user (or all on `log` without `log_for`)."""
    # Warm starts first (each fills the model cache the actors then load from): built inside
    # each learner's start, one policy's would run while its peers already learn alone.
    for p in chosen:
        if p.tiny is not None:
            await anyio.to_thread.run_sync(load_initial_model, spec, p, make_task(spec.task))

    async with AsyncExitStack() as stack:

        async def connect(name: str) -> Any:
            return await stack.enter_async_context(_connection(log, log_for, name))

        async with anyio.create_task_group() as tg:
            for p in chosen:
                learner_log = await connect(p.name)
                rollout_logs = [await connect(p.name) for _ in range(spec.run.rollout_replicas)]
                host = partial(
                    run_policy_async,
                    learner_log,
                    rollout_logs,
                    spec,
                    p.name,
                    run_dir,
                    device=device,
                    opts=opts,
                )
                tg.start_soon(host)  # every policy's actors start side by side
