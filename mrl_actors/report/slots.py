"""The slot table of a run, from its log alone: which node's slot hosted which policy's actor.

Every view of a run (the `mrl run` console, `report.html`, `summary.json`) shows it in every
mode. A placed run (a spec `[placement]`, or the MWRA allocator: on several hosts, or on one
machine's CPU slots) has `SlotsAssigned` events: the table is the newest epoch's assignments,
with who made it (`placement` for the spec's epoch 1, `mwra` for the allocator) and how many
decisions there were. A run without any assignment hosts each policy on its node's first slot:
the table says so, one row per policy and node (from its `ThroughputReported`), with the actors
its mode runs there (lockstep: one actor that also samples; async: the learner and
`rollout_replicas` rollout actors).
"""

from __future__ import annotations

from typing import Any

from mrl_actors.events import Event, NodeJoined, SlotsAssigned, ThroughputReported


class SlotFold:
    """A pure fold of the events that say where actors ran (`fold`), and its view (`view`)."""

    def __init__(self) -> None:
        self.epoch = 0
        self.source = ""
        self.decisions = 0
        self.assignments: list[tuple[str, int, str, str]] = []  # (node, slot, policy, role)
        self.kinds: dict[str, str] = {}  # node -> "cpu" or "cuda" (its slots' kind)
        self.hosted: dict[tuple[str, str], None] = {}  # (node, policy) in first-seen order

    def fold(self, ev: Event) -> None:
        """Fold one event whose identity the caller checked (`events.identity_error`)."""
        if isinstance(ev, SlotsAssigned) and ev.epoch > self.epoch:
            self.epoch, self.source = ev.epoch, ev.source
            self.decisions += 1
            self.assignments = [(a.node, a.slot, a.policy, a.role) for a in ev.assignments]
        elif isinstance(ev, NodeJoined) and ev.node == ev.source:
            devices = list(ev.devices)
            self.kinds[ev.node] = "cuda" if devices and devices[0].startswith("cuda") else "cpu"
        elif isinstance(ev, ThroughputReported) and ev.policy == ev.source:
            self.hosted.setdefault((ev.node, ev.policy), None)

    def view(self, mode: str, replicas: int, policies: list[str]) -> dict[str, Any]:
        """JSON-ready: `placed`, `epoch`, `source`, `decisions`, and `assignments` rows
        (`node`, `slot` as "cpu:N" / "cuda:N", `policy`, `role`)."""
        if self.assignments:
            rows = [
                {"node": n, "slot": f"{self.kinds.get(n, 'cpu')}:{s}", "policy": p, "role": r}
                for n, s, p, r in sorted(self.assignments, key=lambda a: (a[0], a[1], a[2]))
            ]
        else:
            actors = "learner (samples too)" if mode == "lockstep" else "learner"
            if mode != "lockstep":
                actors += f" + {replicas} rollout actor(s)"
            seen = list(self.hosted) or [("local", p) for p in policies]
            rows = [
                {"node": n, "slot": f"{self.kinds.get(n, 'cpu')}:0", "policy": p, "role": actors}
                for n, p in sorted(seen)
            ]
        return {
            "placed": bool(self.assignments),
            "epoch": self.epoch,
            "source": self.source,
            "decisions": self.decisions,
            "assignments": rows,
        }


def slot_title(slots: dict[str, Any]) -> str:
    """The table's heading: the epoch and who assigned it, or that nothing was assigned."""
    if not slots.get("placed"):
        return "Slots (none assigned: each node hosts its policies on its first slot)"
    made = slots.get("decisions", 0)
    return (
        f"Slots (epoch {slots.get('epoch')}, by {slots.get('source') or '?'}, "
        f"{made} assignment(s) in the run)"
    )


def slot_lines(slots: dict[str, Any]) -> list[str]:
    """The table as console lines."""
    title = slot_title(slots)
    lines = [title[0].lower() + title[1:] + ":"]
    for a in slots.get("assignments", []):
        lines.append(f"  {a['node']}/{a['slot']} {a['policy']:<12} {a['role']}")
    return lines


def system_text(mode: str, replicas: Any, staleness: Any, slots: dict[str, Any]) -> str:
    """How the run ran, in a few words: its mode, and in async mode its rollout actors (the
    replicas per policy, or the rollout slots each policy holds in the newest assignment)
    and the staleness bound."""
    if mode != "async":
        return mode
    if slots.get("placed"):
        held: dict[str, int] = {}
        for a in slots.get("assignments", []):
            if a["role"] == "rollout":
                held[a["policy"]] = held.get(a["policy"], 0) + 1
        counts = ", ".join(f"{p} {n}" for p, n in sorted(held.items())) or "none"
        rollouts = f"rollout slots {counts} (epoch {slots.get('epoch')}, {slots.get('source')})"
    else:
        rollouts = f"{replicas} rollout replica(s) per policy"
    return f"async, {rollouts}, max staleness {staleness}"
