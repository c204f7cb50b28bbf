"""`mrl thl check`: the residual table, JSON output, and clear errors with a non-zero exit."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from mrl_actors.cli import main

LINES = "The answer is 42.\n北京是首都 🙂\n    def f(x): return x**2\n"


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_plain_lines_print_a_readable_residual_table(
    models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "t.txt"
    f.write_text(LINES, encoding="utf-8")
    argv = ["thl", "check", "--from", str(models_dir / "gpt2"), "--to"]
    rc, out, _ = _run([*argv, str(models_dir / "mistral-7b"), "--text-file", str(f)], capsys)
    assert rc == 0
    assert "gpt2 (byte-level) -> mistral-7b (sentencepiece), 3 lines" in out
    rows = {ln.split("  ")[0].strip(): ln for ln in out.splitlines()}
    assert rows["exact"].split()[1] == "1.0000"
    assert rows["rejected"].split()[1] == "0.0000"
    for label in ("1:1 tokens", "n:m bytes", "longest span (B)", "lossy bytes"):
        assert label in rows


def test_json_lines_in_and_json_out(
    models_dir: Path,
    model_dir: Callable[[str], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text('{"text": "hello world"}\n{"text": "cafe\\u0301"}\n', encoding="utf-8")
    argv = ["thl", "check", "--from", str(models_dir / "mistral-7b"), "--to"]
    argv += [str(model_dir("qwen1.5-1.8b")), "--text-file", str(f), "--json"]
    rc, out, _ = _run(argv, capsys)
    assert rc == 0
    doc = json.loads(out)
    assert doc["aggregate"]["sequences"] == 2.0
    first, second = doc["sequences"]
    assert first["exact"] and not first["rejected"]
    assert second["rejected"] and second["lossy_bytes"] > 0  # Qwen's NFC rewrites e + U+0301
    rc, _, _ = _run([*argv[:-1], "--fail-on-reject"], capsys)
    assert rc == 1


def test_errors_are_clear_and_exit_non_zero(
    models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "t.txt"
    good.write_text(LINES, encoding="utf-8")
    gpt2 = str(models_dir / "gpt2")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    rc, _, err = _run(["thl", "check", "--from", str(empty_dir), "--to", gpt2, "--text-file",
                       str(good)], capsys)  # fmt: skip
    assert rc == 2 and "no fast tokenizer could be loaded" in err
    rc, _, err = _run(["thl", "check", "--from", gpt2, "--to", gpt2, "--text-file",
                       str(tmp_path / "missing.txt")], capsys)  # fmt: skip
    assert rc == 2 and "cannot read text file" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"txt": 1}\n', encoding="utf-8")
    rc, _, err = _run(["thl", "check", "--from", gpt2, "--to", gpt2, "--text-file", str(bad)],
                      capsys)  # fmt: skip
    assert rc == 2 and "bad.jsonl:2" in err
