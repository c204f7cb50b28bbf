"""What a finished run directory holds, read back: its events, each policy's learner steps."""

from __future__ import annotations

from pathlib import Path

from mrl_actors.events import Event, LearnerStepCompleted
from mrl_actors.see.access import open_log


async def run_events(run_dir: Path, run: str) -> list[Event]:
    async with open_log(run_dir=run_dir, run=run) as log:
        return [rec.event async for rec in log.read(start_seq=1)]


def learner_steps(events: list[Event], policy: str) -> list[LearnerStepCompleted]:
    return [e for e in events if isinstance(e, LearnerStepCompleted) and e.policy == policy]
