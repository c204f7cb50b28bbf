"""A policy's learner as 2 gloo ranks (FSDP2) in an asynchronous run, on a real nats-server.

The `llama` policy has `learner_slots = 2`: `mrl run` hosts its rank 0, which spawns rank 1.
The tests check that the 2-rank learner's weights are within float tolerance of what one rank
makes of the same consumed inputs (a one-rank replay of its log), that a SIGKILLed run with a
2-rank learner resumes and takes every step once, and that replaying the log with 2 ranks
reproduces every logged sha256, bit for bit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from helpers.runs import kill_run
from helpers.specs import policies_toml, spec_toml

from mrl_actors.events import CheckpointStored, Event, LearnerStepCompleted, WeightsPublished

# a 2-rank learner starts three processes of torch: slower than most tests on a loaded machine
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

RUN = "t-ranks"
STEPS = 4
POLICIES = ("gpt2", "llama")
RANKED = "llama"


def spec_text(models_dir: Path, steps: int = STEPS) -> str:
    tiny = {"hidden_size": 16, "layers": 2, "heads": 2, "warm_start_steps": 5}
    # one micro-batch per rank; weight decay: every step changes the weights, whatever the rewards
    grpo = {"lr": 1e-3, "grad_accum": 2, "weight_decay": 0.1}
    one = spec_toml(
        models_dir,
        run={
            "name": RUN,
            "probe": "xgrpo",
            "mode": "async",
            "max_staleness": 1,
            "steps": steps,
            "group_size": 4,
        },
        probes={"sharing": {"wait_for_peers_s": 10.0}},
        tiny=tiny,
        grpo=grpo,
        pair=[("gpt2", "gpt2")],
        learner_slots=1,
    )
    ranked = [(RANKED, "mistral-7b")]  # bundled: a bare clone runs it too
    return one + policies_toml(
        models_dir, tiny=tiny, max_new_tokens=4, grpo=grpo, pair=ranked, learner_slots=2
    )


async def _events(run_dir: Path) -> list[tuple[int, Event]]:
    from mrl_actors.see.access import open_log

    async with open_log(run_dir=run_dir, run=RUN) as log:
        return [(rec.seq, rec.event) async for rec in log.read(start_seq=1)]


def _steps(events: list[tuple[int, Event]], policy: str) -> list[LearnerStepCompleted]:
    return [e for _, e in events if isinstance(e, LearnerStepCompleted) and e.policy == policy]


@pytest.fixture(scope="module")
def run(
    models_dir: Path, model_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[tuple[int, Event]]]:
    from mrl_actors.run.runner import run_once
    from mrl_actors.spec import parse_spec

    out = tmp_path_factory.mktemp("ranks") / "run"
    text = spec_text(models_dir)
    anyio.run(lambda: run_once(parse_spec(text), text, out))
    return out, anyio.run(_events, out)


def test_the_two_rank_learner_steps_once_per_version(
    run: tuple[Path, list[tuple[int, Event]]],
) -> None:
    _, events = run
    for p in POLICIES:
        steps = _steps(events, p)
        assert [s.step for s in steps] == list(range(1, STEPS + 1))
        ranks = 2.0 if p == RANKED else None
        assert all(s.metrics.get("learner_ranks") == ranks for s in steps)
        weights = [e for _, e in events if isinstance(e, WeightsPublished) and e.policy == p]
        assert [w.version for w in weights] == list(range(STEPS + 1))


def _runtime(run_dir: Path) -> object:
    from mrl_actors.actors.runtime import build_runtime, checkpoint_dir
    from mrl_actors.spec import load_spec
    from mrl_actors.tasks import make_task

    spec, _ = load_spec(run_dir / "spec.toml")
    p = next(x for x in spec.policies if x.name == RANKED)
    start = checkpoint_dir(run_dir, RANKED, 0)
    return build_runtime(spec, p, make_task(spec.task), weights_dir=start)


def test_one_rank_on_the_same_consumed_inputs_is_within_float_tolerance(
    run: tuple[Path, list[tuple[int, Event]]],
) -> None:
    """A one-rank learner replays the 2-rank learner's log (its consumed sequences): after
    every step its weights are within 1e-5 of the 2-rank learner's published ones."""
    from mrl_actors.actors.replay import replay
    from mrl_actors.actors.roles import rollout_runtime
    from mrl_actors.models.weights import load_weights
    from mrl_actors.see.access import open_log
    from mrl_actors.spec import load_spec

    run_dir, events = run
    spec, _ = load_spec(run_dir / "spec.toml")
    published = {
        e.version: e for _, e in events if isinstance(e, WeightsPublished) and e.policy == RANKED
    }

    async def compare() -> list[float]:
        one = _runtime(run_dir)
        two = rollout_runtime(spec, RANKED, run_dir)
        diffs = []
        async with open_log(run_dir=run_dir, run=RUN) as log:
            for k in range(1, STEPS + 1):
                assert await replay(log, one, upto=k, after=k - 1, verify=False) == 1  # type: ignore[arg-type]
                await load_weights(log, published[k], two.model)
                a, b = one.model.state_dict(), two.model.state_dict()  # type: ignore[attr-defined]
                diffs.append(max(float((a[n] - b[n]).abs().max()) for n in a))
        return diffs

    diffs = anyio.run(compare)
    assert max(diffs) < 1e-5, diffs


