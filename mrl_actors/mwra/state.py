"""MWRA's view of a run: a pure fold over the log, so replaying the log rebuilds it exactly.

Folded events and what each contributes:

- `PolicyRegistered`: the policies that need slots.
- `NodeJoined` / `NodeHeartbeat` / `ThroughputReported`: membership and liveness (last seen);
  `NodeLeft` removes a node.
- `ThroughputReported` (role rollout): samples/s of one rollout slot of a policy while it
  generates (each rollout actor reports the batches it sampled), a running average per node.
- `LearnerStepTimed` / `LearnerStepCompleted`: the weight version (the decision boundary), the
  learner's wait and compute seconds, samples per step, backlog and staleness.
- `SlotsAssigned`: the assignment in force and its epoch (an older or equal epoch is ignored).
- `SlotMoveMeasured`: the measured cost of moves, the last few kept for the cost gate.

Only registered policies get slots: reports naming any other policy are not folded. An event
whose payload names a policy or node other than its subject's source (`events.identity_error`)
is not folded either (every log read has dead-lettered it already; the fold refuses it too, for
events given to it directly). Liveness is taken only from a node's own events (`NodeJoined`,
`NodeHeartbeat` on its own subject): `ThroughputReported.node` is written by a policy and
cannot be bound to the node it names. Time comes only from the log and from the `now` the rule
is asked at: the time the server stored an event (`at_ns`, a record's `time_ns`) where the
fold is given it, else the event's own `time_ns`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

from mrl_actors import events as ev
from mrl_actors.events import SlotKey

Role = Literal["rollout", "learner"]
Owner = tuple[str, Role]  # (policy, role)

MOVE_COSTS_KEPT = 16
# A node claiming more slots than this is not believed (its event is not folded): the rule lists
# every slot of every live node, so one absurd count would stall the allocator.
MAX_NODE_SLOTS = 4096


@dataclass(frozen=True, slots=True)
class NodeView:
    slots: int
    last_seen_ns: int


@dataclass(frozen=True, slots=True)
class PolicyView:
    version: int = 0  # learner steps taken
    rollout_sps_per_slot: float = 0.0  # samples/s one rollout slot produces (0: not measured)
    samples_per_step: float = 0.0  # completions one learner step consumes (0: not measured)
    compute_s: float = 0.0  # seconds a learner step computes (0: not measured)
    wait_s: float = 0.0  # seconds the learner waited for input, running average
    pending_groups: int = 0  # unconsumed groups
    staleness: float = 0.0


@dataclass(frozen=True, slots=True)
class MwraState:
    run: str = ""
    epoch: int = 0
    policies: dict[str, PolicyView] = field(default_factory=dict)
    nodes: dict[str, NodeView] = field(default_factory=dict)
    assignment: dict[SlotKey, Owner] = field(default_factory=dict)
    # Slots moved at an epoch and still loading (no `SlotMoveMeasured` for that epoch yet).
    loading: dict[SlotKey, int] = field(default_factory=dict)
    # Derived from `assignment` less `loading`: working slots per (node, policy, role), the
    # denominator of a node's throughput report.
    working: dict[tuple[str, str, Role], int] = field(default_factory=dict)
    # Per (node, policy): samples/s per working rollout slot (running average) and those slots;
    # a policy's rate is their slot-weighted mean, kept as running sums per policy.
    node_rates: dict[tuple[str, str], tuple[float, int]] = field(default_factory=dict)
    rate_sums: dict[str, tuple[float, int]] = field(default_factory=dict)
    # Per (node, policy): the total weight of the reports in its running average (1.0 once it
    # spans many windows), so that the first reports are averaged, not the first one kept.
    node_weights: dict[tuple[str, str], float] = field(default_factory=dict)
    move_costs: tuple[float, ...] = ()  # measured seconds per move, oldest first
    decided_versions: dict[str, int] = field(default_factory=dict)  # versions at the last epoch
    assigned_ns: int = 0  # when the assignment in force was made (a node it names may not
    # have joined yet: the rule waits for it that long, as for a silent one)
    left: frozenset[str] = frozenset()  # nodes that said they left (not waited for)


def _ema(old: float, new: float, alpha: float) -> float:
    return new if old <= 0.0 else (1.0 - alpha) * old + alpha * new


def _seen(state: MwraState, node: str, time_ns: int) -> MwraState:
    view = state.nodes.get(node)
    if view is None or time_ns <= view.last_seen_ns:
        return state
    nodes = dict(state.nodes)
    nodes[node] = replace(view, last_seen_ns=time_ns)
    return replace(state, nodes=nodes)


def _policy(state: MwraState, name: str, **changes: float | int) -> MwraState:
    policies = dict(state.policies)
    policies[name] = replace(policies.get(name, PolicyView()), **changes)  # type: ignore[arg-type]
    return replace(state, policies=policies)


def slots_of(state: MwraState, node: str, policy: str, role: Role) -> int:
    """How many of `node`'s slots work for (policy, role) now: assigned and done loading."""
    return state.working.get((node, policy, role), 0)


