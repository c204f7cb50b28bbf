"""MWRA's rule: from the folded state and the time, the next `SlotsAssigned`, or none.

`decide` is pure and deterministic: the same state and `now` give the same event, byte for byte,
which is what lets a replay of the log check every decision (`mwra.replay`).

Two kinds of change, in this order:

1. Mandatory, at any time: slots of dead or departed nodes leave the assignment (a node is dead
   when silent for `dead_after` liveness intervals), each policy gets its learner slots, a policy
   with no rollout slot gets one (a starved learner), and free slots go where the target wants them.
   None of these evicts useful work, so no gate applies.
2. Rebalance, only at a weight-version boundary (some learner stepped since the last epoch):
   move at most `max_move_fraction` of the rollout slots toward the target allocation (a longer
   way in equal steps), and only when the gain of reaching the whole target beats the hysteresis
   (a dead band around the target), also with the rates it is planned on taken `uncertainty_z`
   standard errors against the move (from `memory`: reports in the window and their spread),
   and, with `cost_gate`, this decision's gain beats the measured cost of its moves (mean of the
   last `cost_window` `SlotMoveMeasured`). A move that would reverse one made on the same
   membership less than `hold_intervals` decision intervals ago needs `reverse_margin` more: the
   rule keeps its decisions.

The model: a rollout slot of policy p yields `c_p` learner steps/s (samples/s per slot over
samples per step); the learner caps p at `L_p = 1/compute_s` steps/s. With `n_p` rollout slots,
p steps at `s_p = min(n_p c_p, L_p)`. The objective is the balanced rate
`U = sum_p w_p * min_p (s_p / w_p)`: the step rate all policies reach together in the asked ratio.
"""

from __future__ import annotations

import math
from collections import Counter

from mrl_actors import events as ev
from mrl_actors.events import SlotKey
from mrl_actors.mwra.config import MwraConfig
from mrl_actors.mwra.memory import Memory
from mrl_actors.mwra.state import MwraState, Owner

SOURCE = "mwra"


def live_nodes(state: MwraState, now_ns: int, config: MwraConfig) -> list[str]:
    """Nodes heard from within `dead_after` liveness intervals, sorted by name."""
    limit = config.dead_after * config.liveness_interval_s * 1e9
    return sorted(n for n, v in state.nodes.items() if now_ns - v.last_seen_ns <= limit)


def awaited_slots(state: MwraState, now_ns: int, config: MwraConfig) -> list[SlotKey]:
    """Slots the assignment in force gives to nodes never heard from, while they may still
    join: as long as a silent node would count as live (the spec's `[placement]` names nodes
    that start at about the same time as the first one)."""
    limit = config.dead_after * config.liveness_interval_s * 1e9
    if now_ns - state.assigned_ns > limit:
        return []
    return sorted(s for s in state.assignment if s[0] not in state.nodes and s[0] not in state.left)


def rates(state: MwraState) -> tuple[dict[str, float], dict[str, float]]:
    """Per-policy steps/s per rollout slot (`c`) and learner cap (`L`, inf when unmeasured).

    Each factor (samples/s per slot, samples per step) a policy has not measured yet borrows the
    mean of the policies that have (1.0 when none has): it must still get slots to be measured.
    """
    views = state.policies

    def filled(values: dict[str, float]) -> dict[str, float]:
        known = {k: v for k, v in values.items() if v > 0}
        prior = sum(known.values()) / len(known) if known else 1.0
        return {k: known.get(k, prior) for k in values}

    sps = filled({name: p.rollout_sps_per_slot for name, p in views.items()})
    per_step = filled({name: p.samples_per_step for name, p in views.items()})
    c = {name: sps[name] / per_step[name] for name in views}
    cap = {name: (1.0 / p.compute_s if p.compute_s > 0 else math.inf) for name, p in views.items()}
    return c, cap


def balanced_rate(
    counts: dict[str, int], c: dict[str, float], cap: dict[str, float], config: MwraConfig
) -> float:
    """`U`: the step rate the policies reach together in the asked ratio."""
    if not counts:
        return 0.0
    t = min(min(counts[p] * c[p], cap[p]) / config.weight(p) for p in counts)
    return t * sum(config.weight(p) for p in counts)


