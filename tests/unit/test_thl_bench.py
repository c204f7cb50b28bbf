"""`tools/bench_thl.py` runs, prints its tables, and its numbers say what the issue promises."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_bench_prints_a_table_per_pair_and_beats_dtw(
    models_dir: Path,
    model_dir: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model_dir("qwen1.5-1.8b")  # one of the pairs: skipped where Qwen is missing
    spec = importlib.util.spec_from_file_location("bench_thl", ROOT / "tools" / "bench_thl.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = ["bench_thl.py", "--models", str(models_dir), "--seqs", "24", "--dtw-seqs", "1"]
    monkeypatch.setattr(sys, "argv", [*argv, "--pairs", "gpt2:mistral-7b,qwen1.5-1.8b:gpt2"])
    assert bench.main() == 0
    out = capsys.readouterr().out
    assert out.count("## gpt2 -> mistral-7b") == 1 and "## qwen1.5-1.8b -> gpt2" in out
    rows = re.findall(r"^\| (\S+ -> \S+)\s+\|\s+(\d+) \|.*\|\s+(\d+) \| (\d\.\d+) \|", out, re.M)
    assert len(rows) == 2
    for _pair, _e2e, vs_dtw, exact in rows:
        assert int(vs_dtw) > 10 and float(exact) == 1.0  # loose: CI machines are shared
    drifts = [float(x) for x in re.findall(r"sum drift: (\S+)", out)]
    assert drifts and max(drifts) < 1e-9
