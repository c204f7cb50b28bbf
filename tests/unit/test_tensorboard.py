"""TensorBoard scalars of learner steps: written as event files, read back record by record.

`read_scalars` parses the files as TensorBoard does (TFRecord framing with both checksums, one
`Event` protobuf per record, the format version first), independently of tensorboardX's writer.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from mrl_actors.report.tensorboard import StepScalars, board_dir, read_scalars


def test_step_metrics_are_read_back_as_scalars_per_step(tmp_path: Path) -> None:
    board = StepScalars(tmp_path, "qwen", enabled=True, last_step=3)
    board.write(1, {"loss": 0.5, "reward_mean": 0.25, "kl": 0.0})
    board.write(2, {"loss": -0.125, "reward_mean": 0.75, "staleness_mean": 1.0})
    # a restarted actor goes on in a new file of the same directory; the last step closes it
    again = StepScalars(tmp_path, "qwen", enabled=True, last_step=3)
    again.write(3, {"loss": 0.0625, "eval_accuracy": 0.5})
    assert again._writer is None  # closed after the run's last step

    got = read_scalars(board_dir(tmp_path, "qwen"))
    assert got == {
        ("loss", 1): 0.5,
        ("reward_mean", 1): 0.25,
        ("kl", 1): 0.0,
        ("loss", 2): -0.125,
        ("reward_mean", 2): 0.75,
        ("staleness_mean", 2): 1.0,
        ("loss", 3): 0.0625,
        ("eval_accuracy", 3): 0.5,
    }
    assert len(list(board_dir(tmp_path, "qwen").iterdir())) == 2
    board.close()


def test_disabled_writes_nothing(tmp_path: Path) -> None:
    StepScalars(tmp_path, "qwen", enabled=False, last_step=1).write(1, {"loss": 1.0})
    assert not (tmp_path / "tensorboard").exists()


def test_each_step_is_on_disk_before_write_returns(tmp_path: Path) -> None:
    """Flushed per step: a process killed after a step has that step in its file."""
    board = StepScalars(tmp_path, "llama", enabled=True, last_step=10)
    board.write(1, {"loss": 2.0})
    assert read_scalars(board_dir(tmp_path, "llama")) == {("loss", 1): pytest.approx(2.0)}
    board.close()


def test_a_corrupt_file_is_refused(tmp_path: Path) -> None:
    board = StepScalars(tmp_path, "qwen", enabled=True, last_step=1)
    board.write(1, {"loss": 1.0})
    (path,) = board_dir(tmp_path, "qwen").iterdir()
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # a byte of the last record
    path.write_bytes(bytes(data[:-3]))  # cut short by a kill: skipped
    assert read_scalars(board_dir(tmp_path, "qwen")) == {}
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="bad checksum"):
        read_scalars(board_dir(tmp_path, "qwen"))


def test_the_step_0_evaluation_is_step_0_of_the_same_tag_and_hparams_are_written(
    tmp_path: Path,
) -> None:
    from mrl_actors.report.tensorboard import read_hparams, spec_hparams
    from mrl_actors.spec import parse_spec

    spec = parse_spec(
        '[run]\nname = "r"\nsteps = 2\n[[policies]]\nname = "gpt2"\nmodel = "builtin:gpt2-bpe"\n'
        "tiny = { hidden_size = 16, layers = 1, heads = 2 }\n[policies.grpo]\nlr = 0.0005\n"
    )
    spec = msgspec.structs.replace(spec, run=msgspec.structs.replace(spec.run, tensorboard=True))
    board = StepScalars(
        tmp_path, "gpt2", enabled=True, last_step=2, hparams=spec_hparams(spec, "gpt2")
    )
    board.write(1, {"eval_accuracy_initial": 0.25, "reward_mean": 0.5})
    board.write(2, {"eval_accuracy": 0.5, "reward_mean": 0.75})
    scalars = read_scalars(board.dir)
    assert scalars[("eval_accuracy", 0)] == 0.25 and scalars[("eval_accuracy", 2)] == 0.5
    assert not any(tag.endswith("_initial") for tag, _ in scalars)
    assert scalars[("reward_mean", 1)] == 0.5
    hp = read_hparams(board.dir)
    assert hp["grpo.lr"] == pytest.approx(0.0005) and hp["run.steps"] == 2.0
    assert hp["policy.model"] == "builtin:gpt2-bpe" and hp["run.tensorboard"] is True
    assert set(hp) == set(spec_hparams(spec, "gpt2"))
