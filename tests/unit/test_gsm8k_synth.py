"""The shipped GSM8K-format pair: generated, read through `datasets`, judged by the verifier."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mrl_actors.cli.compose import compose_spec
from mrl_actors.tasks import MathConfig, MathTask, make_task
from mrl_actors.tasks.gsm8k_synth import pair, write_pair
from mrl_actors.tasks.math import extract_gsm8k, verify_math

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "runtime" / "data" / "gsm8k-synth"


def test_the_shipped_files_are_what_the_generator_writes(tmp_path: Path) -> None:
    write_pair(tmp_path)
    for name in ("train.jsonl", "test.jsonl"):
        assert (DATA / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_rows_have_gsm8k_form_and_the_splits_are_disjoint() -> None:
    train, test = pair()
    assert (len(train), len(test)) == (300, 100)
    assert not {r["question"] for r in train} & {r["question"] for r in test}
    for row in train + test:
        assert set(row) == {"question", "answer"}
        assert "<<" in row["answer"] and row["answer"].splitlines()[-1].startswith("#### ")
    assert pair() == (train, test)  # deterministic


def test_the_pair_goes_through_datasets_and_the_math_verifier() -> None:
    task = MathTask(MathConfig(train=str(DATA / "train.jsonl"), test=str(DATA / "test.jsonl")))
    train, test = task.train_items(), task.test_items()
    assert (len(train), len(test)) == (300, 100)
    rows = [json.loads(line) for line in (DATA / "test.jsonl").read_text().splitlines()]
    for item, row in zip(test, rows, strict=True):
        assert item.prompt == row["question"]
        assert item.answer == extract_gsm8k(row["answer"])  # the gold number after ####
        assert task.verify(task.target_text(item), item).success  # what a warm start teaches
        assert verify_math(row["answer"], item.answer).success  # the worked solution too
        wrong = f"#### {int(item.answer) + 1}"
        assert task.verify(wrong, item).reason == "wrong_answer"
    assert task.verify("no number here", test[0]).reason == "no_answer"


def test_the_gsm8k_scenario_reads_the_shipped_pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read as `mrl run` reads it (paths relative to the spec file), from another directory."""
    monkeypatch.chdir(tmp_path)
    spec, _ = compose_spec([ROOT / "runtime" / "experiments" / "gsm8k-pair.toml"])
    assert spec.task.kind == "math" and spec.task.math is not None
    assert Path(spec.task.math.train) == DATA / "train.jsonl"
    task = make_task(spec.task)
    assert len(task.train_items()) == 300 and len(task.test_items()) == 100
