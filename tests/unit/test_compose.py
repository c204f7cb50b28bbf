"""Any spec field from the command line: files composed in order, `--set`, `--dry-run`, and the
errors that say where (file or argument, and field); `--out` on an old run; a busy metrics port."""

from __future__ import annotations

import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mrl_actors.cli import main
from mrl_actors.cli.compose import compose_spec, fields_of
from mrl_actors.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
TOY = ROOT / "runtime" / "experiments" / "toy-pair.toml"


def test_set_reaches_any_field_policies_by_name_or_index() -> None:
    spec, text = compose_spec(
        [TOY],
        [
            "policies.gpt2.grpo.lr=1e-4",
            "policies.1.engine.sampling.max_new_tokens=12",
            "run.steps=7",
            "run.name=try2",
            'policies.llama.engine.sampling.stop=["\\n", "."]',
            "probes.sgt.coef=0.25",
        ],
    )
    gpt2, llama = spec.policies
    assert gpt2.grpo.lr == 1e-4 and llama.grpo.lr == 5e-4  # the other policy keeps the file's
    assert llama.engine.sampling.max_new_tokens == 12 and llama.engine.sampling.stop == ("\n", ".")
    assert (spec.run.steps, spec.run.name, spec.probes.sgt.coef) == (7, "try2", 0.25)
    assert tomllib.loads(text)["run"]["steps"] == 7  # the text is what the spec is


def test_a_set_value_is_checked_like_the_file_and_the_error_names_the_argument() -> None:
    with pytest.raises(ConfigError, match=r"^--set policies.gpt2.grpo.lr: policies\[0\]\.grpo"):
        compose_spec([TOY], ["policies.gpt2.grpo.lr=fast"])
    with pytest.raises(ConfigError, match=r"--set run.steps: run.steps: must be"):
        compose_spec([TOY], ["run.steps=0"])
    with pytest.raises(ConfigError, match=r"no policy named 'gpt3' \(policies: \['gpt2', 'llama'"):
        compose_spec([TOY], ["policies.gpt3.grpo.lr=1e-4"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        compose_spec([TOY], ["run.steps"])
    with pytest.raises(ConfigError, match="run has: name, seed, probe, steps"):
        compose_spec([TOY], ["run.stepz=3"])  # an unknown field lists its table's fields


def test_files_compose_in_order_policies_merged_by_name(tmp_path: Path) -> None:
    over = tmp_path / "over.toml"
    over.write_text(
        '[run]\nsteps = 3\n[[policies]]\nname = "llama"\n[policies.grpo]\nlr = 2e-4\n'
        '[[policies]]\nname = "third"\nmodel = "builtin:gpt2-bpe"\n'
        "tiny = { hidden_size = 16, layers = 1, heads = 2 }\n"
    )
    spec, _ = compose_spec([TOY, over])
    assert spec.run.steps == 3 and spec.run.probe == "sgt"  # the base's other fields stay
    assert [p.name for p in spec.policies] == ["gpt2", "llama", "third"]
    assert spec.policies[1].grpo.lr == 2e-4 and spec.policies[1].grpo.loss_type == "dapo"
    bad = tmp_path / "bad.toml"
    bad.write_text('[[policies]]\nname = "llama"\n[policies.grpo]\nlr = -1.0\n')
    with pytest.raises(ConfigError, match=rf"^{bad}: policies\[1\]\.grpo\.lr: must be"):
        compose_spec([TOY, bad])  # the file that set the field is named, not the base


def test_fields_of_walks_the_spec_types() -> None:
    assert "lr" in fields_of(["policies", "gpt2", "grpo"])
    assert "temperature" in fields_of(["policies", "0", "engine", "sampling"])
    assert fields_of(["nothing"]) == []


def test_dry_run_prints_the_effective_spec_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = ["run", str(TOY), "--set", "run.steps=9", "--probe", "xgrpo", "--dry-run"]
    assert main([*argv, "--out", str(out)]) == 0
    doc = tomllib.loads(capsys.readouterr().out)
    assert doc["run"]["steps"] == 9 and doc["run"]["probe"] == "xgrpo"
    assert [p["name"] for p in doc["policies"]] == ["gpt2", "llama"]
    assert not out.exists()


def test_a_math_data_path_is_read_from_the_spec_directory_and_named_when_missing(
    tmp_path: Path,
) -> None:
    sub = tmp_path / "specs"
    (sub / "data").mkdir(parents=True)
    (sub / "data" / "train.jsonl").write_text('{"question": "1+1", "answer": "#### 2"}\n')
    spec_file = sub / "m.toml"
    spec_file.write_text(
        TOY.read_text().replace(
            'kind = "arithmetic"',
            'kind = "math"\n[task.math]\ntrain = "data/train.jsonl"\ntest = "data/test.jsonl"',
        )
    )
    with pytest.raises(ConfigError, match=rf"^{spec_file}: task.math.test: {sub}/data/test.jsonl"):
        compose_spec([spec_file])
    (sub / "data" / "test.jsonl").write_text('{"question": "2+2", "answer": "#### 4"}\n')
    spec, _ = compose_spec([spec_file])  # from any working directory
    assert spec.task.math is not None and spec.task.math.train == str(sub / "data/train.jsonl")


def test_out_on_an_existing_run_is_refused_unless_resumed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "old"
    old.mkdir()
    (old / "spec.toml").write_text("# an earlier run\n")
    assert main(["run", str(TOY), "--out", str(old), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and f"mrl run --resume {old}" in err
    assert (old / "spec.toml").read_text() == "# an earlier run\n"  # untouched
    cmp = tmp_path / "cmp"
    (cmp / "sgt-s0").mkdir(parents=True)
    (cmp / "sgt-s0" / "spec.toml").write_text("")
    assert main(["run", str(TOY), "--compare", "--out", str(cmp)]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_a_busy_metrics_port_is_refused_before_anything_is_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = tmp_path / "new"
        argv = ["run", str(TOY), "--out", str(out), "--metrics-port", str(port)]
        assert main(argv) == 2
    assert f"--metrics-port {port}: cannot serve on 127.0.0.1:{port}" in capsys.readouterr().err
    assert not out.exists()


def test_python_dash_m_and_help_with_examples_and_docs() -> None:
    top = subprocess.run(
        [sys.executable, "-m", "mrl_actors", "--help"], capture_output=True, text=True, check=True
    )
    assert "examples:" in top.stdout and "docs/" in top.stdout
    run = subprocess.run(
        [sys.executable, "-m", "mrl_actors", "run", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--set policies.gpt2.grpo.lr=1e-4" in run.stdout
    assert "docs/grpo-and-probes.md" in run.stdout and "--dry-run" in run.stdout
