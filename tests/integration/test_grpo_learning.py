"""GRPO raises the reward of a warm-started tiny model on the synthetic task (fixed seed, CPU).

This is the end-to-end check that the pieces fit: tiny real GPT-2 architecture with its real
tokenizer, a short supervised warm start (cached through `tiny_policy`), the HF engine sharing the
learner's model, the arithmetic verifier, TRL-equivalent group advantages and the learner step.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mrl_actors.grpo import GRPOConfig, GRPOLearner, Sample, group_advantages
from mrl_actors.logs import get_logger
from mrl_actors.models import weights_sha256
from mrl_actors.rollout import SamplingConfig, encode_prompt
from mrl_actors.rollout.hf import HFEngine
from mrl_actors.tasks import ArithmeticConfig, ArithmeticTask
from mrl_actors.warmstart import tiny_policy

log = get_logger(__name__)
STEPS, PROMPTS, GROUP = 60, 8, 8


def _eval(engine: HFEngine, tok: Any, task: ArithmeticTask) -> float:
    """Mean reward of 8 samples on each of 32 fixed prompts (fixed sampling seed)."""
    items = task.items(7)[:32]
    gens = engine.generate([encode_prompt(tok, task.prompt_text(i)) for i in items], n=8, seed=99)
    return float(
        np.mean(
            [task.verify(g.text, i).reward for i, gs in zip(items, gens, strict=False) for g in gs]
        )
    )


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_grpo_raises_reward_of_warm_started_tiny_model(models_dir: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)  # bitwise-reproducible trajectory on a given CPU
    task = ArithmeticTask(ArithmeticConfig(max_operand=4, size=64))
    model, tok = tiny_policy(models_dir / "gpt2", tmp_path / "cache", task, warm_steps=80, seed=0)
    sampling = SamplingConfig(max_new_tokens=6, stop=("\n",))
    engine = HFEngine(model, tok, sampling)
    learner = GRPOLearner(model, GRPOConfig(lr=1e-3, max_completion_length=6), seed=0)
    start_hash = weights_sha256(model)
    before = _eval(engine, tok, task)
    t0 = time.perf_counter()
    for step in range(STEPS):
        items = task.sample(1, step, PROMPTS)
        prompts = [encode_prompt(tok, task.prompt_text(i)) for i in items]
        gens = engine.generate(prompts, n=GROUP, seed=step)
        rewards = torch.tensor(
            [task.verify(g.text, i).reward for i, gs in zip(items, gens, strict=False) for g in gs]
        )
        adv = group_advantages(rewards, GROUP, "group")
        samples = [
            Sample(p, g.token_ids, g.logprobs, float(adv[i * GROUP + j]))
            for i, (p, gs) in enumerate(zip(prompts, gens, strict=False))
            for j, g in enumerate(gs)
        ]
        m = learner.step(samples)
        engine.sync_weights(model, learner.version)
        assert m["is_on_max"] < 1.001  # the engine shares the model: ratios stay at 1
    after = _eval(engine, tok, task)
    log.info("grpo_learning", before=before, after=after, seconds=time.perf_counter() - t0)
    assert weights_sha256(model) != start_hash
    assert 0.05 < before < 0.5, "the warm start should leave room to learn"
    assert after >= before + 0.08, (before, after)
