"""Evaluation goes through the policy's rollout engine: its stop strings, end ids and length cap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.heads import Boost

from mrl_actors.actors.runtime import PolicyRuntime
from mrl_actors.models.load import build_tiny
from mrl_actors.rollout import make_engine
from mrl_actors.spec import parse_spec
from mrl_actors.tasks import ArithmeticConfig, ArithmeticTask, TaskItem


def _runtime(models_dir: Path, boost: str = "") -> PolicyRuntime:
    spec = parse_spec(
        f"""
[run]
name = "e"
[[policies]]
name = "gpt2"
model = "{models_dir / "gpt2"}"
[policies.engine.sampling]
max_new_tokens = 6
stop = ["\\n"]
"""
    )
    model, tok = build_tiny(models_dir / "gpt2", hidden_size=32, layers=1, heads=2, seed=2)
    if boost:
        boosted = Boost(model.get_output_embeddings(), tok.convert_tokens_to_ids(boost))
        model.get_output_embeddings = lambda: boosted
    policy = spec.policies[0]
    return PolicyRuntime(
        spec=spec,
        policy=policy,
        task=ArithmeticTask(ArithmeticConfig(max_operand=4, size=16)),
        model=model,
        tokenizer=tok,
        learner=None,
        engine=make_engine(policy.engine, model, tok),
        vocab=None,
        peer_vocabs={},
    )


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_greedy_accuracy_is_the_engines_greedy_completions_verified(models_dir: Path) -> None:
    rt = _runtime(models_dir)
    items = rt.task.items(0)[:8]
    metrics = rt.evaluate(items, samples=2)
    gens = rt.engine.generate([rt.render(i) for i in items], n=1, seed=123, greedy=True)
    assert all(len(g[0].token_ids) <= 6 for g in gens)  # the engine's cap, not model.generate's
    expected = np.mean(
        [rt.task.verify(g[0].text, i).success for i, g in zip(items, gens, strict=True)]
    )
    assert metrics["eval_accuracy"] == pytest.approx(float(expected))
    assert set(metrics) == {"eval_accuracy", "eval_pass1", "eval_pass2"}
    assert 0 <= metrics["eval_pass1"] <= metrics["eval_pass2"] <= 1
    assert rt.evaluate(items, samples=2) == metrics  # greedy and the eval seed: reproducible


def test_a_policy_that_always_answers_two_scores_exactly_the_items_whose_answer_is_two(
    models_dir: Path,
) -> None:
    """The boosted token " 2" is the argmax and nearly all the sampled mass, so every metric is
    the share of items whose answer is 2 (the verifier reads the first number)."""
    rt = _runtime(models_dir, boost="Ġ2")
    items = [TaskItem("a", "1+1", "2"), TaskItem("b", "2+0", "2"), TaskItem("c", "1+2", "3")]
    metrics = rt.evaluate(items, samples=4)
    two_thirds = pytest.approx(2 / 3)
    assert metrics == {
        "eval_accuracy": two_thirds,
        "eval_pass1": two_thirds,
        "eval_pass4": two_thirds,
    }
