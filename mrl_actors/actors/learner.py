"""The learner actor of an asynchronous run: consume groups from the log, step, publish weights.

One per policy. It never samples: its policy's rollout actors (`actors.rollout`) append groups
stamped with the weights version that produced them, and it meets them, and its peers' events,
only in the log. Step `s` (from version `s-1` to `s`):

1. waits until every group of prompt batch `s-1` is in the log (the run's seeded prompt stream:
   `task.sample(seed, s-1, prompts_per_step)`, the same prompts for every policy); groups sampled
   more than `run.max_staleness` versions ago are dropped, not consumed (rollout actors never
   make them; this is the bound's second guard). Own groups of older versions go through the
   on-policy loss with its truncated importance ratio against their behaviour log-probs;
2. for a sharing probe, waits (bounded by `probes.sharing.wait_for_peers_s`) for its peers'
   groups of the same batch (their `RewardSummary`, which each peer appends after a group's
   other events), but only from a peer whose rollouts, up to `run.max_staleness` batches ahead
   of its learner, have sampled that batch or are sampling it (`state.peers_to_wait_for`): a
   peer further behind, a finished one, or an independent probe costs no wait;
3. takes the step, appends `LearnerStepCompleted` (the sequences it consumed, the weights'
   checksum, the staleness it saw), `WeightsPublished` for the new version (bytes in the blob
   store) and `LearnerStepTimed`; every `checkpoint_every` steps `CheckpointStored` (weights
   and optimizer in the blob store) and a local `CheckpointSaved` directory.

At start it restores itself from the newest `CheckpointStored` and replays only the log's tail
(`replay(after=...)`), so a learner restarted on any host goes on from where the log says it was.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from anyio.abc import TaskStatus

from mrl_actors.actors.options import ActorOptions
from mrl_actors.actors.replay import replay
from mrl_actors.actors.runtime import PolicyRuntime, checkpoint_dir
from mrl_actors.actors.state import (
    FOLDED_KINDS,
    assemble,
    evolve,
    peers_to_wait_for,
    rollout_id,
    take_peer_events,
)
from mrl_actors.actors.step import LearningActor, outcome
from mrl_actors.errors import LogError, WeightsError
from mrl_actors.events import (
    AnyEvent,
    CheckpointSaved,
    CheckpointStored,
    LearnerStepCompleted,
    LearnerStepTimed,
    RewardSummary,
    ThroughputReported,
    WeightsPublished,
    event_id,
)
from mrl_actors.models.load import is_complete
from mrl_actors.models.weights import (
    WeightsIO,
    restore_checkpoint,
    store_checkpoint,
)
from mrl_actors.see.port import LogPort
from mrl_actors.see.record import Record

LEARNER_KINDS = (*FOLDED_KINDS, "weights", "checkpoint")
_WRITES = ["learner", "checkpoint", "weights"]  # the subjects this actor owns (of its policy)


class LearnerActor(LearningActor):
    ROLE = "learner"
    KINDS = LEARNER_KINDS

    def __init__(self, log: LogPort, rt: PolicyRuntime, run_dir: Path, opts: ActorOptions) -> None:
        super().__init__(log, rt, run_dir, opts)
        self.peer_steps: dict[str, int] = {}  # each peer's newest learner step
        self.peer_summaries: set[str] = set()  # ids of peers' RewardSummary events (batch done)
        self.weights: dict[int, WeightsPublished] = {}  # own weights events by version
        self.stored: dict[int, CheckpointStored] = {}  # own stored checkpoints by step
        self.saved: set[int] = set()  # own local checkpoints (CheckpointSaved) by step
        self.wio = WeightsIO.of(log, rt.spec, run_dir, self.name)  # [weights]: store, deltas
        self.restored_from = 0  # the checkpoint step this process started from
        self.replayed = 0  # log-tail steps replayed on top of it

    # ------------------------------------------------------------------ fold

    def _fold(self, rec: Record[AnyEvent]) -> None:
        ev = rec.event
        if getattr(ev, "policy", None) == ev.source:
            if ev.source == self.name:
                if isinstance(ev, WeightsPublished):
                    self.weights.setdefault(ev.version, ev)
                elif isinstance(ev, CheckpointStored):
                    self.stored.setdefault(ev.step, ev)
                elif isinstance(ev, CheckpointSaved):
                    self.saved.add(ev.step)
            elif ev.source in self.peers and isinstance(ev, LearnerStepCompleted):
                self.peer_steps[ev.source] = max(self.peer_steps.get(ev.source, 0), ev.step)
            elif ev.source in self.peers and isinstance(ev, RewardSummary):
                self.peer_summaries.add(ev.event_id)
        self.state = evolve(self.state, rec)

    # ------------------------------------------------------------------ restore

    async def restore(self) -> None:
        """Bring the learner to the log's last step: newest stored checkpoint, then the tail.

        The runtime starts at step 0 (its `step-0` checkpoint). A stored checkpoint that cannot
        be used (altered blob, missing) is skipped for an older one, down to step 0: the log's
        steps are replayed from there and every replayed checksum is checked.
        """
        last = self.state.version
        for step in sorted((s for s in self.stored if s <= last), reverse=True):
            try:
                await restore_checkpoint(self.log, self.stored[step], self.rt.learner, self.wio)
            except WeightsError as exc:
                self._log.warning("checkpoint_unusable", step=step, error=str(exc)[:300])
                continue
            self.restored_from = step
            break
        if self.restored_from == 0 and self.rt.learner.version != 0:
            raise LogError(f"{self.name}: no usable checkpoint and a learner not at step 0")
        if self.restored_from == 0 and 0 in self.weights:
            await self._start_as_logged()
        self.replayed = await replay(self.log, self.rt, after=self.restored_from)
        if self.rt.learner.version != last:
            raise LogError(
                f"{self.name}: restored to step {self.rt.learner.version}, the log says {last}"
            )
        if last:
            self._log.info(
                "learner_restored", checkpoint=self.restored_from, replayed=self.replayed
            )
            self.rt.engine.sync_weights(self.rt.model, last)

    async def _start_as_logged(self) -> None:
        """Start from the run's logged version 0 when this host's `step-0` differs (a learner
        restarted on another host, whose initial model was built, not copied)."""
        start = self.weights[0]
        sha = await anyio.to_thread.run_sync(self.rt.learner.state_dict_sha256)
        if sha != start.weights_sha256:
            self._log.warning(
                "start_weights_from_log", local=sha[:12], logged=start.weights_sha256[:12]
            )
            await self.wio.load(start, self.rt.model)

    async def publish(self, version: int, sha: str) -> WeightsPublished:
        """`WeightsPublished` for `version` (once: a restarted learner reuses a logged one)."""
        if version not in self.weights:
            await self._announce(version, sha)
            await self.wio.retain(self.weights, self.stored)  # [weights] keep
        return self.weights[version]

    async def _announce(self, version: int, sha: str) -> None:
        """Store the model's state and append its weights event, before the learner goes on:
        measured on the toy pair, uploading beside the next step delayed the rollouts more than
        it saved the learner (they compete for the same cores)."""
        ev = await self.wio.publish(version, self.rt.model, sha)
        seq = await self._writer.append(ev)
        await self.follower.folded(seq, f"weights v{version}")

    async def checkpoint(self, step: int, weights: WeightsPublished) -> None:
        """A stored checkpoint (blobs) and a local one (directory), each once."""
        if step not in self.stored:
            ev = await store_checkpoint(
                self.log, self.name, step, self.rt.learner, weights, self.wio
            )
            await self.follower.folded(await self._writer.append(ev), f"checkpoint {step}")
        path = checkpoint_dir(self.run_dir, self.name, step)
        if not is_complete(path):
            await anyio.to_thread.run_sync(self.rt.learner.save_checkpoint, path, self.rt.tokenizer)
        if step not in self.saved:
            await self._writer.append(
                CheckpointSaved(
                    run=self.run_id,
                    source=self.name,
                    event_id=event_id("checkpoint", self.run_id, self.name, step),
                    time_ns=time.time_ns(),
                    policy=self.name,
                    step=step,
                    path=str(path),
                    weights_sha256=weights.weights_sha256,
                )
            )

    def _checkpoint_due(self, step: int) -> bool:
        spec = self.spec.run
        return step > 0 and (step % spec.checkpoint_every == 0 or step == spec.steps)

    # ------------------------------------------------------------------ run

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await self._writer.resume(_WRITES)
        await self.follower.rebuild()
        await self.restore()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.follower.follow)
            version = self.state.version
            sha = await anyio.to_thread.run_sync(self.rt.learner.state_dict_sha256)
            weights = await self.publish(version, sha)  # rollouts start from this version
            if self._checkpoint_due(version):  # a restart killed while checkpointing
                await self.checkpoint(version, weights)
            task_status.started()
            await self.tail.take_steps(version, self.step, lambda: self.state.version)
            tg.cancel_scope.cancel()

    def _peers_to_wait_for(self, version: int) -> list[str]:
        """Peers whose groups for this step's prompts are on their way (`peers_to_wait_for`);
        an independent probe, or `probes.sharing.async_peer_wait = "none"`, waits for no one."""
        if self.state.peer_kind is None or self.spec.probes.sharing.async_peer_wait == "none":
            return []
        spec = self.spec.run
        return peers_to_wait_for(
            self.peer_steps,
            self.peers,
            version,
            steps=spec.steps,
            max_staleness=spec.max_staleness,
        )

    async def step(self, version: int, initial: dict[str, float] | None) -> None:
        run, spec = self.run_id, self.spec.run
        t_start = time.perf_counter()
        items = self.rt.task.sample(spec.seed, version, spec.prompts_per_step)
        ids = [rollout_id(run, self.name, version, j, it.prompt_id) for j, it in enumerate(items)]

        # 1: this batch's groups, sampled by the rollout actors
        await self.follower.until(lambda: all(i in self.state.own for i in ids), float("inf"))
        t_groups = time.perf_counter()
        fresh = [
            self.state.own[i]
            for i in ids
            if version - self.state.own[i].event.policy_version <= spec.max_staleness
        ]
        dropped = len(ids) - len(fresh)
        if dropped:
            self._log.warning("stale_groups_dropped", step=version + 1, dropped=dropped)
        if not fresh:  # rollout actors never sample beyond the bound: the log was not ours
            raise LogError(
                f"{self.name}: every group of batch {version} was sampled more than "
                f"{spec.max_staleness} versions ago; nothing to learn from"
            )

        # 2: peers on the same prompts, as long as the probe can use what they would send
        prompt_ids = [it.prompt_id for it in items]
        peers = self._peers_to_wait_for(version)
        if peers:  # each peer's summaries of this batch: a summary follows its group's events
            keys = [(j, it.prompt_id) for j, it in enumerate(items)]
            wanted = [event_id("reward", run, p, version, j, pid) for p in peers for j, pid in keys]
            await self.follower.until(
                lambda: all(w in self.peer_summaries for w in wanted),
                self.spec.probes.sharing.wait_for_peers_s,
            )
        t_peers = time.perf_counter()
        peer_events = take_peer_events(self.state, prompt_ids) if self.state.peer_kind else []

        # 3: the step
        inputs = assemble(fresh, peer_events)
        _, metrics = await anyio.to_thread.run_sync(
            self.rt.learn, self.spec.run.probe, inputs, version
        )
        step = version + 1
        staleness = [version - g.event.policy_version for g in fresh]
        metrics.update(
            outcome(fresh),
            rollout_wait_s=t_groups - t_start,
            peer_wait_s=t_peers - t_groups,
            staleness_mean=float(np.mean(staleness)) if staleness else 0.0,
            staleness_max=float(max(staleness, default=0)),
            dropped_stale=float(dropped),
        )
        if self.restored_from or self.replayed:  # the first step after a restart says so
            metrics.update(
                restored_from_step=float(self.restored_from), replayed_steps=float(self.replayed)
            )
            self.restored_from = self.replayed = 0
        sha = await self.tail.complete(
            version=version,
            metrics=metrics,
            initial=initial,
            consumed=[*fresh, *peer_events],
            t_start=t_start,
        )
        weights = await self.publish(step, sha)
        pending = sum(  # groups sampled but not consumed yet, within the bound
            1
            for g in self.state.own.values()
            if step - g.event.policy_version <= spec.max_staleness
        )
        await self._writer.append(
            LearnerStepTimed(
                run=run,
                source=self.name,
                event_id=event_id("learner", run, self.name, "timed", step),
                time_ns=time.time_ns(),
                policy=self.name,
                step=step,
                wait_s=t_peers - t_start,
                # everything the step did once its inputs were there (learning, evaluation when
                # due, publishing the weights): what caps the policy's step rate, for MWRA
                compute_s=time.perf_counter() - t_peers,
                samples=sum(len(g.event.completions) for g in fresh),
                pending_groups=pending,
                staleness=metrics["staleness_mean"],
            )
        )
        if self._checkpoint_due(step):
            await self.checkpoint(step, weights)
        await self._throughput(step, fresh, metrics)
        self.tail.announce(
            self._log,
            step,
            metrics,
            staleness=metrics["staleness_mean"],
            wait=metrics["rollout_wait_s"] + metrics["peer_wait_s"],
        )

    async def _throughput(
        self, step: int, fresh: list[Record[Any]], metrics: dict[str, float]
    ) -> None:
        window = metrics["learn_time_s"]
        tokens = sum(c.token_ids_array().size for g in fresh for c in g.event.completions)
        samples = sum(len(g.event.completions) for g in fresh)
        await self.log.append(
            ThroughputReported(
                run=self.run_id,
                source=self.name,
                event_id=event_id("throughput", self.run_id, self.name, "learner", step),
                time_ns=time.time_ns(),
                node=self.tail.opts.node,
                policy=self.name,
                role="learner",
                window_s=window,
                tokens_per_s=tokens / window if window > 0 else 0.0,
                samples_per_s=samples / window if window > 0 else 0.0,
                step_time_s=metrics["step_time_s"],
            )
        )
