"""A node's actors (`run.roster.Roster`): stopping one waits until it has returned, so an
assignment that gives it back at once (a node counted lost for a moment: an empty epoch, then
the same one) starts it anew instead of finding the ending actor still listed and skipping it."""

from __future__ import annotations

import anyio
from anyio.abc import TaskStatus

from mrl_actors.run.placement import Hosted
from mrl_actors.run.roster import Roster

LEARNER = Hosted(slot=0, policy="gpt2", role="learner")
ROLLOUT = Hosted(slot=1, policy="gpt2", role="rollout")


def test_a_stopped_actor_has_returned_and_the_same_assignment_starts_it_again() -> None:
    starts: list[Hosted] = []
    live: set[Hosted] = set()

    async def body(h: Hosted, *, task_status: TaskStatus[None]) -> None:
        starts.append(h)
        live.add(h)
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.05)  # a step finishing in its thread
            live.discard(h)

    async def main() -> None:
        actors = Roster(body)
        with anyio.fail_after(10):
            await scenario(actors)

    async def scenario(actors: Roster) -> None:
        async with anyio.create_task_group() as tg:
            for h in (LEARNER, ROLLOUT):
                await actors.start(tg, h)
            assert await actors.stop_all_but(set()) == [LEARNER, ROLLOUT]  # lost, for a moment
            assert live == set() and actors.running == {}
            for h in (LEARNER, ROLLOUT):  # found again: the same assignment
                if h not in actors.running:
                    await actors.start(tg, h)
            assert await actors.stop_all_but({LEARNER}) == [ROLLOUT]
            assert set(actors.running) == live == {LEARNER}
            tg.cancel_scope.cancel()

    anyio.run(main)
    assert starts == [LEARNER, ROLLOUT, LEARNER, ROLLOUT]


def test_an_actor_that_returns_by_itself_leaves_the_roster() -> None:
    async def body(h: Hosted, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        await anyio.sleep(0)

    async def main() -> None:
        actors = Roster(body)
        async with anyio.create_task_group() as tg:
            await actors.start(tg, LEARNER)
        assert actors.running == {}
        assert await actors.stop_all_but(set()) == []

    anyio.run(main)
