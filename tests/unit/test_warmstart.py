"""The warm start's stopping rule (pure, on constructed curves) and its record in the model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mrl_actors.actors.warmstart import (
    StopRule,
    should_stop,
    tiny_policy,
    train_accuracy,
    warm_start_metrics,
)
from mrl_actors.errors import ConfigError
from mrl_actors.models.load import build_tiny, load_model, save_model, weights_sha256
from mrl_actors.tasks import ArithmeticConfig, ArithmeticTask
from mrl_actors.tasks.parts import PartView


def test_stops_on_the_target_at_the_first_check_that_reaches_it() -> None:
    rule = StopRule(max_steps=1000, target=0.5)
    curve = [0.0, 0.1, 0.3, 0.49, 0.5, 0.7]
    stops = [should_stop(curve[: i + 1], rule) for i in range(len(curve))]
    assert stops == [None, None, None, None, "target", "target"]


def test_stops_on_a_plateau_after_patience_checks_without_a_real_gain() -> None:
    rule = StopRule(max_steps=1000, patience=3, min_delta=0.02)
    # rising, then three checks within 0.02 of the best before them
    curve = [0.1, 0.3, 0.50, 0.51, 0.49, 0.52]
    stops = [should_stop(curve[: i + 1], rule) for i in range(len(curve))]
    assert stops == [None, None, None, None, None, "plateau"]
    # a gain larger than min_delta inside the window keeps it going
    assert should_stop([0.1, 0.3, 0.50, 0.51, 0.49, 0.53], rule) is None
    # a falling curve is a plateau too (nothing above the best)
    assert should_stop([0.4, 0.3, 0.2, 0.1], rule) == "plateau"


def test_a_falling_loss_is_not_a_plateau_even_while_accuracy_is_flat() -> None:
    rule = StopRule(max_steps=1000, patience=3, min_delta=0.02)
    flat = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    falling = [2.0, 1.5, 1.2, 1.0, 0.9, 0.8]  # 0.8 is 20% below the best before the window
    assert should_stop(flat, rule, falling) is None
    barely = [2.0, 1.5, 1.2, 1.19, 1.19, 1.18]  # under 2% below 1.2
    assert should_stop(flat, rule, barely) == "plateau"
    assert should_stop(flat, rule) == "plateau"  # without losses, accuracy alone decides


def test_a_curve_that_keeps_rising_never_stops_early() -> None:
    rule = StopRule(max_steps=1000, target=0.9, patience=2, min_delta=0.01)
    curve = [0.05 * i for i in range(18)]  # 0 .. 0.85, +0.05 per check
    assert all(should_stop(curve[: i + 1], rule) is None for i in range(len(curve)))
    assert should_stop([], rule) is None


def test_without_target_or_patience_the_warm_start_takes_its_steps() -> None:
    assert not StopRule(max_steps=10).checks
    assert should_stop([0.0, 0.0, 0.0, 0.0], StopRule(max_steps=10)) is None


def test_train_accuracy_is_teacher_forced_exact_match(models_dir: Path) -> None:
    """A model whose logits are all equal predicts token 0 ("!") everywhere: no target right."""
    torch.set_num_threads(1)
    task = ArithmeticTask(ArithmeticConfig(size=32, digits=2, spaced_digits=True))
    model, tok = build_tiny(models_dir / "gpt2", hidden_size=16, layers=1, heads=2, seed=0)
    with torch.no_grad():  # every logit 0: the argmax is id 0 at every position
        for p in model.parameters():
            p.zero_()
    items = task.train_items()[:8]
    assert train_accuracy(model, tok, task, items) == 0.0


def test_the_rule_decides_where_the_warm_start_stops_and_the_model_keeps_it(
    models_dir: Path, tmp_path: Path
) -> None:
    """patience 1 with min_delta 1.0: the second check is a plateau whatever was learned, so
    the start stops at exactly 2 x check_every steps; the same seed gives the same bytes."""
    torch.set_num_threads(1)
    task = ArithmeticTask(ArithmeticConfig(size=64))
    rule = StopRule(max_steps=50, patience=1, min_delta=1.0, check_every=3, check_size=8)
    kw = {"hidden_size": 16, "layers": 1, "heads": 2, "warm_steps": 50, "rule": rule}
    m1, tok = tiny_policy(models_dir / "gpt2", tmp_path / "a", task, **kw)
    m2, _ = tiny_policy(models_dir / "gpt2", tmp_path / "b", task, **kw)
    assert weights_sha256(m1) == weights_sha256(m2)
    metrics = warm_start_metrics(m1)
    assert metrics["warm_start_steps"] == 6.0
    assert metrics["warm_start_plateaued"] == 1.0 and metrics["warm_start_reached_target"] == 0.0
    assert 0.0 <= metrics["warm_start_train_accuracy"] <= 1.0
    # the record travels with a saved checkpoint (the run's step-0)
    again, _ = load_model(save_model(m1, tmp_path / "step-0", tok))
    assert warm_start_metrics(again) == metrics
    # a model not built here has no record
    fresh, _ = build_tiny(models_dir / "gpt2", hidden_size=16, layers=1, heads=2)
    assert warm_start_metrics(fresh) == {}


def test_a_warm_start_on_parts_reads_only_those_parts() -> None:
    task = ArithmeticTask(ArithmeticConfig(digits=1, ops=("+", "-"), parts="op", size=60))
    view = PartView(task, ["sub"])
    assert view.train_items() and all("-" in it.prompt for it in view.train_items())
    assert all("-" in it.prompt for it in view.sample(0, 3, 16))
    assert view.test_items() == []
    with pytest.raises(ConfigError, match="parts"):
        PartView(task, ["mul"])
    with pytest.raises(ConfigError, match="parts"):
        PartView(ArithmeticTask(ArithmeticConfig()), ["add"])
