"""A short asynchronous `mrl run` with one policy on vLLM and one on the HF engine.

The CLI in a subprocess, as a user runs it: an embedded nats-server, each policy a learner and
one rollout actor meeting in the log. The vLLM policy's rollout actor is the only one that starts
a vLLM engine (its learner evaluates with an HF engine over its own weights), syncs each new
weights version into it, and its engine directory is gone when the run ends.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio

from mrl_actors.events import Event, LearnerStepCompleted, RolloutGroupCompleted

RUN = "t-vllm"
STEPS = 3
NO_BAR = ("--no-progress",)


def _spec(models_dir: Path) -> str:
    return f"""
[run]
name = "{RUN}"
seed = 0
mode = "async"
rollout_replicas = 1
max_staleness = 1
steps = {STEPS}
prompts_per_step = 2
group_size = 2
eval_every = {STEPS}
eval_size = 4
checkpoint_every = {STEPS}

[[policies]]
name = "hf"
model = "{models_dir / "gpt2"}"
tiny = {{ hidden_size = 16, layers = 1, heads = 2, warm_start_steps = 5 }}
[policies.engine.sampling]
max_new_tokens = 6
[policies.grpo]
lr = 1e-3
weight_decay = 0.1

[[policies]]
name = "vl"
model = "{models_dir / "llama2-7b"}"
tiny = {{ hidden_size = 128, layers = 1, heads = 2, warm_start_steps = 5 }}
[policies.engine]
kind = "vllm"
dtype = "float32"
enforce_eager = true
max_model_len = 256
kv_cache_gib = 0.0625
[policies.engine.sampling]
max_new_tokens = 6
[policies.grpo]
lr = 1e-3
weight_decay = 0.1  # every step changes the weights, whatever the rewards
"""


async def _events(run_dir: Path) -> list[Event]:
    from mrl_actors.see.access import open_log

    async with open_log(run_dir=run_dir, run=RUN) as log:
        return [rec.event async for rec in log.read(start_seq=1)]


def test_an_async_run_with_one_policy_on_vllm(models_dir: Path, tmp_path: Path) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(_spec(models_dir))
    out = tmp_path / "run"
    env = {**os.environ, "MRL_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-m", "mrl_actors.cli", "run", str(spec), "--out", str(out), *NO_BAR],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    events = anyio.run(_events, out)
    for p in ("hf", "vl"):
        steps = [e.step for e in events if isinstance(e, LearnerStepCompleted) and e.policy == p]
        assert steps == list(range(1, STEPS + 1))
    versions = {
        e.policy_version
        for e in events
        if isinstance(e, RolloutGroupCompleted) and e.policy == "vl"
    }
    assert versions >= {0, 1}  # groups sampled by vLLM from the first weights and newer ones
    lines = [json.loads(x) for x in (out / "run.log").read_text().splitlines() if x.startswith("{")]
    started = [x for x in lines if x.get("event") == "vllm.engine_started"]
    assert len(started) == 1  # the rollout actor's: the learner started none
    synced = [x for x in lines if x.get("event") == "vllm.weights_synced"]
    assert synced and all(x["probe_gap"] < 1e-3 for x in synced)
    assert list((out / "engines" / "vl").iterdir()) == []  # the engine's directory is gone
