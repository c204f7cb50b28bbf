"""What a finished run directory holds, read back: its events, each policy's learner steps."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from mrl_actors.events import Event, LearnerStepCompleted
from mrl_actors.see.access import open_log
from mrl_actors.see.server import read_server_info


async def run_events(run_dir: Path, run: str) -> list[Event]:
    async with open_log(run_dir=run_dir, run=run) as log:
        return [rec.event async for rec in log.read(start_seq=1)]


def learner_steps(events: list[Event], policy: str) -> list[LearnerStepCompleted]:
    return [e for e in events if isinstance(e, LearnerStepCompleted) and e.policy == policy]


def kill_run(run_dir: Path, proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL an `mrl run` process and the embedded server it started (by the run dir's pid)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)
    info = read_server_info(run_dir)
    if info is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(info.pid, signal.SIGKILL)
