"""Task parts: which part a problem is in, and held-out scores per part."""

from __future__ import annotations

import pytest

from mrl_actors.actors.runtime import per_part
from mrl_actors.errors import ConfigError
from mrl_actors.report.stats import part_metric_keys
from mrl_actors.report.summary import summarize
from mrl_actors.spec import parse_spec
from mrl_actors.tasks import ArithmeticConfig, ArithmeticTask
from mrl_actors.tasks.arithmetic import carries
from mrl_actors.tasks.base import TaskItem


def test_carries_reads_every_column() -> None:
    assert not carries(32, 46) and not carries(0, 0) and not carries(90, 9)
    assert carries(37, 48) and carries(55, 45) and carries(91, 10) and carries(5, 5)


def test_parts_by_operator_and_by_carry() -> None:
    ops = ArithmeticTask(ArithmeticConfig(digits=2, ops=("+", "-"), parts="op", size=200))
    assert ops.parts == ("add", "sub")
    for it in ops.train_items() + ops.test_items():
        assert ops.part(it) == ("sub" if "-" in it.prompt else "add")
    sums = ArithmeticTask(ArithmeticConfig(digits=2, parts="carry", size=200))
    assert sums.parts == ("nocarry", "carry")
    found = {sums.part(it) for it in sums.train_items()}
    assert found == {"nocarry", "carry"}
    plain = ArithmeticTask(ArithmeticConfig(digits=2, size=20))
    assert plain.parts == () and plain.part(plain.train_items()[0]) is None


def test_carry_parts_need_sums_only() -> None:
    with pytest.raises(ValueError, match="parts"):
        ArithmeticConfig(ops=("+", "-"), parts="carry")
    with pytest.raises(ValueError, match="parts"):
        ArithmeticConfig(parts="digits")
    with pytest.raises(ConfigError, match="parts"):
        parse_spec(
            '[run]\nname = "x"\n[task.arithmetic]\nparts = "carry"\nops = ["*"]\n'
            '[[policies]]\nname = "a"\nmodel = "m"\n'
        )


def test_per_part_scores_count_only_the_parts_items() -> None:
    task = ArithmeticTask(ArithmeticConfig(digits=1, ops=("+", "-"), parts="op", size=20))
    items = [
        TaskItem("a", "1+2", "3"),
        TaskItem("b", "3-1", "2"),
        TaskItem("c", "4+4", "8"),
        TaskItem("d", "9-9", "0"),
    ]
    right = [1.0, 0.0, 0.0, 0.0]  # greedy: only the first sum right
    correct = [8, 0, 4, 8]  # of 8 samples each
    out = per_part(task, items, right, correct, 8)
    assert out["eval_accuracy_add"] == 0.5 and out["eval_accuracy_sub"] == 0.0
    assert out["eval_pass1_add"] == pytest.approx(0.75) and out["eval_pass1_sub"] == 0.5
    assert out["eval_pass8_add"] == 1.0 and out["eval_pass8_sub"] == 0.5
    plain = ArithmeticTask(ArithmeticConfig(digits=1, size=20))
    assert per_part(plain, items[:1], right[:1], correct[:1], 8) == {}


def test_the_summary_carries_parts_and_where_the_warm_start_stopped() -> None:
    from mrl_actors.events import LearnerStepCompleted, event_id

    def step(k: int, metrics: dict[str, float]) -> LearnerStepCompleted:
        return LearnerStepCompleted(
            run="r",
            source="a",
            event_id=event_id("learner", "r", "a", k),
            policy="a",
            step=k,
            probe="sgt",
            consumed=[],
            weights_sha256="x",
            metrics={"reward_mean": 0.0, **metrics},
        )

    events = [
        step(1, {"eval_accuracy_add_initial": 0.5, "warm_start_steps": 700.0}),
        step(2, {"eval_accuracy_add": 0.75, "eval_pass1_add": 0.6, "eval_pass8_add": 0.9}),
    ]
    s = summarize(events)
    p = s["policies"]["a"]
    assert p["warm_start"] == {"steps": 700.0}
    assert p["parts"]["add"] == {
        "initial_accuracy": 0.5,
        "final_accuracy": 0.75,
        "final_pass1": 0.6,
        "final_pass8": 0.9,
    }
    assert part_metric_keys({"sgt": [s]}) == (
        "eval_accuracy_add",
        "eval_pass1_add",
        "eval_pass8_add",
    )