def target_counts(
    total: int, c: dict[str, float], cap: dict[str, float], config: MwraConfig
) -> dict[str, int]:
    """Integer rollout slots per policy that maximise `U` (water-filling, largest remainders)."""
    names = sorted(c)
    if not names or total <= 0:
        return dict.fromkeys(names, 0)
    need = {p: config.weight(p) / c[p] for p in names}  # slots per unit of balanced rate
    t = min(total / sum(need.values()), min(cap[p] / config.weight(p) for p in names))
    share = {p: t * need[p] for p in names}
    left = total - sum(share.values())
    # Slots beyond the balanced point go to policies whose learner can still use them.
    while left > 1e-9:
        room = {p: cap[p] / c[p] - share[p] for p in names if cap[p] / c[p] - share[p] > 1e-9}
        if not room:  # every learner is saturated: spread what is left by need
            weight = sum(need.values())
            for p in names:
                share[p] += left * need[p] / weight
            break
        weight = sum(need[p] for p in room)
        given = 0.0
        for p, space in room.items():
            add = min(left * need[p] / weight, space)
            share[p] += add
            given += add
        left -= given
    counts = {p: math.floor(share[p] + 1e-9) for p in names}
    order = sorted(names, key=lambda p: (-(share[p] - counts[p]), p))
    for p in order[: max(0, total - sum(counts.values()))]:
        counts[p] += 1
    # Every policy keeps at least one rollout slot when there are enough: a learner with no
    # producer never reports, so it could never win slots back.
    for p in names:
        if counts[p] == 0 and total >= len(names):
            donor = max(names, key=lambda q: (counts[q], q))
            counts[donor] -= 1
            counts[p] = 1
    return counts


def _move_cost_s(state: MwraState, config: MwraConfig) -> float:
    recent = state.move_costs[-config.cost_window :]
    return sum(recent) / len(recent) if recent else config.default_move_s


def decide(
    state: MwraState, now_ns: int, config: MwraConfig, memory: Memory | None = None
) -> ev.SlotsAssigned | None:
    """The next assignment, or None when nothing is worth changing now.

    `memory` (`mwra.memory.remember` folded over the same events) gives the recent moves and the
    rates' uncertainty; without it neither the hold nor the uncertainty check applies.
    """
    policies = sorted(state.policies)
    if not policies:
        return None
    live = live_nodes(state, now_ns, config)
    awaited = awaited_slots(state, now_ns, config)
    live += sorted({n for n, _ in awaited})
    live_slots = [(n, i) for n in live if n in state.nodes for i in range(state.nodes[n].slots)]
    live_slots += awaited
    live_set = set(live_slots)
    assign: dict[SlotKey, Owner] = {
        s: o for s, o in state.assignment.items() if s in live_set and o[0] in state.policies
    }
    reasons: list[str] = []
    dropped = sorted({n for (n, _) in state.assignment} - set(live))
    if dropped:
        reasons.append("lost " + ",".join(dropped))
    elif len(assign) != len(state.assignment):
        reasons.append("dropped slots")
    free = [s for s in live_slots if s not in assign]

    # Learners first: a policy short of learner slots takes free ones, else rollout slots.
    # A learner of several slots (ranks of one process group) is one unit on one node.
    for p in policies:
        if config.learners(p) > 1:
            _place_learner_unit(p, config.learners(p), assign, free, live_slots, reasons)
            continue
        have = sum(1 for o in assign.values() if o == (p, "learner"))
        if config.learners(p) > have:
            reasons.append(f"learner {p}+{config.learners(p) - have}")
        for _ in range(config.learners(p) - have):
            if free:
                slot = free.pop(0)
            else:
                roll = Counter(o[0] for o in assign.values() if o[1] == "rollout")
                if not roll:
                    break
                donor = max(roll, key=lambda q: (roll[q], q))
                slot = max(s for s, o in assign.items() if o == (donor, "rollout"))
            assign[slot] = (p, "learner")

    c, cap = rates(state)

    def counts_of(a: dict[SlotKey, Owner]) -> dict[str, int]:
        n = dict.fromkeys(policies, 0)
        for pol, role in a.values():
            if role == "rollout":
                n[pol] += 1
        return n

    # Free slots cost nothing to fill: give each to the policy furthest below its target.
    if free:
        total = sum(counts_of(assign).values()) + len(free)
        target = target_counts(total, c, cap, config)
        for slot in free:
            n = counts_of(assign)
            p = max(policies, key=lambda q: (target[q] - n[q], -n[q], q))
            assign[slot] = (p, "rollout")
        reasons.append(f"filled {len(free)}")

    # A starved learner (no rollout slot) takes one from the policy with the most.
    n = counts_of(assign)
    for p in policies:
        if n[p] == 0 and sum(n.values()) >= len(policies):
            donor = max(policies, key=lambda q: (n[q], q))
            slot = max(s for s, o in assign.items() if o == (donor, "rollout"))
            assign[slot] = (p, "rollout")
            n = counts_of(assign)
            reasons.append(f"starved {p}")

    boundary = any(
        view.version > state.decided_versions.get(name, 0) for name, view in state.policies.items()
    )
    if boundary:
        moved, why = _rebalance(state, assign, c, cap, config, memory, now_ns)
        if moved:
            assign = moved
            reasons.append(why)
    if assign == state.assignment:
        # nothing would change (every change above gives a reason, but not every reason a
        # change: with no live node a learner short of slots gets none, and a decision saying
        # so anew on every event, its own included, would flood the log)
        return None
    epoch = state.epoch + 1
    return ev.SlotsAssigned(
        run=state.run,
        source=SOURCE,
        event_id=ev.event_id("slots", state.run, SOURCE, epoch),
        time_ns=now_ns,
        epoch=epoch,
        assignments=[
            ev.SlotAssignment(node=node, slot=i, policy=p, role=role)
            for (node, i), (p, role) in sorted(assign.items())
        ],
        reason="; ".join(reasons),
    )


