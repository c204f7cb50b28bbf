"""Asynchronous runs end to end: learner and rollout actors per policy, meeting only in the log.

One short two-policy run (XGRPO, two rollout replicas per policy, tiny real-architecture models
on a real nats-server) is stopped after 3 learner steps and resumed: the tests read its log and
check that each policy took steps 1..N exactly once, consumed every sequence at most once and
only groups within the staleness bound, published one verifiable weights event per version,
resumed its learner from the stored checkpoint plus the log's tail, and that a replay of the log
reproduces every logged weights checksum (with a KL term to the step-0 reference, so the resumed
learner's reference must be the same). A weights blob altered in the store is refused by a
rollout actor, which dead-letters it and goes on with a version it can verify.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from helpers.runs import kill_run
from helpers.specs import TINY16, spec_toml

from mrl_actors.events import (
    CheckpointStored,
    DeadLettered,
    Event,
    LearnerStepCompleted,
    RolloutGroupCompleted,
    WeightsPublished,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEPS = 5
STOP_AFTER = 3  # the first process stops here; checkpoint_every = 2, so one step is log tail
STALENESS = 1
RUN = "t-async"
POLICIES = ("gpt2", "llama")


def spec_text(models_dir: Path) -> str:
    return spec_toml(
        models_dir,
        run={
            "name": RUN,
            "probe": "xgrpo",
            "mode": "async",
            "rollout_replicas": 2,
            "max_staleness": STALENESS,
            "steps": STEPS,
            "group_size": 4,
        },
        probes={"sharing": {"wait_for_peers_s": 10.0}},
        tiny=TINY16,
        grpo={
            "lr": 1e-3,
            "weight_decay": 0.1,  # every step changes the weights, whatever the rewards
            # a KL term to the step-0 reference, which the resumed learner rebuilds: the
            # replay below reproduces every weights checksum only if it is the same one
            "beta": 0.1,
        },
    )


async def _events(run_dir: Path) -> list[tuple[int, Event]]:
    from mrl_actors.see.access import open_log

    async with open_log(run_dir=run_dir, run=RUN) as log:
        return [(rec.seq, rec.event) async for rec in log.read(start_seq=1)]


@pytest.fixture(scope="module")
def run(
    models_dir: Path, model_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[tuple[int, Event]]]:
    """The run, stopped after STOP_AFTER learner steps, then resumed to the end."""
    from mrl_actors.run.runner import run_once
    from mrl_actors.spec import parse_spec

    out = tmp_path_factory.mktemp("async") / "run"
    text = spec_text(models_dir)
    spec = parse_spec(text)
    anyio.run(lambda: run_once(spec, text, out, stop_after=STOP_AFTER))
    first = anyio.run(_events, out)
    for p in POLICIES:
        assert max(e.step for _, e in first if _learned(e, p)) == STOP_AFTER
    anyio.run(lambda: run_once(spec, text, out))
    return out, anyio.run(_events, out)


def _learned(e: Event, policy: str) -> bool:
    return isinstance(e, LearnerStepCompleted) and e.policy == policy


def _steps(events: list[tuple[int, Event]], policy: str) -> list[LearnerStepCompleted]:
    return [e for _, e in events if isinstance(e, LearnerStepCompleted) and e.policy == policy]


def test_each_policy_steps_once_and_consumes_each_sequence_once(
    run: tuple[Path, list[tuple[int, Event]]],
) -> None:
    _, events = run
    by_seq = dict(events)
    for p in POLICIES:
        steps = _steps(events, p)
        assert [s.step for s in steps] == list(range(1, STEPS + 1))
        seqs = [c.seq for s in steps for c in s.consumed]
        assert len(seqs) == len(set(seqs))
        own = [by_seq[q] for q in seqs if isinstance(by_seq[q], RolloutGroupCompleted)]
        own = [g for g in own if g.policy == p]
        # every step learned from its whole prompt batch: 2 groups from the rollout actors
        assert len(own) == 2 * STEPS
        for s in steps:
            for c in s.consumed:
                assert by_seq[c.seq].event_id == c.event_id
    # both replicas sampled (batches alternate between them)
    rollouts = {e.event_id.split("/")[3] for _, e in events if isinstance(e, RolloutGroupCompleted)}
    assert rollouts == {str(k) for k in range(STEPS)}


def test_consumed_groups_are_within_the_staleness_bound(
    run: tuple[Path, list[tuple[int, Event]]],
) -> None:
    _, events = run
    by_seq = dict(events)
    seen = []
    for p in POLICIES:
        for s in _steps(events, p):
            for c in s.consumed:
                g = by_seq[c.seq]
                if isinstance(g, RolloutGroupCompleted) and g.policy == p:
                    lag = (s.step - 1) - g.policy_version
                    assert 0 <= lag <= STALENESS, (p, s.step, g.policy_version)
                    seen.append(lag)
            assert s.metrics["staleness_max"] <= STALENESS
    assert max(seen) == STALENESS  # the rollouts ran ahead of their learner


def test_one_weights_event_per_version_whose_blob_verifies(
    run: tuple[Path, list[tuple[int, Event]]],
) -> None:
    from mrl_actors.actors.roles import rollout_runtime
    from mrl_actors.models.weights import load_weights
    from mrl_actors.see.access import open_log
    from mrl_actors.spec import load_spec

    run_dir, events = run
    spec, _ = load_spec(run_dir / "spec.toml")
    for p in POLICIES:
        weights = [e for _, e in events if isinstance(e, WeightsPublished) and e.policy == p]
        assert [w.version for w in weights] == list(range(STEPS + 1))
        logged = {s.step: s.weights_sha256 for s in _steps(events, p)}
        assert all(w.weights_sha256 == logged[w.version] for w in weights if w.version)

        async def load_last(p: str = p, w: WeightsPublished = weights[-1]) -> str:
            from mrl_actors.models.load import weights_sha256

            rt = rollout_runtime(spec, p, run_dir)
            async with open_log(run_dir=run_dir, run=RUN) as log:
                await load_weights(log, w, rt.model)  # checks blob and model checksums
            return weights_sha256(rt.model)

        assert anyio.run(load_last) == logged[STEPS]


def test_a_restarted_learner_resumes_from_the_stored_checkpoint_and_the_log_tail(
    run: tuple[Path, list[tuple[int, Event]]],
) -> None:
    _, events = run
    for p in POLICIES:
        stored = [e.step for _, e in events if isinstance(e, CheckpointStored) and e.policy == p]
        assert stored == [2, 4, 5]
        first_after = _steps(events, p)[STOP_AFTER]  # step 4: the first of the second process
        assert first_after.metrics["restored_from_step"] == 2.0
        assert first_after.metrics["replayed_steps"] == 1.0  # step 3, from the log
        assert all("restored_from_step" not in s.metrics for s in _steps(events, p)[:STOP_AFTER])


@pytest.mark.parametrize("policy", POLICIES)
def test_replaying_the_async_log_reproduces_every_weights_checksum(
    run: tuple[Path, list[tuple[int, Event]]], policy: str
) -> None:
    from mrl_actors.actors.replay import learner_steps
    from mrl_actors.actors.runtime import build_runtime, checkpoint_dir
    from mrl_actors.see.access import open_log
    from mrl_actors.spec import load_spec
    from mrl_actors.tasks import make_task

    run_dir, _ = run
    spec, _ = load_spec(run_dir / "spec.toml")
    p = next(x for x in spec.policies if x.name == policy)

    async def replay_each() -> list[str]:
        from mrl_actors.actors.replay import replay

        rt = build_runtime(
            spec, p, make_task(spec.task), weights_dir=checkpoint_dir(run_dir, policy, 0)
        )
        shas = []
        async with open_log(run_dir=run_dir, run=RUN) as log:
            for k in range(1, STEPS + 1):  # verify=True checks each step's logged checksum
                assert await replay(log, rt, upto=k, after=k - 1) == 1
                shas.append(rt.learner.state_dict_sha256())
            logged = [s.weights_sha256 for s in await learner_steps(log, policy)]
        assert shas == logged
        assert len(set(shas)) == STEPS  # weight decay: each version differs from the last
        return shas

    assert len(anyio.run(replay_each)) == STEPS


def test_a_restarted_rollout_actor_closes_a_group_its_predecessor_left_without_summary(
    run: tuple[Path, list[tuple[int, Event]]],
) -> None:
    """A group in the log without its successes and summary (its writer killed between them),
    on a batch the learner has already consumed: the restarted rollout actor appends them, from
    the logged group alone, once."""
    import msgspec

    from mrl_actors.actors.options import ActorOptions
    from mrl_actors.actors.roles import rollout_runtime
    from mrl_actors.actors.rollout import RolloutActor
    from mrl_actors.actors.state import rollout_id
    from mrl_actors.events import RewardSummary, RolloutGroupCompleted, event_id
    from mrl_actors.see.access import open_log
    from mrl_actors.spec import load_spec

    run_dir, events = run
    spec, _ = load_spec(run_dir / "spec.toml")
    policy = "gpt2"
    logged = next(
        e for _, e in events if isinstance(e, RolloutGroupCompleted) and e.policy == policy
    )
    alone = msgspec.structs.replace(
        logged, event_id=rollout_id(RUN, policy, 0, 99, logged.prompt_id)
    )
    summary_id = event_id("reward", RUN, policy, f"0/99/{logged.prompt_id}")

    async def scenario() -> tuple[int, int, list[str]]:
        async with open_log(run_dir=run_dir, run=RUN) as log:
            await log.append(alone)
            rt = rollout_runtime(spec, policy, run_dir)
            first = RolloutActor(log, rt, 0, ActorOptions())
            await first.follower.rebuild()
            closed = await first.finish_unsummarized()
            again = RolloutActor(log, rt, 0, ActorOptions())
            await again.follower.rebuild()
            left = await again.finish_unsummarized()
            ids = [
                r.event.event_id
                async for r in log.read(start_seq=1, kinds=["reward"], sources=[policy])
                if isinstance(r.event, RewardSummary)
            ]
            return closed, left, ids

    closed, left, ids = anyio.run(scenario)
    assert closed == 1 and left == 0
    assert ids.count(summary_id) == 1


def test_a_tampered_weights_blob_is_refused_and_dead_lettered(
    run: tuple[Path, list[tuple[int, Event]]],
) -> None:
    """Runs last in this module: it adds a weights version to the run's log and alters its blob."""
    import torch

    from mrl_actors.actors.options import ActorOptions
    from mrl_actors.actors.roles import rollout_runtime
    from mrl_actors.actors.rollout import RolloutActor
    from mrl_actors.models.load import weights_sha256
    from mrl_actors.models.weights import store_weights
    from mrl_actors.see.access import open_log
    from mrl_actors.spec import load_spec

    run_dir, events = run
    spec, _ = load_spec(run_dir / "spec.toml")
    policy = "gpt2"
    last = next(
        e
        for _, e in events
        if isinstance(e, WeightsPublished) and e.policy == policy and e.version == STEPS
    )

    async def scenario() -> tuple[bool, int, str, list[DeadLettered]]:
        async with open_log(run_dir=run_dir, run=RUN) as log:
            # a newer version with weights of its own (set up here), then its blob altered
            other = rollout_runtime(spec, policy, run_dir)
            with torch.no_grad():
                for t in other.model.parameters():
                    t.add_(0.5)
            sha = weights_sha256(other.model)
            newer = await store_weights(log, policy, STEPS + 1, other.model, sha)
            await log.append(newer)
            good = await log.blobs.get(newer.blob)
            await log.blobs.put_raw(newer.blob, good[:-8] + b"tampered")

            actor = RolloutActor(log, rollout_runtime(spec, policy, run_dir), 0, ActorOptions())
            async for rec in log.read(start_seq=1, kinds=["weights"], sources=[policy]):
                actor.follower.apply(rec)
            assert actor.newest_usable() == STEPS + 1
            refused = await actor.switch()
            after_refusal = actor.version
            assert await actor.switch()  # the newest version it can verify instead
            letters = [
                r.event
                async for r in log.read(start_seq=1, kinds=["deadletter"], sources=[policy])
                if isinstance(r.event, DeadLettered)
            ]
            return refused, after_refusal, weights_sha256(actor.rt.model), letters

    refused, after_refusal, sha, letters = anyio.run(scenario)
    assert refused is False and after_refusal == -1
    assert sha == last.weights_sha256
    assert any(
        d.error == "blob_hash" and f"weights v{STEPS + 1} refused" in d.reason for d in letters
    )


