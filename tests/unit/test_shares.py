"""The rule by which a policy's rollout slots split the prompt batches, from the log alone."""

from __future__ import annotations

from mrl_actors.actors.shares import Shares
from mrl_actors.events import SlotAssignment, SlotsAssigned


def assigned(epoch: int, *owners: tuple[str, int, str, str]) -> SlotsAssigned:
    return SlotsAssigned(
        run="r",
        source="mwra",
        event_id=f"slots/r/mwra/{epoch}",
        time_ns=epoch,
        epoch=epoch,
        assignments=[
            SlotAssignment(node=n, slot=s, policy=p, role=role) for n, s, p, role in owners
        ],  # type: ignore[arg-type]
    )


A = ("h1", 0, "a", "rollout")
B = ("h2", 0, "a", "rollout")
C = ("h2", 1, "a", "rollout")
LEARNER = ("h1", 1, "a", "learner")
OTHER = ("h3", 0, "b", "rollout")


def test_each_batch_has_exactly_one_owner_among_the_policys_rollout_slots() -> None:
    sh = Shares("a", max_staleness=1)
    sh.assign(assigned(1, A, B, LEARNER, OTHER))
    owners = [sh.owner(k) for k in range(6)]
    assert owners == [("h1", 0), ("h2", 0)] * 3  # sorted slots, k % 2; learners and peers out


def test_an_opened_batch_stays_with_its_slot_when_the_policy_gains_a_slot() -> None:
    sh = Shares("a", max_staleness=1)
    sh.assign(assigned(1, A, B))
    sh.publish(0)  # opens batches 0 and 1
    sh.publish(1)  # opens batch 2
    assert sh.assign(assigned(2, A, B, C))
    assert [sh.owner(k) for k in (0, 1, 2)] == [("h1", 0), ("h2", 0), ("h1", 0)]
    sh.publish(2)  # batch 3 opens under the new assignment: slots[3 % 3]
    assert sh.owner(3) == ("h1", 0)
    # not opened yet: the newest assignment, where the new slot takes its share
    assert [sh.owner(k) for k in (4, 5)] == [("h2", 0), ("h2", 1)]


def test_a_batch_whose_slot_left_goes_to_the_same_successor_for_everyone() -> None:
    sh = Shares("a", max_staleness=0)
    sh.assign(assigned(1, A, B, C))
    for v in range(3):
        sh.publish(v)
    sh.assign(assigned(2, A, C, ("h2", 0, "b", "rollout")))  # B moved to policy b
    assert sh.owner(1) == ("h2", 1)  # B's batch 1: now slots[1 % 2] of (A, C)
    assert sh.owner(0) == ("h1", 0) and sh.owner(2) == ("h2", 1)  # kept by their slots
    sh.assign(assigned(3, OTHER))
    assert sh.owner(5) is None  # no rollout slot for a: nobody samples


def test_an_older_epoch_changes_nothing() -> None:
    sh = Shares("a", max_staleness=1)
    sh.assign(assigned(2, A))
    assert not sh.assign(assigned(1, A, B))
    assert sh.current == (("h1", 0),)