def _rollout_rate(
    state: MwraState, node: str, policy: str, sps: float, window_s: float, rate_window_s: float
) -> MwraState:
    """Fold one rollout slot's report into its node's rate per slot, and the policy's
    slot-weighted mean over nodes.

    Each node's rate is a running average over about `rate_window_s` of report time, so that
    noisy reports do not flip decisions; the policy's rate is the slot-weighted mean over nodes.
    The average is bias-corrected: until it spans `rate_window_s`, every report so far weighs
    about the same (a plain running average started at the first report would keep that one
    report's noise for minutes).
    """
    decay = math.exp(-max(window_s, 1e-3) / rate_window_s)
    n = slots_of(state, node, policy, "rollout")
    # A report that is not a finite positive rate (a node's bug, not a fact) is not folded: one
    # NaN would poison the running sums for the rest of the run.
    if n <= 0 or not (math.isfinite(sps) and sps > 0 and math.isfinite(window_s)):
        return state
    key = (node, policy)
    old_rate, old_n = state.node_rates.get(key, (0.0, 0))
    weight = decay * state.node_weights.get(key, 0.0) + (1.0 - decay)
    rate = old_rate + (1.0 - decay) / weight * (sps - old_rate)
    total, slots = state.rate_sums.get(policy, (0.0, 0))
    total, slots = total - old_rate * old_n + rate * n, slots - old_n + n
    node_rates = dict(state.node_rates)
    node_rates[key] = (rate, n)
    node_weights = dict(state.node_weights)
    node_weights[key] = weight
    rate_sums = dict(state.rate_sums)
    rate_sums[policy] = (total, slots)
    state = replace(state, node_rates=node_rates, node_weights=node_weights, rate_sums=rate_sums)
    return _policy(state, policy, rollout_sps_per_slot=total / slots if slots else 0.0)


def _reweigh_rates(state: MwraState) -> MwraState:
    """After the working slots changed: each node's rate counts with the slots it has now.

    A node left with no working slot of a policy no longer reports for it, so its average would
    stay frozen in the policy's mean for the rest of the run: it leaves the mean (and starts
    afresh if slots come back). A policy left with no reporting node keeps its last rate.
    """
    node_rates: dict[tuple[str, str], tuple[float, int]] = {}
    for (node, policy), (rate, _) in state.node_rates.items():
        n = slots_of(state, node, policy, "rollout")
        if n > 0:
            node_rates[(node, policy)] = (rate, n)
    if node_rates == state.node_rates:
        return state
    sums: dict[str, tuple[float, int]] = {}
    for (_, policy), (rate, n) in node_rates.items():
        total, slots = sums.get(policy, (0.0, 0))
        sums[policy] = (total + rate * n, slots + n)
    node_weights = {k: w for k, w in state.node_weights.items() if k in node_rates}
    state = replace(state, node_rates=node_rates, node_weights=node_weights, rate_sums=sums)
    for policy, (total, slots) in sums.items():
        if policy in state.policies:
            state = _policy(state, policy, rollout_sps_per_slot=total / slots)
    return state


def _working(
    assignment: dict[SlotKey, Owner], loading: dict[SlotKey, int]
) -> dict[tuple[str, str, Role], int]:
    working: dict[tuple[str, str, Role], int] = {}
    for (node, slot), (policy, role) in assignment.items():
        if (node, slot) not in loading:
            key = (node, policy, role)
            working[key] = working.get(key, 0) + 1
    return working


