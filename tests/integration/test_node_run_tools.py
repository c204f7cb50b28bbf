"""`mrl replay` and `mrl report` on a run hosted by `mrl-node`, as docs/several-hosts.md says.

A node writes the effective spec into its run directory; replay reads it (or, without it, the
log's RunStarted), and rebuilds step 0 from the spec's recipe where the directory does not hold
that policy's `step-0` checkpoint (another host hosted it): the logged sha256 of every step
still has to match.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers.specs import pair_spec

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _mrl(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mrl_actors", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_replay_and_report_work_on_a_node_run(
    models_dir: Path, model_cache: Path, tmp_path: Path
) -> None:
    spec = tmp_path / "spec.toml"
    # seed 1 in the spec, 0 by `--set` (seed 0: the session's cached warm starts)
    spec.write_text(pair_spec(models_dir, "t-noderun", "independent", steps=2, seed=1))
    run_dir = tmp_path / "h1"
    env = {**os.environ, "MRL_CACHE_DIR": str(model_cache)}
    node = [sys.executable, "-m", "mrl_actors.cli.mrl_node", str(spec), "--node", "h1"]
    node += ["--run-dir", str(run_dir), "--policies", "llama", "--set", "run.seed=0"]

    async def host() -> Any:  # the run directory's server, as `mrl run` would have started it
        from mrl_actors.see.server import serve_run_dir

        async with serve_run_dir(run_dir, run="t-noderun", policies=["gpt2", "llama"]):
            return await anyio.run_process(node, env=env, check=False)

    done = anyio.run(host)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    effective = tomllib.loads((run_dir / "spec.toml").read_text())
    assert effective["run"]["name"] == "t-noderun" and effective["run"]["seed"] == 0

    replayed = _mrl("replay", str(run_dir), "--policy", "llama", env=env)
    assert replayed.returncode == 0, replayed.stderr[-2000:]
    assert "llama: 2 steps replayed, every weights sha256 matches the log" in replayed.stdout

    # Another host's view: no step-0 checkpoint here and no spec.toml; the log has both facts.
    shutil.rmtree(run_dir / "checkpoints" / "llama" / "step-0")
    (run_dir / "spec.toml").unlink()
    replayed = _mrl("replay", str(run_dir), "--policy", "llama", "--run", "t-noderun", env=env)
    assert replayed.returncode == 0, replayed.stderr[-2000:]
    assert "llama: 2 steps replayed, every weights sha256 matches the log" in replayed.stdout

    reported = _mrl("report", str(run_dir), env=env)
    assert reported.returncode == 0, reported.stderr[-2000:]
    assert reported.stderr == ""  # no server start and stop lines
    page = (run_dir / "report.html").read_text()
    assert "t-noderun" in page and "llama" in page
