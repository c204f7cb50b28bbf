"""A policy actor's state as a pure fold over the run's events, and the assembly of a step.

The state is rebuilt from the log at every start (`evolve` over the events in sequence order), so a
killed actor resumes exactly where the log says it was: the learner steps it took, the peer events
those steps consumed (never applied twice), its own rollouts not yet learned from, and the peer
events still waiting for their prompt.

`assemble` is shared by the live actor and by replay: the same consumed events in the same order
give the same `PromptInputs`, which is what makes a replayed learner step bitwise identical.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from mrl_actors.events import (
    Event,
    LearnerStepCompleted,
    RewardSummary,
    RolloutGroupCompleted,
    SuccessVerified,
    event_id,
    pack_f32,
)
from mrl_actors.probes import PEER_KIND, PromptInputs
from mrl_actors.see.record import Record
from mrl_actors.spec import RunSpec

PeerEvent = RolloutGroupCompleted | RewardSummary | SuccessVerified
_POLICY_EVENTS = (RolloutGroupCompleted, RewardSummary, SuccessVerified, LearnerStepCompleted)
# Kinds a policy actor folds: its own and its peers' experience, and learner steps.
FOLDED_KINDS = ("rollout", "reward", "success", "learner")


@dataclass(frozen=True)
class PolicyState:
    """What a policy knows from the log. Never mutated: `evolve` returns a new one."""

    policy: str
    peer_kind: str | None  # the event kind its probe reads from peers (None: independent)
    peers: frozenset[str] = frozenset()  # the run's other policies; events of others are ignored
    last_seq: int = 0  # highest stream sequence folded (idempotence: lower ones are ignored)
    version: int = 0  # learner steps taken (= its policy version)
    used: frozenset[int] = frozenset()  # sequences consumed by its learner steps
    used_ids: frozenset[str] = frozenset()  # and the ids of the events stored there
    # its own rollout groups not yet consumed, by event id
    own: Mapping[str, Record[RolloutGroupCompleted]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    # peer events of `peer_kind` not yet consumed, by prompt id, in sequence order
    pending: Mapping[str, tuple[Record[PeerEvent], ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    # (peer, prompt id) -> highest policy version at which the peer finished that prompt
    peer_done: Mapping[tuple[str, str], int] = field(default_factory=lambda: MappingProxyType({}))
    # ids of its own experience events (rollout, success, reward) in the log, with their policy
    # version; kept from the current version on, so a resumed step appends only what is missing
    own_logged: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))


def start_state(spec: RunSpec, policy: str) -> PolicyState:
    """A policy's state before it folds anything: which peers it listens to, for its probe."""
    peers = [p.name for p in spec.policies if p.name != policy]
    return PolicyState(policy=policy, peer_kind=PEER_KIND[spec.run.probe], peers=frozenset(peers))


def evolve(state: PolicyState, seen: Record[Event]) -> PolicyState:
    """The state after one more event. Events at or below `last_seq` change nothing.

    An event whose `policy` is not its `source` (the subject's last token), or that names a policy
    outside the run, is ignored: a writer can only speak for the subject it may publish on.
    An experience event is taken once by its id: the same id stored again at a later sequence
    (a publish retried after the server's duplicate window) is ignored.
    """
    if seen.seq <= state.last_seq:
        return state
    ev = seen.event
    state = replace(state, last_seq=seen.seq)
    if not isinstance(ev, _POLICY_EVENTS) or ev.policy != ev.source:
        return state
    if ev.policy != state.policy and ev.policy not in state.peers:
        return state
    if isinstance(ev, LearnerStepCompleted) and ev.policy == state.policy:
        consumed = frozenset(c.seq for c in ev.consumed)
        consumed_ids = frozenset(c.event_id for c in ev.consumed)
        own = {k: v for k, v in state.own.items() if v.seq not in consumed}
        pending = {
            k: kept
            for k, v in state.pending.items()
            if (kept := tuple(s for s in v if s.seq not in consumed))
        }
        logged = {k: v for k, v in state.own_logged.items() if v >= ev.step}
        return replace(
            state,
            version=ev.step,
            used=state.used | consumed,
            used_ids=state.used_ids | consumed_ids,
            own=MappingProxyType(own),
            pending=MappingProxyType(pending),
            own_logged=MappingProxyType(logged),
        )
    if seen.seq in state.used or isinstance(ev, LearnerStepCompleted):
        return state
    if ev.event_id in state.used_ids or _pending(state, ev):
        return state  # the same fact stored twice
    if ev.policy == state.policy:
        own_logged = {**state.own_logged, ev.event_id: ev.policy_version}
        state = replace(state, own_logged=MappingProxyType(own_logged))
        if isinstance(ev, RolloutGroupCompleted):
            own = {**state.own, ev.event_id: Record(seen.seq, ev, seen.subject, seen.time_ns)}
            state = replace(state, own=MappingProxyType(own))
        return state
    if isinstance(ev, RewardSummary):
        key = (ev.policy, ev.prompt_id)
        done = max(state.peer_done.get(key, -1), ev.policy_version)
        state = replace(state, peer_done=MappingProxyType({**state.peer_done, key: done}))
    if state.peer_kind == ev.KIND:
        queued = (
            *state.pending.get(ev.prompt_id, ()),
            Record(seen.seq, ev, seen.subject, seen.time_ns),
        )
        state = replace(state, pending=MappingProxyType({**state.pending, ev.prompt_id: queued}))
    return state


def _pending(state: PolicyState, ev: PeerEvent) -> bool:
    """Is an event of this id already waiting to be consumed?"""
    if ev.event_id in state.own:
        return True
    return any(s.event.event_id == ev.event_id for s in state.pending.get(ev.prompt_id, ()))


