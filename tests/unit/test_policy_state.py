"""The policy actor's fold: idempotent by sequence, and the same state however the log is read."""

from __future__ import annotations

import numpy as np
from helpers import events as E
from hypothesis import given, settings
from hypothesis import strategies as st

from mrl_actors.actors.state import (
    PolicyState,
    assemble,
    evolve,
    peers_ready,
    peers_to_wait_for,
    split_consumed,
    take_peer_events,
)
from mrl_actors.events import (
    Completion,
    ConsumedEvent,
    Event,
    RewardSummary,
    RolloutGroupCompleted,
    SuccessVerified,
)
from mrl_actors.probes import Seen


def _c(reward: float) -> Completion:
    return E.completion(reward, text="ab")


def _rollout(policy: str, version: int, prompt: str) -> RolloutGroupCompleted:
    return E.group(policy, version, prompt, [_c(0.0), _c(1.0)])


def _summary(policy: str, version: int, prompt: str) -> RewardSummary:
    return E.reward_summary(policy, version, prompt, [0.0, 1.0])


def _success(policy: str, version: int, prompt: str) -> SuccessVerified:
    return E.success(policy, version, prompt, _c(1.0), index=1)


def _log() -> list[Seen[Event]]:
    """A small run: both policies roll out p0 and p1, then 'a' learns from its own and b's."""
    events: list[Event] = [
        _rollout("a", 0, "p0"),
        _summary("a", 0, "p0"),
        _rollout("b", 0, "p0"),
        _success("b", 0, "p0"),
        _summary("b", 0, "p0"),
        _rollout("a", 0, "p1"),
        _summary("b", 0, "p1"),
    ]
    seen: list[Seen[Event]] = [Seen(i + 1, e) for i, e in enumerate(events)]
    consumed = [ConsumedEvent(1, events[0].event_id), ConsumedEvent(4, events[3].event_id)]
    step = E.learner_step("a", 1, probe="sgt", consumed=consumed, weights_sha256="x")
    return [*seen, Seen(len(seen) + 1, step)]


def _fold(log: list[Seen[Event]]) -> PolicyState:
    state = PolicyState(policy="a", peer_kind="success", peers=frozenset({"b"}))
    for s in log:
        state = evolve(state, s)
    return state


def test_fold_tracks_versions_own_groups_and_pending_peer_events() -> None:
    state = _fold(_log())
    assert state.version == 1 and state.last_seq == 8
    assert state.used == frozenset({1, 4})
    assert [s.seq for s in state.own.values()] == [6]  # p1's group is still to learn from
    assert state.pending == {}  # b's success on p0 was consumed
    assert peers_ready(state, ["b"], ["p0", "p1"], 0)
    assert not peers_ready(state, ["b"], ["p0", "p1"], 1)


def _started_state() -> PolicyState:
    """'a' at the start of a run with two peers: 'b' has sampled p0 and p1, 'c' nothing yet."""
    state = PolicyState(policy="a", peer_kind="success", peers=frozenset({"b", "c"}))
    made = (
        (_rollout, "p0"),
        (_success, "p0"),
        (_summary, "p0"),
        (_rollout, "p1"),
        (_summary, "p1"),
    )
    events: list[Event] = [build("b", 0, prompt) for build, prompt in made]
    for i, e in enumerate(events):
        state = evolve(state, Seen(i + 1, e))
    return state


def test_lockstep_waits_for_a_peer_that_has_not_sampled_yet() -> None:
    """Regression (issue 21): with `max_staleness = 2` the first steps' bound is negative, and a
    peer with no summary counted as version -1, so step 0 went on without a peer not started."""
    state = _started_state()
    for version in range(3):  # the steps whose bound is below zero
        min_version = version - 2
        assert peers_ready(state, ["b"], ["p0", "p1"], min_version)
        assert not peers_ready(state, ["c"], ["p0", "p1"], min_version)
        assert not peers_ready(state, ["b", "c"], ["p0", "p1"], min_version)
    # once c's summaries are folded, the wait is over
    state = evolve(state, Seen(6, _summary("c", 0, "p0")))
    assert not peers_ready(state, ["b", "c"], ["p0", "p1"], -2)
    state = evolve(state, Seen(7, _summary("c", 0, "p1")))
    assert peers_ready(state, ["b", "c"], ["p0", "p1"], -2)
    # a peer that did the prompt too many versions ago is not ready either
    assert not peers_ready(state, ["b"], ["p0"], 1)


