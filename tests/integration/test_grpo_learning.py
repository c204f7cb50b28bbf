"""GRPO end to end on a warm-started tiny model: the pieces fit, and a step moves the right way.

The pipeline is the real one: tiny real GPT-2 architecture with its real tokenizer, a short
supervised warm start (cached through `tiny_policy`), the HF engine sharing the learner's model,
the arithmetic verifier, TRL-equivalent group advantages and the learner step. What sampling
produces differs from machine to machine, so nothing here asserts on it: the sampled loop checks
the mechanism (on-policy ratios of 1, the engine following the weights), and the direction of
learning is checked on groups the test builds itself (the right answer and a wrong one, rewarded
by the verifier), where GRPO must raise the right answer's log-probability over the wrong one's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mrl_actors.actors.warmstart import target_ids, tiny_policy
from mrl_actors.grpo import GRPOConfig, GRPOLearner, Sample, group_advantages
from mrl_actors.grpo.batch import collate
from mrl_actors.grpo.logprobs import completion_logps
from mrl_actors.models.load import weights_sha256
from mrl_actors.rollout import SamplingConfig, encode_prompt
from mrl_actors.rollout.hf import HFEngine
from mrl_actors.tasks import ArithmeticConfig, ArithmeticTask, TaskItem

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

STEPS, PROMPTS, GROUP = 6, 8, 8


@pytest.fixture(scope="module")
def policy(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Any]:
    torch.set_num_threads(1)
    task = ArithmeticTask(ArithmeticConfig(max_operand=4, size=64))
    cache = tmp_path_factory.mktemp("cache")
    model, tok = tiny_policy(models_dir / "gpt2", cache, task, warm_steps=80, seed=0)
    return model, tok, task


def _learner(model: Any) -> GRPOLearner:
    """The learner both tests step: lr 1e-3 on completions of at most 6 tokens."""
    return GRPOLearner(model, GRPOConfig(lr=1e-3, max_completion_length=6), seed=0)


def test_sampled_grpo_steps_keep_ratios_at_one_and_the_engine_in_step(
    policy: tuple[Any, Any, Any],
) -> None:
    model, tok, task = policy
    engine = HFEngine(model, tok, SamplingConfig(max_new_tokens=6, stop=("\n",)))
    learner = _learner(model)
    start = weights_sha256(model)
    for step in range(STEPS):
        items = task.sample(1, step, PROMPTS)
        prompts = [encode_prompt(tok, task.prompt_text(i)) for i in items]
        gens = engine.generate(prompts, n=GROUP, seed=step)
        rewards = torch.tensor(
            [task.verify(g.text, i).reward for i, gs in zip(items, gens, strict=True) for g in gs]
        )
        adv = group_advantages(rewards, GROUP, "group")
        samples = [
            Sample(p, g.token_ids, g.logprobs, float(adv[i * GROUP + j]))
            for i, (p, gs) in enumerate(zip(prompts, gens, strict=True))
            for j, g in enumerate(gs)
        ]
        m = learner.step(samples)
        engine.sync_weights(model, learner.version)
        assert m["is_on_max"] < 1.001  # the engine shares the model: ratios stay at 1
        assert np.isfinite(m["loss"]) and np.isfinite(m["grad_norm"])
    assert learner.version == STEPS
    assert weights_sha256(model) != start


def _margin(model: Any, tok: Any, built: list[tuple[Sample, Sample]]) -> np.ndarray:
    """[N] log p(right answer) - log p(wrong answer), summed over each completion's tokens."""
    out = []
    for right, wrong in built:
        b = collate([right, wrong], tok.pad_token_id or 0)
        with torch.no_grad():
            logps, _ = completion_logps(
                model, b.input_ids, b.attention_mask, b.completion_ids.size(1), 1.0
            )
        seq = (logps * b.mask).sum(dim=1)  # [2]
        out.append(float(seq[0] - seq[1]))
    return np.asarray(out)


def _built_group(model: Any, tok: Any, task: ArithmeticTask, item: TaskItem) -> list[Sample]:
    """Half the group says the right answer, half a wrong one; the verifier gives the rewards."""
    prompt = encode_prompt(tok, task.prompt_text(item))
    texts = [task.target_text(item), f" {int(item.answer) + 1}\n"] * (GROUP // 2)
    rewards = torch.tensor([task.verify(t, item).reward for t in texts])
    assert rewards.tolist() == [1.0, 0.0] * (GROUP // 2)
    adv = group_advantages(rewards, GROUP, "group")
    samples = []
    for text, a in zip(texts, adv.tolist(), strict=True):
        ids = np.asarray([*target_ids(tok, task.prompt_text(item), text, prompt)], np.int32)
        b = collate(
            [Sample(prompt, ids, np.zeros(len(ids), np.float32), 0.0)], tok.pad_token_id or 0
        )
        with torch.no_grad():  # behaviour log-probs of the current policy: an on-policy group
            lp, _ = completion_logps(model, b.input_ids, b.attention_mask, len(ids), 1.0)
        samples.append(Sample(prompt, ids, lp[0].numpy().astype(np.float32), float(a)))
    return samples


def test_grpo_raises_the_rewarded_answer_over_the_unrewarded_one(
    policy: tuple[Any, Any, Any],
) -> None:
    model, tok, task = policy
    items = task.items(3)[:PROMPTS]
    learner = _learner(model)
    groups = [_built_group(model, tok, task, item) for item in items]
    pairs = [(g[0], g[1]) for g in groups]
    before = _margin(model, tok, pairs)
    for _ in range(3):
        learner.step([s for g in groups for s in g])
    after = _margin(model, tok, pairs)
    # GRPO's objective on these groups is the sum of the margins (advantages +1 and -1 in equal
    # numbers); small steps up its gradient raise it. A single prompt's margin may still fall when
    # its wrong answer is another prompt's right one, so the sum is what is asserted.
    assert after.sum() > before.sum() + 0.1, (before, after)