def test_async_is_refused_when_its_bound_exceeds_the_probes(models_dir: Path) -> None:
    from mrl_actors.errors import ConfigError
    from mrl_actors.spec import parse_spec

    text = spec_text(models_dir).replace(f"max_staleness = {STALENESS}", "max_staleness = 5")
    with pytest.raises(ConfigError, match=r"run\.max_staleness"):
        parse_spec(text)


def test_a_killed_async_run_resumes_from_stored_checkpoints_and_steps_once(
    models_dir: Path, model_cache: Path, tmp_path: Path
) -> None:
    """SIGKILL `mrl run` once each learner has a stored checkpoint, then `mrl run --resume`."""
    steps = 10
    spec = tmp_path / "spec.toml"
    spec.write_text(spec_text(models_dir).replace(f"steps = {STEPS}\n", f"steps = {steps}\n", 1))
    run_dir = tmp_path / "run"
    env = {**os.environ, "MRL_CACHE_DIR": str(model_cache)}
    cmd = [sys.executable, "-m", "mrl_actors.cli", "run", "--no-progress"]
    proc = subprocess.Popen([*cmd, str(spec), "--out", str(run_dir)], env=env)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if (run_dir / "server.json").exists():
                events = [e for _, e in anyio.run(_events, run_dir)]
                stored = {e.policy for e in events if isinstance(e, CheckpointStored)}
                if stored == set(POLICIES):
                    break
            time.sleep(0.5)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        kill_run(run_dir, proc)  # its server too: the resume starts its own
        resumed = subprocess.run([*cmd, "--resume", str(run_dir)], env=env, timeout=600)
        assert resumed.returncode == 0
    finally:
        kill_run(run_dir, proc)

    events = anyio.run(_events, run_dir)
    for p in POLICIES:
        taken = _steps(events, p)
        assert [s.step for s in taken] == list(range(1, steps + 1))
        seqs = [c.seq for s in taken for c in s.consumed]
        assert len(seqs) == len(set(seqs))
        restarted = [s for s in taken if "restored_from_step" in s.metrics]
        assert len(restarted) == 1 and restarted[0].metrics["restored_from_step"] >= 2
        versions = [
            e.version for _, e in events if isinstance(e, WeightsPublished) and e.policy == p
        ]
        assert versions == list(range(steps + 1))