def _rebalance(
    state: MwraState,
    assign: dict[SlotKey, Owner],
    c: dict[str, float],
    cap: dict[str, float],
    config: MwraConfig,
    memory: Memory | None = None,
    now_ns: int = 0,
) -> tuple[dict[SlotKey, Owner] | None, str]:
    """At most `max_moves` rollout slots toward the target, if the gain clears both gates."""
    policies = sorted(state.policies)
    n = dict.fromkeys(policies, 0)
    for pol, role in assign.values():
        if role == "rollout":
            n[pol] += 1
    total = sum(n.values())
    if total == 0:
        return None, ""
    target = target_counts(total, c, cap, config)
    budget = max(1, int(config.max_move_fraction * total))
    # A rebalance that needs several decisions spreads its moves evenly over them, so that the
    # last one is not a remainder too small to clear the hysteresis band.
    distance = sum(max(0, target[p] - n[p]) for p in policies)
    if distance > budget:
        budget = -(-distance // -(-distance // budget))
    after = dict(n)
    moves: list[tuple[str, str]] = []
    while len(moves) < budget:
        short = [p for p in policies if target[p] > after[p]]
        extra = [p for p in policies if after[p] > target[p]]
        if not short or not extra:
            break
        to = max(short, key=lambda p: ((target[p] - after[p]) / max(target[p], 1), p))
        frm = max(extra, key=lambda p: ((after[p] - target[p]) / max(target[p], 1), p))
        after[frm] -= 1
        after[to] += 1
        moves.append((frm, to))
    if not moves:
        return None, ""
    before_u = balanced_rate(n, c, cap, config)
    after_u = balanced_rate(after, c, cap, config)
    gain = after_u - before_u
    # Hysteresis is a dead band around the target, not a minimum step: whether to move at all is
    # judged on the gain of reaching the whole target, and once moving, the rule goes all the
    # way (in steps of at most `max_move_fraction`). Judging each bounded step on its own gain
    # would stop short of the target by up to the band, for as long as the rates hold.
    full_gain = balanced_rate(target, c, cap, config) - before_u
    need = config.hysteresis
    if memory is not None:
        # The gain must hold when the rates are `uncertainty_z` standard errors against the move:
        # the policies it feeds faster than measured, those it starves slower.
        worst = against(memory, c, after, n, config)
        if worst is None:
            return None, ""
        w_before = balanced_rate(n, worst, cap, config)
        w_gain = balanced_rate(after, worst, cap, config) - w_before
        w_full = balanced_rate(target, worst, cap, config) - w_before
        if w_gain <= 0 or (w_before > 0 and w_full / w_before < need):
            return None, ""
        if reverses(memory, state, assign, after, n, now_ns, config):
            need += config.reverse_margin
    if gain <= 0 or (before_u > 0 and full_gain / before_u < need):
        return None, ""
    if config.cost_gate and before_u > 0:
        # A moving slot produces nothing for the measured move time: value it at the average
        # balanced rate per slot. Gain counts over the horizon.
        slot_rate = before_u / max(total, 1)
        cost = len(moves) * _move_cost_s(state, config) * slot_rate
        if gain * config.gain_horizon_s <= cost:
            return None, ""
    moved = dict(assign)
    for frm, to in moves:
        slot = max(s for s, o in moved.items() if o == (frm, "rollout"))
        moved[slot] = (to, "rollout")
    summary = ",".join(f"{p}:{n[p]}->{after[p]}" for p in policies if after[p] != n[p])
    return moved, f"rebalance {summary} gain {gain / before_u if before_u else 1.0:.3f}"


def against(
    memory: Memory,
    c: dict[str, float],
    after: dict[str, int],
    before: dict[str, int],
    config: MwraConfig,
) -> dict[str, float] | None:
    """The rates `uncertainty_z` relative standard errors against a move from `before` to
    `after`: higher for the policies that gain slots (they needed fewer), lower for those that
    give slots up. None when a policy the move touches has fewer than two reports in the window
    (its rate is a guess: nothing is moved for it)."""
    z = config.uncertainty_z
    if z <= 0:
        return dict(c)
    out = dict(c)
    for p, rate in c.items():
        d = after.get(p, 0) - before.get(p, 0)
        if d == 0:
            continue
        err = memory.rates[p].rel_error() if p in memory.rates else math.inf
        if not math.isfinite(err):
            return None
        out[p] = rate * (1.0 + z * err) if d > 0 else rate * max(1e-9, 1.0 - z * err)
    return out


def intervals_since(
    versions: dict[str, int], state: MwraState, since_ns: int, now_ns: int, config: MwraConfig
) -> float:
    """Decision intervals since a move: the fewest learner steps any policy took since, and no
    more than the liveness intervals (node reports) that passed."""
    steps = min(
        (view.version - versions.get(name, 0) for name, view in state.policies.items()), default=0
    )
    return min(float(steps), (now_ns - since_ns) / 1e9 / config.liveness_interval_s)


def reverses(
    memory: Memory,
    state: MwraState,
    assign: dict[SlotKey, Owner],
    after: dict[str, int],
    before: dict[str, int],
    now_ns: int,
    config: MwraConfig,
) -> bool:
    """Would going from `before` to `after` rollout counts undo a move made on this membership
    within the last `hold_intervals` decision intervals?"""
    members = frozenset(node for node, _ in assign)
    for move in reversed(memory.moves):
        if move.members != members:
            continue
        if intervals_since(move.versions, state, move.time_ns, now_ns, config) >= (
            config.hold_intervals
        ):
            return False
        if any((after[p] - before[p]) * d < 0 for p, d in move.delta.items() if p in after):
            return True
    return False


def _place_learner_unit(
    p: str,
    need: int,
    assign: dict[SlotKey, Owner],
    free: list[SlotKey],
    live_slots: list[SlotKey],
    reasons: list[str],
) -> None:
    """Give `p` `need` learner slots on one node, in place; kept where they already are.

    A unit broken by a lost node (or never placed) is placed again whole: on the node that can
    hold it with the fewest rollout slots taken (free slots first), ties to the lowest name. A
    policy no node can hold keeps what it has and the reason says so.
    """
    mine = sorted(s for s, o in assign.items() if o == (p, "learner"))
    if len(mine) == need and len({n for n, _ in mine}) == 1:
        return
    for s in mine:
        del assign[s]
        free.append(s)
    free.sort()
    best: tuple[int, str] | None = None
    for node in sorted({n for n, _ in live_slots}):
        spare = [s for s in free if s[0] == node]
        rollout = [s for s, o in assign.items() if s[0] == node and o[1] == "rollout"]
        if len(spare) + len(rollout) >= need:
            cost = max(0, need - len(spare))
            if best is None or cost < best[0]:
                best = (cost, node)
    if best is None:
        for s in mine:  # nowhere to put the whole unit: it stays as it was
            free.remove(s)
            assign[s] = (p, "learner")
        reasons.append(f"learner {p} unplaced ({need} slots on one node)")
        return
    node = best[1]
    taken = [s for s in free if s[0] == node][:need]
    for s in taken:
        free.remove(s)
    taken += sorted(
        (s for s, o in assign.items() if s[0] == node and o[1] == "rollout"), reverse=True
    )[: need - len(taken)]
    for s in taken:
        assign[s] = (p, "learner")
    reasons.append(f"learner {p}={node}x{need}")