def evolve(
    state: MwraState,
    event: ev.Event,
    *,
    alpha: float = 0.3,
    rate_window_s: float = 120.0,
    at_ns: int = 0,
) -> MwraState:
    """The state after `event`; an event MWRA does not read returns the same object.

    `alpha` weighs a new learner timing in its running average; `rate_window_s` is the time
    constant of the per-node throughput averages (both from `MwraConfig`). `at_ns`: when the
    server stored the event (its record's `time_ns`), the time liveness is judged by; 0 for an
    event given without its record (the simulator), which then counts at its own `time_ns`.
    """
    if ev.identity_error(event) is not None:  # a payload naming another writer
        return state
    if not state.run:
        state = replace(state, run=event.run)
    t = at_ns or event.time_ns
    match event:
        case ev.PolicyRegistered(policy=name):
            if name not in state.policies:
                state = _policy(state, name)
        case ev.NodeJoined(slots=slots) | ev.NodeHeartbeat(slots=slots) if not (
            0 <= slots <= MAX_NODE_SLOTS
        ):
            pass
        case ev.NodeJoined(node=node, slots=slots):
            nodes = dict(state.nodes)
            nodes[node] = NodeView(slots=slots, last_seen_ns=t)
            state = replace(state, nodes=nodes)
        case ev.NodeHeartbeat(node=node, slots=slots):
            # A heartbeat also introduces a node whose `NodeJoined` this reader never saw.
            view = state.nodes.get(node)
            if view is None or view.slots != slots:
                nodes = dict(state.nodes)
                nodes[node] = NodeView(
                    slots=slots, last_seen_ns=max(t, view.last_seen_ns if view else t)
                )
                state = replace(state, nodes=nodes)
            state = _seen(state, node, t)
        case ev.NodeLeft(node=node):
            if node in state.nodes:
                nodes = dict(state.nodes)
                del nodes[node]
                state = replace(state, nodes=nodes)
            if node not in state.left:
                state = replace(state, left=state.left | {node})
        case ev.ThroughputReported(node=node, policy=name, role=role):
            if role == "rollout" and name in state.policies:
                sps = event.samples_per_s
                state = _rollout_rate(state, node, name, sps, event.window_s, rate_window_s)
        case ev.LearnerStepTimed(policy=name) if name in state.policies:
            old_p = state.policies.get(name, PolicyView())
            state = _policy(
                state,
                name,
                version=max(old_p.version, event.step),
                compute_s=_ema(old_p.compute_s, event.compute_s, alpha),
                wait_s=(1.0 - alpha) * old_p.wait_s + alpha * event.wait_s,
                samples_per_step=_ema(old_p.samples_per_step, float(event.samples), alpha),
                pending_groups=event.pending_groups,
                staleness=event.staleness,
            )
        case ev.LearnerStepCompleted(policy=name, step=step) if name in state.policies:
            old_p = state.policies.get(name, PolicyView())
            pending = max(0, old_p.pending_groups - len(event.consumed))
            state = _policy(state, name, version=max(old_p.version, step), pending_groups=pending)
        case ev.SlotsAssigned(epoch=epoch) if epoch > state.epoch:
            assignment: dict[SlotKey, Owner] = {
                (a.node, a.slot): (a.policy, a.role) for a in event.assignments
            }
            # A slot that changed owner loads the new policy until its move is measured.
            loading = {
                slot: state.loading.get(slot, epoch) if state.assignment.get(slot) == own else epoch
                for slot, own in assignment.items()
                if slot in state.assignment
                and (state.assignment[slot] != own or slot in state.loading)
            }
            decided = {name: p.version for name, p in state.policies.items()}
            state = replace(
                state,
                epoch=epoch,
                assignment=assignment,
                loading=loading,
                working=_working(assignment, loading),
                decided_versions=decided,
                assigned_ns=event.time_ns,
            )
            state = _reweigh_rates(state)
        case ev.SlotMoveMeasured(node=node, slot=slot, epoch=epoch, seconds=seconds):
            costs = (*state.move_costs, max(0.0, seconds))[-MOVE_COSTS_KEPT:]
            state = replace(state, move_costs=costs)
            if state.loading.get((node, slot)) == epoch:
                loading = dict(state.loading)
                del loading[(node, slot)]
                working = dict(state.working)
                policy, role = state.assignment[(node, slot)]
                working[(node, policy, role)] = working.get((node, policy, role), 0) + 1
                state = replace(state, loading=loading, working=working)
                state = _reweigh_rates(state)
        case _:
            pass
    return state


def fold(events: list[ev.Event], *, alpha: float = 0.3, rate_window_s: float = 120.0) -> MwraState:
    state = MwraState()
    for event in events:
        state = evolve(state, event, alpha=alpha, rate_window_s=rate_window_s)
    return state