def test_replaying_with_two_ranks_reproduces_every_logged_sha256(
    run: tuple[Path, list[tuple[int, Event]]], model_cache: Path
) -> None:
    """`mrl replay` runs the 2-rank policy's replay on 2 ranks and checks every step's sha256."""
    run_dir, events = run
    cmd = [sys.executable, "-m", "mrl_actors.cli", "replay", str(run_dir), "--policy", RANKED]
    env = {**os.environ, "MRL_CACHE_DIR": str(model_cache)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{RANKED}: {STEPS} steps replayed, every weights sha256 matches the log" in done.stdout
    assert len({s.weights_sha256 for s in _steps(events, RANKED)}) == STEPS


def _rank_pids(run_dir: Path) -> list[int]:
    """PIDs of learner ranks started from `run_dir` (their command line names it)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmd = (d / "cmdline").read_bytes().split(b"\0")
            if b"mrl_actors.actors.learner_ranks" in cmd and str(run_dir).encode() in cmd:
                out.append(int(d.name))
    return out


def test_a_killed_run_with_a_two_rank_learner_resumes(
    models_dir: Path, model_cache: Path, tmp_path: Path
) -> None:
    """SIGKILL `mrl run` once the 2-rank learner stored a checkpoint; its rank 1 ends by
    itself; `mrl run --resume` takes every remaining step once, from that checkpoint."""
    steps = 6
    spec = tmp_path / "spec.toml"
    spec.write_text(spec_text(models_dir, steps))
    run_dir = tmp_path / "run"
    env = {**os.environ, "MRL_CACHE_DIR": str(model_cache)}
    cmd = [sys.executable, "-m", "mrl_actors.cli", "run", "--no-progress"]
    proc = subprocess.Popen([*cmd, str(spec), "--out", str(run_dir)], env=env)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if (run_dir / "server.json").exists():
                events = [e for _, e in anyio.run(_events, run_dir)]
                if any(isinstance(e, CheckpointStored) and e.policy == RANKED for e in events):
                    break
            time.sleep(0.5)
        assert proc.poll() is None, "the run finished before it could be killed"
        assert _rank_pids(run_dir), "no learner rank process was running"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        kill_run(run_dir, proc)
        deadline = time.monotonic() + 30
        while _rank_pids(run_dir) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _rank_pids(run_dir), "rank 1 outlived its rank 0"
        resumed = subprocess.run([*cmd, "--resume", str(run_dir)], env=env, timeout=600)
        assert resumed.returncode == 0
    finally:
        kill_run(run_dir, proc)
        for pid in _rank_pids(run_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    events = anyio.run(_events, run_dir)
    taken = _steps(events, RANKED)
    assert [s.step for s in taken] == list(range(1, steps + 1))
    seqs = [c.seq for s in taken for c in s.consumed]
    assert len(seqs) == len(set(seqs))
    restarted = [s for s in taken if "restored_from_step" in s.metrics]
    assert len(restarted) == 1 and restarted[0].metrics["restored_from_step"] >= 2


def test_per_policy_processes_host_two_multi_rank_learners(
    models_dir: Path, model_cache: Path, tmp_path: Path
) -> None:
    """`[run] processes = "per_policy"`: each policy in an mrl-node process of its own, so both
    policies can have a 2-rank learner (one torch.distributed group per process)."""
    from mrl_actors.events import NodeJoined
    from mrl_actors.run.runner import run_once
    from mrl_actors.spec import parse_spec

    text = spec_text(models_dir, 2).replace(
        'mode = "async"', 'mode = "async"\nprocesses = "per_policy"'
    )
    text = text.replace("learner_slots = 1", "learner_slots = 2")
    out = tmp_path / "run"
    anyio.run(lambda: run_once(parse_spec(text), text, out))
    events = anyio.run(_events, out)
    for p in POLICIES:
        steps = _steps(events, p)
        assert [s.step for s in steps] == [1, 2]
        assert all(s.metrics["learner_ranks"] == 2.0 for s in steps)
    joined = [e for _, e in events if isinstance(e, NodeJoined)]
    assert sorted(e.node for e in joined) == ["local-gpt2", "local-llama"]
    assert len({e.pid for e in joined} | {os.getpid()}) == 3