def test_async_waits_for_a_peer_that_has_not_started() -> None:
    """An async learner waits for a peer not started yet (no learner step: at version 0) on
    every batch its rollouts may be sampling, not only on batch 0; not for a finished one or one
    further behind than the staleness bound."""
    steps = {"b": 2}  # b has taken two steps, c none
    for version in (0, 1):
        assert peers_to_wait_for(steps, ["b", "c"], version, steps=10, max_staleness=1) == [
            "b",
            "c",
        ]
    assert peers_to_wait_for(steps, ["b", "c"], 3, steps=10, max_staleness=1) == ["b"]
    assert peers_to_wait_for(steps, ["b", "c"], 4, steps=10, max_staleness=1) == []
    # with no staleness allowed, a peer's rollouts sample only its learner's own batch: c (at
    # 0) cannot be sampling batch 1; b, ahead, has sampled it
    assert peers_to_wait_for(steps, ["b", "c"], 1, steps=10, max_staleness=0) == ["b"]
    # a finished peer samples nothing more, whatever this learner's version
    assert peers_to_wait_for({"b": 10}, ["b"], 9, steps=10, max_staleness=1) == []


def test_consumed_events_are_never_offered_again() -> None:
    state = _fold(_log())
    # a redelivery of b's consumed success (same sequence) changes nothing
    assert evolve(state, _log()[3]) is state
    assert take_peer_events(state, ["p0"]) == []


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7)), max_size=30))
def test_redelivered_events_change_nothing(redeliveries: list[tuple[int, int]]) -> None:
    """At-least-once delivery: redelivering any already folded event, any number of times, is a
    no-op. (`after`, `which`): once event `after` is delivered, event `which <= after` comes again.
    """
    log = _log()
    noisy: list[Seen[Event]] = []
    for i, s in enumerate(log):
        noisy.append(s)
        noisy += [log[min(which, i)] for after, which in redeliveries if after == i]
    assert _fold(noisy) == _fold(log)


def test_assemble_and_split_consumed_agree() -> None:
    """Live assembly and replay's reconstruction give the same probe inputs."""
    log = _log()
    own = [s for s in log if isinstance(s.event, RolloutGroupCompleted) and s.event.policy == "a"]
    peers = [s for s in log if isinstance(s.event, SuccessVerified)]
    live = assemble(own, peers)  # type: ignore[arg-type]  # Seen[Event] narrowed above
    replay_own, replay_peers = split_consumed("a", [*own, *peers])
    assert assemble(replay_own, replay_peers) == live
    assert [p.own.event.prompt_id for p in live] == ["p0", "p1"]
    assert len(live[0].peer_successes) == 1 and live[1].peer_successes == []
    np.testing.assert_array_equal(
        live[0].peer_successes[0].event.completion.token_ids_array(), [1, 2]
    )


def test_events_that_speak_for_another_policy_or_an_unknown_one_are_ignored() -> None:
    import msgspec

    log = _log()
    forged = msgspec.structs.replace(_success("b", 0, "p1"), source="c")  # c claims to be b
    stranger = _success("z", 0, "p1")  # a policy outside the run
    state = _fold([*log, Seen(20, forged), Seen(21, stranger)])
    assert take_peer_events(state, ["p1"]) == []
    assert state.last_seq == 21  # read, and ignored


def test_own_logged_experience_is_tracked_until_its_step_is_taken() -> None:
    log = _log()
    state = _fold(log[:2])  # a's group and summary for p0, version 0
    assert set(state.own_logged) == {log[0].event.event_id, log[1].event.event_id}
    state = _fold(log)  # ... then a's learner step 1 prunes everything of version 0
    assert state.own_logged == {}


def test_the_same_event_id_at_a_new_sequence_is_taken_once() -> None:
    """Regression: the fold deduplicated by stream sequence only, so an event published again
    after the server's duplicate window (same id, new seq) was queued, or consumed, twice."""
    log = _log()
    b_p1 = _success("b", 0, "p1")
    state = _fold([*log, Seen(20, b_p1), Seen(21, b_p1)])
    assert [s.seq for s in take_peer_events(state, ["p1"])] == [20]
    # b's success on p0 was consumed by step 1 (at seq 4): a copy at seq 22 is not offered again
    state = _fold([*log, Seen(22, log[3].event)])
    assert take_peer_events(state, ["p0"]) == []
    # and a's own group stored twice is one group to learn from, at its first sequence
    state = _fold([*log, Seen(23, log[5].event)])
    assert [s.seq for s in state.own.values()] == [6]


def test_async_learner_waits_for_no_one_when_told() -> None:
    """`probes.sharing.async_peer_wait = "none"`: the learner's wait list is empty even for a peer
    whose rollouts are sampling its batch; "sampling" keeps the rule above."""
    from types import SimpleNamespace

    from mrl_actors.actors.learner import LearnerActor
    from mrl_actors.probes.config import SharingConfig

    def wait_list(mode: str) -> list[str]:
        spec = SimpleNamespace(
            run=SimpleNamespace(steps=10, max_staleness=1),
            probes=SimpleNamespace(sharing=SharingConfig(async_peer_wait=mode)),  # type: ignore[arg-type]
        )
        actor = SimpleNamespace(
            state=SimpleNamespace(peer_kind="SuccessVerified"),
            spec=spec,
            peers=["b"],
            peer_steps={"b": 1},
        )
        return LearnerActor._peers_to_wait_for(actor, 1)  # type: ignore[arg-type]

    assert wait_list("sampling") == ["b"]
    assert wait_list("none") == []
