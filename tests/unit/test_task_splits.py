"""Train/test splits: held-out problems never leak into training, by text or by prompt id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mrl_actors.errors import ConfigError
from mrl_actors.tasks import (
    ArithmeticConfig,
    CountdownConfig,
    MathConfig,
    Task,
    TaskConfig,
    make_task,
)
from mrl_actors.tasks.base import problem_key


def _write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _math_rows(n: int, start: int = 0) -> list[dict[str, str]]:
    return [{"question": f"What is {i} + {i}?", "answer": f"#### {2 * i}"} for i in range(start, n)]


def _configs(tmp_path: Path) -> dict[str, TaskConfig]:
    _write_jsonl(tmp_path / "all.jsonl", _math_rows(200))
    # the train file repeats two test questions (one with other whitespace): they must not train
    _write_jsonl(
        tmp_path / "train.jsonl",
        [*_math_rows(40), {"question": "What is  50 + 50?", "answer": "#### 100"}],
    )
    _write_jsonl(tmp_path / "test.jsonl", _math_rows(60, start=39))
    _write_jsonl(
        tmp_path / "math_train.jsonl",
        [{"problem": f"Find {i}/2.", "solution": f"It is \\boxed{{{i}/2}}"} for i in range(9)],
    )
    _write_jsonl(
        tmp_path / "math_test.jsonl",
        [{"problem": "Find 11/2.", "solution": "So \\boxed{\\frac{11}{2}}"}],
    )
    return {
        "arithmetic-default": TaskConfig(kind="arithmetic"),
        "arithmetic-tiny": TaskConfig(
            kind="arithmetic", arithmetic=ArithmeticConfig(max_operand=4, size=64)
        ),
        "arithmetic-2digit": TaskConfig(
            kind="arithmetic", arithmetic=ArithmeticConfig(digits=2, size=4000, test_size=500)
        ),
        "arithmetic-ops": TaskConfig(
            kind="arithmetic", arithmetic=ArithmeticConfig(digits=3, ops=("+", "-", "*"))
        ),
        "countdown": TaskConfig(kind="countdown"),
        "countdown-small": TaskConfig(
            kind="countdown", countdown=CountdownConfig(n_numbers=2, max_number=5)
        ),
        "math-files": TaskConfig(
            kind="math",
            math=MathConfig(train=str(tmp_path / "train.jsonl"), test=str(tmp_path / "test.jsonl")),
        ),
        "math-MATH-format": TaskConfig(
            kind="math",
            math=MathConfig(
                train=str(tmp_path / "math_train.jsonl"),
                test=str(tmp_path / "math_test.jsonl"),
                style="boxed",
            ),
        ),
        "math-one-file": TaskConfig(kind="math", math=MathConfig(path=str(tmp_path / "all.jsonl"))),
    }


KINDS = [
    "arithmetic-default",
    "arithmetic-tiny",
    "arithmetic-2digit",
    "arithmetic-ops",
    "countdown",
    "countdown-small",
    "math-files",
    "math-MATH-format",
    "math-one-file",
]


@pytest.mark.parametrize("which", KINDS)
def test_no_train_item_appears_in_the_test_split(which: str, tmp_path: Path) -> None:
    task: Task = make_task(_configs(tmp_path)[which])
    train, test = task.train_items(), task.test_items()
    assert train and test
    test_text = {problem_key(i.prompt) for i in test}
    test_ids = {i.prompt_id for i in test}
    assert not [i for i in train if problem_key(i.prompt) in test_text]
    assert not [i for i in train if i.prompt_id in test_ids]
    if which.startswith("countdown"):  # one problem = the multiset of numbers and the target

        def key(p: str) -> tuple[tuple[str, ...], str]:
            nums, target = p.split("->")
            return tuple(sorted(nums.split())), target.strip()

        assert not {key(i.prompt) for i in train} & {key(i.prompt) for i in test}
    # prompt ids are unique within each split too
    assert len({i.prompt_id for i in train}) == len(train)
    assert len(test_ids) == len(test)


@pytest.mark.parametrize("which", KINDS)
def test_splits_are_deterministic_and_training_draws_only_from_train(
    which: str, tmp_path: Path
) -> None:
    cfg = _configs(tmp_path)[which]
    a, b = make_task(cfg), make_task(cfg)
    assert a.train_items() == b.train_items()
    assert a.test_items() == b.test_items()
    train_ids = {i.prompt_id for i in a.train_items()}
    drawn = {i.prompt_id for s in range(40) for i in a.sample(3, s, 8)}
    assert drawn <= train_ids
    assert {i.prompt_id for i in a.items(5)} == train_ids


def test_the_arithmetic_family_has_thousands_of_distinct_problems() -> None:
    task = make_task(
        TaskConfig(kind="arithmetic", arithmetic=ArithmeticConfig(digits=2, size=6000))
    )
    problems = {i.prompt for i in task.train_items() + task.test_items()}
    assert len(problems) == 6000 + 256
    assert max(int(i.answer) for i in task.test_items()) <= 198  # operands up to 99
    for item in task.test_items()[:50]:
        assert task.verify(task.target_text(item), item).success
    # a family too small for the sizes asked keeps a quarter of it out, never all of it
    tiny = make_task(
        TaskConfig(kind="arithmetic", arithmetic=ArithmeticConfig(max_operand=4, size=64))
    )
    assert (len(tiny.train_items()), len(tiny.test_items())) == (19, 6)


def test_math_files_drop_train_questions_that_are_in_the_test_file(tmp_path: Path) -> None:
    task = make_task(_configs(tmp_path)["math-files"])
    assert len(task.test_items()) == 21
    # rows 0..39 and "What is  50 + 50?"; 39 and 50 are test questions: 39 remain
    assert len(task.train_items()) == 39
    assert "What is 39 + 39?" not in {i.prompt for i in task.train_items()}


def test_math_one_file_split_is_keyed_by_text_not_by_row(tmp_path: Path) -> None:
    rows = _math_rows(200)
    _write_jsonl(tmp_path / "a.jsonl", rows)
    _write_jsonl(tmp_path / "b.jsonl", list(reversed(rows)))
    a = make_task(TaskConfig(kind="math", math=MathConfig(path=str(tmp_path / "a.jsonl"))))
    b = make_task(TaskConfig(kind="math", math=MathConfig(path=str(tmp_path / "b.jsonl"))))
    assert {i.prompt for i in a.test_items()} == {i.prompt for i in b.test_items()}
    assert 5 <= len(a.test_items()) <= 40  # test_fraction 0.1 of 200


def test_math_split_errors_say_what_to_set(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "t.jsonl", _math_rows(3))
    with pytest.raises(ConfigError, match="train: must be set together with `test`"):
        make_task(TaskConfig(kind="math", math=MathConfig(train=str(tmp_path / "t.jsonl"))))
    with pytest.raises(ConfigError, match="path: must be set when `train`/`test` are not"):
        make_task(TaskConfig(kind="math", math=MathConfig()))
    with pytest.raises(ConfigError, match="no such file"):
        make_task(
            TaskConfig(
                kind="math",
                math=MathConfig(train=str(tmp_path / "t.jsonl"), test=str(tmp_path / "nope")),
            )
        )
    _write_jsonl(tmp_path / "one.jsonl", _math_rows(1))  # one row cannot make two splits
    with pytest.raises(ConfigError, match="both need at least one"):
        make_task(TaskConfig(kind="math", math=MathConfig(path=str(tmp_path / "one.jsonl"))))
