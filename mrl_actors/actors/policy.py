"""The policy actor: generate → verify → emit → read peers → THL → probe → GRPO step → emit.

One long-lived anyio task per policy. Everything it knows comes from the log: at start it folds the
run's experience events into `PolicyState` (so a killed actor resumes exactly), then follows the
log live while it works. Each step:

1. draws the step's prompts from the run's seeded prompt stream (every policy the same ids);
2. samples a group per prompt, verifies it, and appends `RolloutGroupCompleted`, one
   `SuccessVerified` per verified completion and a `RewardSummary` (skipped when the log already
   holds them: a resumed step reuses its logged rollouts instead of sampling again);
3. waits (bounded) until every peer has finished the same prompts, unless the probe shares nothing;
4. hands its own groups and the pending peer events to the probe, then the learner;
5. appends `LearnerStepCompleted` with every sequence it consumed, the weights' checksum and the
   metrics; every `eval_every` steps it measures greedy accuracy, every `checkpoint_every` steps it
   saves a checkpoint (`CheckpointSaved`), and it reports its throughput (`ThroughputReported`).

Blocking work (sampling, THL, the learner step) runs in worker threads so the loop keeps folding.
"""

from __future__ import annotations

import time

import anyio
from anyio.abc import TaskStatus

from mrl_actors.actors.runtime import checkpoint_dir
from mrl_actors.actors.state import (
    FOLDED_KINDS,
    assemble,
    evolve,
    experience_events,
    peers_ready,
    rollout_id,
    take_peer_events,
)
from mrl_actors.actors.step import LearningActor, outcome
from mrl_actors.events import (
    AnyEvent,
    CheckpointSaved,
    ThroughputReported,
    event_id,
    kinds_written_by,
)
from mrl_actors.models.load import is_complete
from mrl_actors.see.record import Record


