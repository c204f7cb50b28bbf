"""A rollout actor of an asynchronous run: sample with the newest weights, verify, append groups.

On one node a policy has `run.rollout_replicas` of them and replica `r` takes the prompt batches
`k` with `k % replicas == r` of the run's seeded prompt stream (`task.sample(seed, k,
prompts_per_step)`: every policy's replicas draw the same prompts). On a node's slot (a placed
run) the actor follows the run's `SlotsAssigned` events and takes the batches the log gives its
slot (`mrl_actors.actors.shares`), however many slots the allocator gives the policy over time.
Either way it takes its lowest batch not yet in the log, and for batch `k` it:

1. waits until its learner has published a version `v >= k - run.max_staleness` (the bound: a
   group is consumed by learner step `k + 1`, at most `max_staleness` versions after `v`);
2. switches, between batches only, to the newest published version: fetches the blob named by
   its `WeightsPublished`, checks its sha256 and the loaded model's checksum. A version that
   fails either is refused (dead-lettered on `deadletter.<policy>`, once) and the actor keeps the
   weights it has, or waits for the next version when the bound needs a newer one;
3. samples, verifies and appends one `RolloutGroupCompleted` per prompt stamped with `v`, each
   followed by its `SuccessVerified` events and a `RewardSummary`, and a `ThroughputReported`.

Group ids depend only on (run, policy, batch, index, prompt), so a restarted actor skips what the
log holds and a retried publish is stored once (`Nats-Msg-Id`); a group is one event, so none is
ever half-written. Replicas of one policy share its subjects, so they publish without the
ownership check of `OwnedWriter` (ids, not ownership, make their appends safe).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus

from mrl_actors.actors.follow import Follower
from mrl_actors.actors.options import ActorOptions
from mrl_actors.actors.runtime import PolicyRuntime
from mrl_actors.actors.shares import Shares
from mrl_actors.actors.state import experience_events, rollout_id
from mrl_actors.errors import WeightsError
from mrl_actors.events import (
    AnyEvent,
    LearnerStepCompleted,
    RewardSummary,
    RolloutGroupCompleted,
    SlotKey,
    SlotsAssigned,
    SuccessVerified,
    ThroughputReported,
    WeightsPublished,
    event_id,
)
from mrl_actors.logs import get_logger
from mrl_actors.models.weights import WeightsIO
from mrl_actors.see.port import LogPort
from mrl_actors.see.record import Record

ROLLOUT_KINDS = ("weights", "learner", "rollout", "reward", "success")
# Who may assign slots: the spec's placement (epoch 1) and the allocator (later epochs).
ASSIGNERS = ("placement", "mwra")


class RolloutActor:
    def __init__(
        self,
        log: LogPort,
        rt: PolicyRuntime,
        replica: int,
        opts: ActorOptions,
        slot: SlotKey | None = None,
        run_dir: Path | None = None,
    ) -> None:
        self.log = log
        self.wio = WeightsIO.of(log, rt.spec, run_dir, rt.name)  # [weights]: store, deltas
        self.rt = rt
        self.spec = rt.spec
        self.run_id = rt.spec.run.name
        self.name = rt.name
        self.replica = replica
        self.replicas = rt.spec.run.rollout_replicas
        self.opts = opts
        self.slot = slot  # (node, slot number) on a placed run: batches come from the log
        self.shares = Shares(self.name, rt.spec.run.max_staleness) if slot else None
        self.version = -1  # weights version the model holds (-1: none loaded from the log yet)
        self.weights: dict[int, Record[WeightsPublished]] = {}  # own policy's, by version
        self.refused: set[int] = set()  # versions whose weights failed their checks
        self.learner_step = 0  # the learner's newest logged step
        self.logged: set[str] = set()  # ids of own experience events in the log
        # own groups in the log whose summary is not (a killed actor's last batch): reused as
        # they are, so what follows them describes the logged group, not a new sample
        self.unsummarized: dict[str, RolloutGroupCompleted] = {}
        self._batches: dict[int, tuple[list[Any], list[str]]] = {}  # batch -> prompts, group ids
        self._log = get_logger(
            __name__, run=self.run_id, actor="rollout", policy=self.name, replica=replica
        )
        placed = self.shares is not None  # then it also follows the slot assignments
        self.follower = Follower(
            log,
            self.name,
            self._fold,
            kinds=(*ROLLOUT_KINDS, "slots") if placed else ROLLOUT_KINDS,
            sources=[self.name, *ASSIGNERS] if placed else [self.name],
        )

    # ------------------------------------------------------------------ fold

    def _fold(self, rec: Record[AnyEvent]) -> None:
        ev = rec.event
        if isinstance(ev, SlotsAssigned) and ev.source in ASSIGNERS and self.shares:
            self.shares.assign(ev)
        elif getattr(ev, "policy", None) == self.name == ev.source:
            if isinstance(ev, WeightsPublished):
                if ev.version not in self.weights:
                    self.weights[ev.version] = Record(rec.seq, ev, rec.subject, rec.time_ns)
                    if self.shares:
                        self.shares.publish(ev.version)
            elif isinstance(ev, LearnerStepCompleted):
                self.learner_step = max(self.learner_step, ev.step)
            elif isinstance(ev, RolloutGroupCompleted | RewardSummary | SuccessVerified):
                self.logged.add(ev.event_id)
                if isinstance(ev, RolloutGroupCompleted):
                    self.unsummarized[ev.event_id] = ev
                elif isinstance(ev, RewardSummary):
                    key = ev.event_id.split("/", 3)[3]
                    self.unsummarized.pop(event_id("rollout", self.run_id, self.name, key), None)

    # ------------------------------------------------------------------ weights

    def newest_usable(self) -> int:
        """The newest published version not refused (-1: none yet)."""
        return max((v for v in self.weights if v not in self.refused), default=-1)

    async def switch(self) -> bool:
        """Load the newest published version if it is newer than ours; False if it was refused.

        Called between batches only, so a group is always sampled by one version.
        """
        target = self.newest_usable()
        if target <= self.version:
            return True
        rec = self.weights[target]
        try:
            await self.wio.load(rec.event, self.rt.model)
        except WeightsError as exc:
            self.refused.add(target)
            self._log.warning("weights_refused", version=target, error=str(exc)[:300])
            await self._reload()
            letter = self.follower.dead_letters.letter(
                rec.seq, rec.subject, b"", "blob_hash", f"weights v{target} refused: {exc}"
            )
            await self.follower.dead_letters.add_many([letter])
            return False
        self.version = target
        self.rt.engine.sync_weights(self.rt.model, target)
        self._log.debug("weights_loaded", version=target)
        return True

    async def _reload(self) -> None:
        """Back to the version the model held, after a refused load left it half-written.

        Fetched again and checked rather than kept in memory (a second copy of a 7B model per
        rollout actor). Before any version was loaded there is nothing to restore: the actor
        samples only with a version it loaded in full.
        """
        if self.version < 0:
            return
        try:
            await self.wio.load(self.weights[self.version].event, self.rt.model)
        except WeightsError as exc:  # its blob went bad since: hold no version until one loads
            self._log.warning("weights_reload_failed", version=self.version, error=str(exc)[:300])
            self.refused.add(self.version)
            self.version = -1

    async def wait_for_weights(self, batch: int) -> bool:
        """Switch to the newest version, waiting for one `>= batch - max_staleness` when ours is
        older (or was refused); False when the learner finished first. Returns early (True)
        when the batch stops being ours: the caller checks `owns` again."""
        need = max(batch - self.spec.run.max_staleness, 0)
        while True:
            await self.follower.until(
                lambda: (
                    self.newest_usable() >= need
                    or self.learner_step >= self.spec.run.steps
                    or not self.owns(batch)
                )
            )
            if self.learner_step >= self.spec.run.steps:
                return False
            if not self.owns(batch):
                return True
            await self.switch()  # a refused version is skipped: the loop waits for a newer one
            if self.version >= need:
                return True

    # ------------------------------------------------------------------ run

    def owns(self, batch: int) -> bool:
        if self.shares is None:
            return batch % self.replicas == self.replica
        return self.shares.owner(batch) == self.slot

    def next_batch(self) -> int | None:
        """Our lowest batch the log does not hold in full (None: none now). Batches below the
        learner's step were consumed, so they are complete."""
        for batch in range(self.learner_step, self.spec.run.steps):
            if self.owns(batch) and not self._done(batch):
                return batch
        return None

    async def finish_unsummarized(self) -> int:
        """Append what follows each of our logged groups that has no summary yet (its successes
        and summary, derived from the logged group alone), for the batches we own.

        A predecessor killed between a group and its summary leaves the group alone in the log;
        the learner may consume it and move on, so `next_batch` never returns to that batch.
        Peers wait on summaries, so the log must still close every group. Event ids are
        deterministic: anything already there is not appended twice.
        """
        groups = [
            g
            for g in self.unsummarized.values()
            if self.owns(int(g.event_id.split("/", 3)[3].split("/", 1)[0]))
        ]
        missing = [e for e in experience_events(groups) if e.event_id not in self.logged]
        if missing:
            await self.log.append_many(missing)
            self._log.warning("unsummarized_groups_closed", groups=len(groups))
        return len(groups)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await self.follower.rebuild()
        await self.finish_unsummarized()
        steps = self.spec.run.steps
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.follower.follow)
            task_status.started()
            while self.learner_step < steps:
                batch = self.next_batch()
                if batch is None:  # nothing of ours now: wait for the log to give us some
                    await self.follower.until(
                        lambda: self.learner_step >= steps or self.next_batch() is not None
                    )
                    continue
                if not await self.wait_for_weights(batch):
                    break
                if self.owns(batch):
                    await self.sample(batch)
            tg.cancel_scope.cancel()

    def _ids(self, batch: int) -> tuple[list[Any], list[str]]:
        """A batch's prompts and group ids, computed once: `next_batch` asks after every event
        the actor folds."""
        if batch not in self._batches:
            spec = self.spec.run
            items = self.rt.task.sample(spec.seed, batch, spec.prompts_per_step)
            ids = [
                rollout_id(self.run_id, self.name, batch, j, it.prompt_id)
                for j, it in enumerate(items)
            ]
            self._batches[batch] = (items, ids)
        return self._batches[batch]

    def _done(self, batch: int) -> bool:
        """The log holds every group of `batch` with its successes and summary."""
        _, ids = self._ids(batch)
        return all(i in self.logged for i in ids) and all(
            event_id("reward", self.run_id, self.name, i.split("/", 3)[3]) in self.logged
            for i in ids
        )

    async def sample(self, batch: int) -> None:
        items, ids = self._ids(batch)
        t0 = time.perf_counter()
        groups = await anyio.to_thread.run_sync(
            lambda: self.rt.rollouts(self.run_id, batch, items, ids, version=self.version)
        )
        t_gen = time.perf_counter() - t0
        groups = [self.unsummarized.get(g.event_id, g) for g in groups]
        missing = [e for e in experience_events(groups) if e.event_id not in self.logged]
        if missing:
            await self.log.append_many(missing)
        tokens = sum(c.token_ids_array().size for g in groups for c in g.completions)
        samples = sum(len(g.completions) for g in groups)
        await self.log.append(
            ThroughputReported(
                run=self.run_id,
                source=self.name,
                event_id=event_id("throughput", self.run_id, self.name, "rollout", "b", batch),
                time_ns=time.time_ns(),
                node=self.opts.node,
                policy=self.name,
                role="rollout",
                window_s=t_gen,
                tokens_per_s=tokens / t_gen if t_gen > 0 else 0.0,
                samples_per_s=samples / t_gen if t_gen > 0 else 0.0,
                step_time_s=t_gen,
            )
        )
        self._log.info("batch", batch=batch, version=self.version, gen_s=round(t_gen, 3))