def rollout_id(run: str, policy: str, step: int, index: int, prompt_id: str) -> str:
    """The deterministic id of a policy's group for the `index`-th prompt of `step`."""
    return event_id("rollout", run, policy, step, index, prompt_id)


def peers_ready(
    state: PolicyState, peers: Sequence[str], prompt_ids: Sequence[str], min_version: int
) -> bool:
    """Every peer has finished every prompt, at a version of at least `min_version`.

    A peer that has not finished a prompt at all is not ready for it, whatever the bound: early
    in a run `min_version` (the step minus the staleness bound) is negative, and counting a
    missing prompt as version -1 let the first steps go on without peers that had not sampled
    yet, so what a run shared depended on start-up timing. The wait stays bounded by the caller
    (`probes.sharing.wait_for_peers_s`), so a peer that never comes costs time, not the run.
    """
    for peer in peers:
        for pid in prompt_ids:
            done = state.peer_done.get((peer, pid))
            if done is None or done < min_version:
                return False
    return True


def peers_to_wait_for(
    peer_steps: Mapping[str, int],
    peers: Sequence[str],
    version: int,
    *,
    steps: int,
    max_staleness: int,
) -> list[str]:
    """The peers an asynchronous learner at `version` waits for (bounded) before its step.

    `peer_steps` holds each peer's newest learner step (a peer not in it has taken none: it is
    at version 0, not yet started or starting). A peer's rollout actors sample batch `k` once
    its learner is at `k - max_staleness` or later (`run.max_staleness`), so a peer at `at`
    has sampled, or is sampling, every batch up to `at + max_staleness`: it is waited for when
    this learner's batch is among them. A peer further behind could only send this batch after
    its learner moves (lockstep's idle time): it is not waited for, and what it sends later
    stays pending for a later step on the same prompt. A finished peer samples nothing more.
    """
    out = []
    for peer in peers:
        at = peer_steps.get(peer, 0)
        if at >= steps or at + max_staleness < version:
            continue
        out.append(peer)
    return out


def take_peer_events(state: PolicyState, prompt_ids: Sequence[str]) -> list[Record[PeerEvent]]:
    """The pending peer events for these prompts, in sequence order (what a step consumes)."""
    wanted = set(prompt_ids)
    out = [s for pid, queued in state.pending.items() if pid in wanted for s in queued]
    return sorted(out, key=lambda s: s.seq)


def assemble(
    own: Sequence[Record[RolloutGroupCompleted]], peers: Sequence[Record[PeerEvent]]
) -> list[PromptInputs]:
    """The probe's inputs: one entry per own group (in step order), peer events by prompt.

    A peer event goes to the first own group on its prompt; `peers` must be in sequence order.
    """
    by_prompt: dict[str, list[Record[PeerEvent]]] = {}
    for s in peers:
        by_prompt.setdefault(s.event.prompt_id, []).append(s)
    out: list[PromptInputs] = []
    seen_prompts: set[str] = set()
    for group in own:
        pid = group.event.prompt_id
        mine = by_prompt.get(pid, []) if pid not in seen_prompts else []
        seen_prompts.add(pid)
        out.append(
            PromptInputs(
                own=group,
                peer_rollouts=[s for s in mine if isinstance(s.event, RolloutGroupCompleted)],  # type: ignore[misc]
                peer_rewards=[s for s in mine if isinstance(s.event, RewardSummary)],  # type: ignore[misc]
                peer_successes=[s for s in mine if isinstance(s.event, SuccessVerified)],  # type: ignore[misc]
            )
        )
    return out


def split_consumed(
    policy: str, records: Sequence[Record[Event]]
) -> tuple[list[Record[RolloutGroupCompleted]], list[Record[PeerEvent]]]:
    """Replay's side of `assemble`: consumed events back into own groups and peer events."""
    own: list[Record[RolloutGroupCompleted]] = []
    peers: list[Record[PeerEvent]] = []
    for s in records:
        ev = s.event
        if isinstance(ev, RolloutGroupCompleted) and ev.policy == policy:
            own.append(Record(s.seq, ev, s.subject, s.time_ns))
        elif isinstance(ev, RolloutGroupCompleted | RewardSummary | SuccessVerified):
            peers.append(Record(s.seq, ev, s.subject, s.time_ns))
    return own, sorted(peers, key=lambda s: s.seq)


def experience_events(groups: list[RolloutGroupCompleted]) -> list[Event]:
    """For each group: the group, one SuccessVerified per verified completion, the summary.

    The lockstep actor and the rollout actors append the same events with the same ids: the
    summary comes last, so a peer that has seen it has seen the rest (one writer, in order).
    """
    import numpy as np

    out: list[Event] = []
    for g in groups:
        out.append(g)
        key = g.event_id.split("/", 3)[3]  # batch/index/prompt: unique per group
        for i, c in enumerate(g.completions):
            if c.success:
                out.append(
                    SuccessVerified(
                        run=g.run,
                        source=g.source,
                        event_id=event_id("success", g.run, g.source, key, i),
                        time_ns=g.time_ns,
                        policy=g.policy,
                        policy_version=g.policy_version,
                        prompt_id=g.prompt_id,
                        prompt_text=g.prompt_text,
                        completion_index=i,
                        completion=c,
                        tokenizer_fingerprint=g.tokenizer_fingerprint,
                    )
                )
        out.append(
            RewardSummary(
                run=g.run,
                source=g.source,
                event_id=event_id("reward", g.run, g.source, key),
                time_ns=g.time_ns,
                policy=g.policy,
                policy_version=g.policy_version,
                prompt_id=g.prompt_id,
                rewards=pack_f32(g.rewards_array()),
                success_rate=float(np.mean([c.success for c in g.completions])),
            )
        )
    return out
