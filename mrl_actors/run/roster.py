"""The actors a node runs on its slots, one task each, started and stopped to match each
assignment it applies.

An actor told to stop runs on until its task returns (a learner's step finishes in its thread
first), so stopping waits for that: an assignment that gives the actor back right away (a node
counted lost for a moment, then found again) must find it gone and start it anew, not take the
actor that is ending for one that runs, and the next actor on its slot must not share the device
with it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Container
from typing import Any

import anyio
from anyio.abc import TaskStatus

from mrl_actors.run.placement import Hosted


class Roster:
    """The running actors by what they host; `body(h, task_status=...)` is what one runs."""

    def __init__(self, body: Callable[..., Awaitable[None]]) -> None:
        self._body = body
        self.running: dict[Hosted, anyio.CancelScope] = {}
        self._ended: dict[Hosted, anyio.Event] = {}

    async def start(self, tg: Any, h: Hosted) -> None:
        """Start `h` in `tg` and return once it says it is ready (`task_status.started`)."""
        scope, ended = anyio.CancelScope(), anyio.Event()
        self.running[h], self._ended[h] = scope, ended
        await tg.start(self._run, h, scope, ended)

    async def _run(
        self,
        h: Hosted,
        scope: anyio.CancelScope,
        ended: anyio.Event,
        *,
        task_status: TaskStatus[None],
    ) -> None:
        try:
            with scope:
                await self._body(h, task_status=task_status)
        finally:
            if self.running.get(h) is scope:
                del self.running[h]
            ended.set()

    async def stop_all_but(self, keep: Container[Hosted]) -> list[Hosted]:
        """Cancel every actor not in `keep` and wait until each has returned; those stopped."""
        leaving = [h for h in self.running if h not in keep]
        for h in leaving:
            self.running[h].cancel()
        for h in leaving:
            await self._ended[h].wait()
        return leaving
