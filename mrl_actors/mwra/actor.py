"""The MWRA actor: one per run, on whichever node holds its lease, writing `SlotsAssigned`.

Every node of a run whose `[placement] allocator = "mwra"` runs a candidate. The candidate that
holds the run's `mwra` lease (`mrl_actors.see.lease`) leads: it folds the log from its start
(`MWRA_KINDS`), then follows it, and asks the rule for a decision after every learner step or
node event it reads and every `tick_s` (a quarter liveness interval, so a silent node is noticed
in time). A decision is appended only if the last decision on the allocator's subject is the one
the leader has folded (`EventLog.append_first`, checked by the server): a stale leader, or a
second one in the moment a lease changes hands, cannot fork the chain of epochs. Each decision
records the last sequence folded (`seen_seq`), and the leader decides again only once it has read
its own decision back, so that prefix of the log is exactly what the decision was made from:
`mwra.replay.check` makes it again from the log alone.

A leader that fails to renew its lease (another took it over) stops leading and becomes a
candidate again; one that stops cleanly releases the lease so the next one need not wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import msgspec

from mrl_actors import events as ev
from mrl_actors.errors import MrlError
from mrl_actors.logs import get_logger
from mrl_actors.mwra.config import MwraConfig
from mrl_actors.mwra.rule import SOURCE, decide
from mrl_actors.mwra.state import MwraState
from mrl_actors.mwra.validate import DecisionCheck
from mrl_actors.see.lease import Lease
from mrl_actors.see.port import LogPort
from mrl_actors.see.stream import EventLog

# Every kind whose events `mwra.state.evolve` reads. Not the rollout groups (the bulk of a
# run's bytes): a learner's backlog comes with its `LearnerStepTimed`.
MWRA_KINDS = ("policy", "node", "throughput", "learner", "slots")
LEASE_KEY = "mwra"
# A lease lapses after this many liveness intervals without renewal (the holder renews every
# quarter interval): with `dead_after` 1.5, a successor leads before a dead leader's node counts
# as lost, so losing the allocator's node costs no more time than losing any other.
LEASE_TTL = 0.75
# Events after which a decision is worth asking for at once (the rest wait for the tick).
_WAKE = (
    ev.LearnerStepTimed,
    ev.LearnerStepCompleted,
    ev.NodeJoined,
    ev.NodeLeft,
    ev.SlotsAssigned,
    ev.PolicyRegistered,
)


class Leader:
    """The fold a leader decides from, with the log position it stands at."""

    def __init__(self, config: MwraConfig) -> None:
        self.config = config
        self.check = DecisionCheck(config, mwra=True)  # folds only valid decisions
        self.state = MwraState()
        self.last_seq = 0  # the last sequence folded
        self.chain_seq = 0  # the sequence of the last decision on the allocator's subject
        self.own_seq = 0  # our last decision's sequence: decide again only once it is folded
        self.wake = anyio.Event()

    def fold(self, seq: int, event: ev.Event, at_ns: int = 0) -> None:
        """Fold the record at `seq`, stored by the server at `at_ns` (liveness is judged by
        the server's times, not by times a client wrote)."""
        if seq <= self.last_seq:
            return
        self.last_seq = seq
        if isinstance(event, ev.SlotsAssigned) and event.source == SOURCE:
            self.chain_seq = seq  # the server's fence is the subject's last message, any
        why = self.check.observe(seq, event, at_ns)
        if why is not None:  # a forged or stale decision: the chain goes on from the last valid
            get_logger(__name__).warning("decision_refused", seq=seq, reason=why)
        self.state = self.check.state
        if isinstance(event, _WAKE):
            self.wake.set()

    def decision(self, now_ns: int) -> ev.SlotsAssigned | None:
        if self.last_seq < self.own_seq:  # our last decision is not folded yet
            return None
        made = decide(self.state, now_ns, self.config)
        return None if made is None else msgspec.structs.replace(made, seen_seq=self.last_seq)


async def run_mwra(
    log: EventLog,  # the JetStream log itself: the lease is a key in the run's KV bucket
    run: str,
    node: str,
    config: MwraConfig,
    *,
    clock: Callable[[], int] = time.time_ns,
) -> None:
    """Be a candidate for the run's allocator until cancelled; lead whenever holding the lease.

    A candidate folds the log all along (a warm standby), so taking the lease over costs no
    catch-up: a dead leader's successor decides as soon as the rule allows.
    """
    logger = get_logger(__name__, run=run, node=node)
    ttl_s = LEASE_TTL * config.liveness_interval_s
    lease = Lease(log.js, run, LEASE_KEY, node, ttl_s=ttl_s, clock=clock)
    leader = Leader(config)
    try:
        async with anyio.create_task_group() as tg:
            caught_up = anyio.Event()
            tg.start_soon(_follow, log, leader, config, caught_up, logger)
            await caught_up.wait()
            while True:
                try:
                    if await lease.acquire():
                        logger.info("mwra_leading")
                        await _lead(log, lease, leader, config, clock, logger)
                        logger.warning("mwra_lease_lost")
                except MrlError as exc:  # a failover, a refused append: try again next tick
                    logger.warning("mwra_error", error=str(exc)[:300])
                await anyio.sleep(config.tick_s)
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            if log.connected:
                await lease.release()


async def _follow(
    log: LogPort, leader: Leader, config: MwraConfig, caught_up: anyio.Event, logger: Any
) -> None:
    """Fold the log into `leader` from its start, then as it grows; a failed read (a failover
    longer than the read's retries) is resumed after the last sequence folded."""
    while True:
        try:
            async for rec in log.read(start_seq=leader.last_seq + 1, kinds=MWRA_KINDS):
                leader.fold(rec.seq, rec.event, rec.time_ns)
            caught_up.set()
            start = leader.last_seq + 1
            async for rec in log.read(start_seq=start, kinds=MWRA_KINDS, follow=True):
                leader.fold(rec.seq, rec.event, rec.time_ns)
        except MrlError as exc:
            logger.warning("mwra_read_failed", error=str(exc)[:300])
        await anyio.sleep(config.tick_s)


async def _lead(
    log: LogPort,
    lease: Lease,
    leader: Leader,
    config: MwraConfig,
    clock: Callable[[], int],
    logger: Any,
) -> None:
    """Decide while the lease holds; returns when it is lost."""

    async def renew(scope: anyio.CancelScope) -> None:
        while True:
            await anyio.sleep(config.tick_s)
            if not await lease.renew():
                scope.cancel()
                return

    async with anyio.create_task_group() as tg:
        tg.start_soon(renew, tg.cancel_scope)
        while True:
            leader.wake = anyio.Event()  # what is folded from here on wakes the next round
            decision = leader.decision(clock())
            if decision is not None:
                ack = await log.append_first(decision, after=leader.chain_seq)
                if ack is None:  # another decision is on the chain: fold it, then decide
                    logger.warning("mwra_decision_superseded", epoch=decision.epoch)
                    leader.own_seq = leader.last_seq + 1
                else:
                    leader.own_seq = ack.seq
                    logger.info(
                        "slots_assigned",
                        epoch=decision.epoch,
                        reason=decision.reason,
                        seen_seq=decision.seen_seq,
                    )
            with anyio.move_on_after(config.tick_s):
                await leader.wake.wait()