class PolicyActor(LearningActor):
    ROLE = "policy"
    KINDS = FOLDED_KINDS  # from itself and its peers only

    def _fold(self, rec: Record[AnyEvent]) -> None:
        self.state = evolve(self.state, rec)

    # ------------------------------------------------------------------ run

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await self._writer.resume(kinds_written_by("policy"))  # declared once, in events
        await self.follower.rebuild()
        await self.repair_checkpoint()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.follower.follow)
            task_status.started()
            await self.tail.take_steps(self.state.version, self.step, lambda: self.state.version)
            tg.cancel_scope.cancel()

    async def step(self, version: int, initial: dict[str, float] | None) -> None:
        run, spec = self.run_id, self.spec.run
        t_start = time.perf_counter()
        items = self.rt.task.sample(spec.seed, version, spec.prompts_per_step)
        ids = [rollout_id(run, self.name, version, j, it.prompt_id) for j, it in enumerate(items)]

        # 1-2: own rollouts; groups a killed run already logged are reused, not sampled again,
        # and whatever of their successes and summaries it did not log yet is appended now
        gen_tokens, t_gen = 0, 0.0
        logged = {i: self.state.own[i].event for i in ids if i in self.state.own}
        groups = [logged[i] for i in ids] if len(logged) == len(ids) else []
        if not groups:
            t0 = time.perf_counter()
            fresh = await anyio.to_thread.run_sync(self.rt.rollouts, run, version, items, ids)
            t_gen = time.perf_counter() - t0
            gen_tokens = sum(c.token_ids_array().size for g in fresh for c in g.completions)
            groups = [logged.get(g.event_id, g) for g in fresh]
        missing = [e for e in experience_events(groups) if e.event_id not in self.state.own_logged]
        seqs = await self._writer.append_many(missing)
        if seqs:
            await self.follower.folded(max(seqs), "own rollouts")
        own = [self.state.own[i] for i in ids]

        # 3: peers on the same prompts (bounded wait; XGRPO/PRP/SGT only)
        prompt_ids = [it.prompt_id for it in items]
        waited = 0.0
        if self.state.peer_kind is not None and self.peers:
            t0 = time.perf_counter()
            min_version = version - self.spec.probes.sharing.max_staleness
            await self.follower.until(
                lambda: peers_ready(self.state, self.peers, prompt_ids, min_version),
                self.spec.probes.sharing.wait_for_peers_s,
            )
            waited = time.perf_counter() - t0
        peer_events = take_peer_events(self.state, prompt_ids) if self.state.peer_kind else []

        # 4: probe and learner
        inputs = assemble(own, peer_events)
        _, metrics = await anyio.to_thread.run_sync(
            self.rt.learn, self.spec.run.probe, inputs, version
        )
        step = version + 1
        metrics.update(outcome(own), peer_wait_s=waited, gen_time_s=t_gen)

        # 5: the step, in the log
        sha = await self.tail.complete(
            version=version,
            metrics=metrics,
            initial=initial,
            consumed=[*own, *peer_events],
            t_start=t_start,
        )
        if step % spec.checkpoint_every == 0 or step == spec.steps:
            await self.checkpoint(step, sha)
        await self._throughput(step, gen_tokens, t_gen, metrics)
        self.tail.announce(
            self._log,
            step,
            metrics,
            consumed=len(own) + len(peer_events),
        )

    async def checkpoint(self, step: int, sha: str, *, repair: bool = False) -> None:
        """Save step `step`'s checkpoint, then log `CheckpointSaved`.

        The save is atomic (`models.save_model`) and the event follows the rename, so a logged
        checkpoint is complete on disk. With `repair` (a resumed actor whose learner is at
        `step`) only what a killed save left out is done: the save when the directory is not
        complete, the event when the log lacks it.
        """
        path = checkpoint_dir(self.run_dir, self.name, step)
        if not (repair and is_complete(path)):
            if repair:
                self._log.warning("checkpoint_repaired", step=step, path=str(path))
            await anyio.to_thread.run_sync(self.rt.learner.save_checkpoint, path, self.rt.tokenizer)
        eid = event_id("checkpoint", self.run_id, self.name, step)
        if repair and await self._logged(eid):
            return
        await self._writer.append(
            CheckpointSaved(
                run=self.run_id,
                source=self.name,
                event_id=eid,
                time_ns=time.time_ns(),
                policy=self.name,
                step=step,
                path=str(path),
                weights_sha256=sha,
            )
        )

    async def _logged(self, eid: str) -> bool:
        async for rec in self.log.read(start_seq=1, kinds=["checkpoint"], sources=[self.name]):
            if rec.event.event_id == eid:
                return True
        return False

    async def repair_checkpoint(self) -> None:
        """A resumed actor whose last logged step was due a checkpoint makes sure it exists.

        The learner's version is the last step the log holds (replay brought it there), so a
        save killed at that step can be redone from the same weights.
        """
        v, spec = self.rt.learner.version, self.spec.run
        if v > 0 and (v % spec.checkpoint_every == 0 or v == spec.steps):
            sha = await anyio.to_thread.run_sync(self.rt.learner.state_dict_sha256)
            await self.checkpoint(v, sha, repair=True)

    async def _throughput(
        self, step: int, gen_tokens: int, t_gen: float, metrics: dict[str, float]
    ) -> None:
        g = self.spec.run.group_size * self.spec.run.prompts_per_step
        await self._writer.append_many(
            [
                ThroughputReported(
                    run=self.run_id,
                    source=self.name,
                    event_id=event_id("throughput", self.run_id, self.name, role, step),
                    time_ns=time.time_ns(),
                    node=self.tail.opts.node,
                    policy=self.name,
                    role=role,  # type: ignore[arg-type]
                    window_s=window,
                    tokens_per_s=tokens / window if window > 0 else 0.0,
                    samples_per_s=g / window if window > 0 else 0.0,
                    step_time_s=metrics["step_time_s"],
                )
                for role, tokens, window in (
                    ("rollout", gen_tokens, t_gen),
                    ("learner", gen_tokens, metrics["learn_time_s"]),
                )
            ]
        )
