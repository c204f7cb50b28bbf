"""A node obeys an allocator decision only after checking it (`mwra.validate.DecisionCheck`).

The log here is what a live run writes: nodes join, MWRA decides from the prefix it folded
(`seen_seq`), time moves on. Forged decisions a node user could write are refused and not
folded; the honest decisions around them are obeyed.
"""

from __future__ import annotations

import msgspec
from test_mwra import RUN, S, heartbeat, joined, registered

from mrl_actors import events as ev
from mrl_actors.mwra import MwraConfig
from mrl_actors.mwra.rule import decide
from mrl_actors.mwra.state import MwraState, evolve
from mrl_actors.mwra.validate import DecisionCheck


def _forged(
    epoch: int, assignments: list[ev.SlotAssignment], *, source: str = "mwra", seen: int = 0
) -> ev.SlotsAssigned:
    return ev.SlotsAssigned(
        run=RUN,
        source=source,
        event_id=f"forged-{source}-{epoch}",
        time_ns=0,
        epoch=epoch,
        assignments=assignments,
        seen_seq=seen,
    )


def test_forged_decisions_are_refused_and_the_honest_chain_goes_on() -> None:
    config = MwraConfig()
    check = DecisionCheck(config, mwra=True)
    live = MwraState()  # what the honest leader folds (valid decisions only)
    seq = 0

    def record(event: ev.Event) -> str | None:
        nonlocal seq, live
        seq += 1
        why = check.observe(seq, event)
        if why is None:
            live = evolve(live, event)
        return why

    for e in (registered("a"), registered("b"), joined("h1", 2), joined("h2", 2)):
        assert record(e) is None
    first = decide(live, 0, config)
    assert first is not None and first.epoch == 1
    honest = msgspec.structs.replace(first, seen_seq=seq)
    assert record(honest) is None and check.epoch == 1

    # h2's slots given to h1 (whatever they serve): h2 would host nothing
    hijack = [
        msgspec.structs.replace(a, node="h1", slot=a.slot + 2) if a.node == "h2" else a
        for a in honest.assignments
    ]
    assert hijack != honest.assignments
    forged = [
        _forged(10**9, hijack, seen=seq),
        _forged(2**63 - 1, [], seen=seq),
        _forged(2, hijack, seen=seq),  # the right epoch, but not what the rule makes
        _forged(2, hijack, source="placement"),  # a second placement
        _forged(2, hijack, source="h1"),
    ]
    for f in forged:
        assert record(f) is not None, f
    assert check.epoch == 1 and check.refused == len(forged)
    assert check.state.assignment == live.assignment  # nothing forged was folded

    # h2 dies: the honest leader's next decision (made later, from the log so far) is obeyed
    t = 10 * config.liveness_interval_s
    assert record(heartbeat("h1", 2, t)) is None
    nxt = decide(live, int(t * S), config)
    assert nxt is not None and nxt.epoch == 2
    assert record(msgspec.structs.replace(nxt, seen_seq=seq)) is None
    assert check.epoch == 2
    assert {node for node, _ in check.state.assignment} == {"h1"}


def test_a_placement_is_valid_only_as_the_first_decision() -> None:
    check = DecisionCheck(MwraConfig(), mwra=False)
    a = ev.SlotAssignment(node="h1", slot=0, policy="a", role="learner")
    assert check.observe(1, _forged(1, [a], source="placement")) is None
    assert check.observe(2, _forged(2, [a], source="placement")) is not None
    assert check.observe(3, _forged(2, [a], seen=2)) is not None  # no MWRA in this run
