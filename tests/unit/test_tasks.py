"""Tasks: deterministic items and sampling, prompt/target formats, local datasets via `datasets`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mrl_actors.errors import ConfigError
from mrl_actors.tasks import (
    ArithmeticConfig,
    ArithmeticTask,
    CountdownTask,
    MathConfig,
    TaskConfig,
    make_task,
)
from mrl_actors.tasks.base import Task


@pytest.mark.parametrize("kind", ["arithmetic", "countdown"])
def test_sampling_is_a_pure_function_of_seed_and_step(kind: str) -> None:
    t1, t2 = make_task(TaskConfig(kind=kind)), make_task(TaskConfig(kind=kind))
    assert t1.sample(3, 7, 5) == t2.sample(3, 7, 5)
    assert t1.sample(3, 7, 5) != t1.sample(4, 7, 5)
    assert t1.items(1) == t2.items(1)
    assert len({i.prompt_id for i in t1.items(0)}) == len(t1.items(0))


def test_sampling_walks_epochs_without_repeats() -> None:
    """Within an epoch every item is drawn exactly once."""
    task = ArithmeticTask(ArithmeticConfig(size=20))
    drawn = [i.prompt_id for s in range(5) for i in task.sample(0, s, 4)]
    assert sorted(drawn) == sorted(i.prompt_id for i in task.items(0))


def test_targets_verify_as_correct() -> None:
    """The warm-start targets are exactly what the verifiers reward."""
    for task in (ArithmeticTask(ArithmeticConfig(ops=("+", "-", "*"))), CountdownTask()):
        for item in task.items(0)[:50]:
            assert task.verify(task.target_text(item), item).success


def _write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _jsonl_task(d: Path, rows: list[dict[str, str]]) -> Task:
    """A math task on `rows` (train.jsonl) and one held-out problem (test.jsonl) in `d`."""
    _write_jsonl(d / "train.jsonl", rows)
    _write_jsonl(d / "test.jsonl", [{"question": "3+3?", "answer": "#### 6"}])
    cfg = MathConfig(train=str(d / "train.jsonl"), test=str(d / "test.jsonl"))
    return make_task(TaskConfig(kind="math", math=cfg))


def test_math_task_from_local_jsonl_and_parquet(tmp_path: Path) -> None:
    rows = [
        {"question": "2+2?", "answer": "2 and 2 make 4.\n#### 4"},
        {"question": "Half of 1?", "answer": "It is \\boxed{\\frac{1}{2}}"},
    ]
    task = _jsonl_task(tmp_path, rows)
    items = sorted(task.items(0), key=lambda i: i.prompt_id)
    assert [i.answer for i in items] == ["4", "\\frac{1}{2}"]
    assert [i.answer for i in task.test_items()] == ["6"]
    assert task.verify("so #### 4", items[0]).success
    assert task.verify("#### 0.5", items[1]).success
    assert "####" in task.prompt_text(items[0])

    from datasets import Dataset

    Dataset.from_list(rows).to_parquet(str(tmp_path / "train.parquet"))
    cfg = MathConfig(
        train=str(tmp_path / "train.parquet"), test=str(tmp_path / "test.jsonl"), style="boxed"
    )
    ptask = make_task(TaskConfig(kind="math", math=cfg))
    assert sorted(i.answer for i in ptask.items(0)) == sorted(i.answer for i in items)
    assert "\\boxed" in ptask.prompt_text(items[0])


def test_task_config_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^kind: must be one of arithmetic, "):
        TaskConfig(kind="chess")  # refused when the spec is parsed, before any task is built
    with pytest.raises(ConfigError, match=r"^math: must be a \[task\.math\] block"):
        TaskConfig(kind="math")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ConfigError, match=r"expected \.jsonl"):
        make_task(TaskConfig(kind="math", math=MathConfig(path=str(tmp_path / "x.csv"))))
    _write_jsonl(tmp_path / "q.jsonl", [{"q": "1", "a": "1"}])
    with pytest.raises(ConfigError, match="no column 'question'"):
        make_task(TaskConfig(kind="math", math=MathConfig(path=str(tmp_path / "q.jsonl"))))


def test_math_task_keeps_fraction_and_decimal_gold_answers(tmp_path: Path) -> None:
    """A gold `#### 1/2` stays 1/2 (it used to be cut to 1, and `#### 1` then scored correct)."""
    rows = [
        {"question": "Half of 1?", "answer": "1 / 2 is\n#### 1/2"},
        {"question": "5 halves?", "answer": "#### 2.5"},
    ]
    task = _jsonl_task(tmp_path, rows)
    half, two_and_half = sorted(task.items(0), key=lambda i: i.prompt_id)
    assert (half.answer, two_and_half.answer) == ("1/2", "2.5")
    assert task.verify(task.target_text(half), half).success
    assert task.verify("#### 0.5", half).success
    assert not task.verify("#### 1", half).success
    assert not task.verify("#### 2", two_and_half).success


def test_arithmetic_task_rewards_only_the_exact_integer() -> None:
    """The first number is read whole: `12.5` and the strict-format `12.0` are not 12."""
    task = ArithmeticTask(ArithmeticConfig(ops=("+", "-")))
    for item in task.items(0)[:50]:
        assert task.verify(task.target_text(item), item).success
        assert not task.verify(f" {item.answer}.5\n", item).success
        assert not task.verify(f" {item.answer}.0\n", item).success
        unicode_minus = item.answer.replace("-", "\u2212")
        assert task.verify(f" {unicode_minus}\n", item).success


def test_spaced_digits_spell_one_token_per_digit_and_verify_whole_numbers() -> None:
    task = ArithmeticTask(ArithmeticConfig(digits=2, spaced_digits=True, ops=("+", "-")))
    item = next(i for i in task.test_items() if i.answer.startswith("-") and len(i.answer) == 3)
    a, b = item.prompt.split("-", 1)
    assert task.prompt_text(item) == f"Q: {' '.join(a)} - {' '.join(b)}=\nA:"
    assert task.target_text(item) == f" - {item.answer[1]} {item.answer[2]}\n"
    assert task.verify(task.target_text(item), item).success
    assert task.verify(f" {item.answer}\n", item).success  # unspaced is the same number
    assert not task.verify(f" {item.answer[:2]}\n", item).success  # "- 2" is not -23
    assert not task.verify(f" {task.target_text(item).strip()} . 5", item).success
    for it in task.train_items()[:100]:
        assert task.verify(task.target_text(it), it).success
