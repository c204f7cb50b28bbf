"""The sharded GRPO learner (FSDP2 on 2 gloo ranks, two processes) against one rank.

Uneven shares are on purpose: 3 micro-batches over 2 ranks leave rank 1 one pass with loss
factor 0, and every step has an off-policy term (run on both ranks, counted on rank 0).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mrl_actors.see.server import free_port

PROGRAM = Path(__file__).with_name("ranks_program.py")
ROOT = Path(__file__).resolve().parents[2]


def _run(models: Path, out: Path, world: int, accum: int, beta: float) -> None:
    port = free_port()
    args = [str(models), str(out)]
    tail = [str(world), str(port), str(accum), str(beta)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(PROGRAM), *args, str(r), *tail],
            cwd=ROOT,
        )
        for r in range(world)
    ]
    try:
        for p in procs:
            assert p.wait(timeout=300) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.slow
@pytest.mark.parametrize("beta", [0.0, 0.1])  # 0.1: a KL term to a reference on every rank
def test_two_ranks_take_the_one_rank_step_within_float_tolerance(
    models_dir: Path, tmp_path: Path, beta: float
) -> None:
    accum = 3  # rank 0 runs micro-batches 0 and 2, rank 1 runs 1 and a pass with factor 0
    from safetensors import safe_open
    from safetensors.torch import load_file

    one, two, again = tmp_path / "one.st", tmp_path / "two.st", tmp_path / "again.st"
    _run(models_dir, one, 1, accum, beta)
    _run(models_dir, two, 2, accum, beta)
    _run(models_dir, again, 2, accum, beta)
    a, b, c = load_file(one), load_file(two), load_file(again)
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    assert all((b[k] == c[k]).all() for k in b)  # the same 2 ranks: bitwise
    metrics = []
    for path in (one, two):
        with safe_open(str(path), "pt") as f:
            metrics.append({k: float(v) for k, v in f.metadata().items()})
    for key in ("loss", "kl", "entropy", "tokens", "is_on_mean", "is_off_mean", "grad_norm"):
        assert metrics[1][key] == pytest.approx(metrics[0][key], rel=1e-4, abs=1e-6), key
