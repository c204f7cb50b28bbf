"""A run killed while it writes a checkpoint resumes to the same final weights, bit for bit.

`MRL_TEST_KILL_IN_SAVE=<policy>/step-<k>` makes the run SIGKILL itself inside `save_model`, after
the weights are written to the temporary directory and before the checkpoint is complete. The
test kills one run twice (while saving `step-0`, then while saving `step-2` after step 2 is
logged), resumes it, and compares its last checkpoint with an uninterrupted run of the same spec.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from helpers.specs import TINY16, spec_toml

from mrl_actors.events import CheckpointSaved, Event, LearnerStepCompleted

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEPS = 3


def _spec(models_dir: Path) -> str:
    return spec_toml(
        models_dir,
        run={"name": "t-ckpt-kill", "probe": "independent", "steps": STEPS, "group_size": 4},
        tiny=TINY16,
        grpo={"lr": 1e-3},
        pair=[("gpt2", "gpt2")],
    )


async def _events(run_dir: Path) -> list[Event]:
    from mrl_actors.see import EventLog
    from mrl_actors.see.connection import connect
    from mrl_actors.see.server import open_run_dir

    async with open_run_dir(run_dir) as info:
        nc = await connect(info.client())
        try:
            log = await EventLog.open(nc, "t-ckpt-kill", create=False)
            return [rec.event async for rec in log.read(start_seq=1)]
        finally:
            await nc.close()


def _stop_server(run_dir: Path) -> None:
    from mrl_actors.see.server import read_server_info, serves

    info = read_server_info(run_dir)
    if info is not None and serves(info.pid, run_dir / "nats"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(info.pid, signal.SIGKILL)


def test_a_run_killed_mid_checkpoint_resumes_to_the_same_weights(
    models_dir: Path, tmp_path: Path
) -> None:
    from mrl_actors.models.load import is_complete, load_model, weights_sha256

    spec = tmp_path / "spec.toml"
    spec.write_text(_spec(models_dir))
    ref, run = tmp_path / "ref", tmp_path / "run"
    env = {**os.environ, "MRL_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("MRL_TEST_KILL_IN_SAVE", None)
    cmd = [sys.executable, "-m", "mrl_actors.cli", "run", "--no-progress"]

    def mrl(*args: str, kill_in: str | None = None) -> int:
        e = env if kill_in is None else {**env, "MRL_TEST_KILL_IN_SAVE": kill_in}
        return subprocess.run([*cmd, *args], env=e, timeout=240).returncode

    ckpt = run / "checkpoints" / "gpt2"
    try:
        assert mrl(str(spec), "--out", str(ref)) == 0

        # killed while writing step-0: nothing named step-0, the weights in a hidden temp dir
        assert mrl(str(spec), "--out", str(run), kill_in="gpt2/step-0") == -signal.SIGKILL
        assert not (ckpt / "step-0").exists()
        assert [p for p in ckpt.iterdir() if (p / "model.safetensors").exists()]
        _stop_server(run)

        # resumed, then killed while writing step-2 (step 2 is in the log, its checkpoint not)
        assert mrl("--resume", str(run), kill_in="gpt2/step-2") == -signal.SIGKILL
        assert is_complete(ckpt / "step-0") and not (ckpt / "step-2").exists()
        events = anyio.run(_events, run)
        assert [e.step for e in events if isinstance(e, LearnerStepCompleted)] == [1, 2]
        assert not [e for e in events if isinstance(e, CheckpointSaved)]
        _stop_server(run)

        assert mrl("--resume", str(run)) == 0
    finally:
        _stop_server(ref)
        _stop_server(run)

    assert sorted(p.name for p in ckpt.iterdir()) == ["step-0", "step-2", "step-3"]  # no temp
    events = anyio.run(_events, run)
    assert [e.step for e in events if isinstance(e, LearnerStepCompleted)] == [1, 2, 3]
    saved = [e for e in events if isinstance(e, CheckpointSaved)]
    assert [e.step for e in saved] == [2, 3]  # the killed save is repaired and logged once
    for step in (2, 3):
        assert is_complete(ckpt / f"step-{step}")
        model, _ = load_model(ckpt / f"step-{step}")
        reference, _ = load_model(ref / "checkpoints" / "gpt2" / f"step-{step}")
        assert weights_sha256(model) == weights_sha256(reference)
        assert weights_sha256(model) == next(e for e in saved if e.step == step).weights_sha256
