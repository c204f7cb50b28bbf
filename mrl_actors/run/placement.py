"""Slots and placement: what a node offers, what the spec places where, and what a node hosts.

A node offers slots: its GPUs (`cuda:N`) or CPU slots (`cpu:N`), never both (a slot is named in
`SlotAssignment` by its number only: the GPU index, or the CPU slot number). `SlotsAssigned`
events give slots to actors (policy, role); each carries an epoch, and a node applies only an
epoch newer than the one it holds (fencing: a late or replayed older assignment changes
nothing). The spec's `[placement]` table is written once as epoch 1 (`initial_assignment`);
later epochs come from the allocator (MWRA). Everything here is pure: no torch at import.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Literal

from mrl_actors.errors import ConfigError
from mrl_actors.events import SlotAssignment, SlotsAssigned, event_id
from mrl_actors.spec import RunSpec

PLACEMENT_SOURCE = "placement"  # the source of the spec's own assignment (epoch 1)
Role = Literal["learner", "rollout"]


@dataclass(frozen=True, slots=True)
class DeviceSlot:
    """One slot of this node: its number in `SlotAssignment.slot` and the torch device it means."""

    kind: Literal["cpu", "cuda"]
    index: int

    @property
    def device(self) -> str:
        return f"{self.kind}:{self.index}" if self.kind == "cuda" else "cpu"

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.index}"


def parse_slots(text: str) -> list[DeviceSlot]:
    """`--slots`: "cuda:0,cuda:1" (those GPUs), "cpu:2" (two CPU slots), "" (the default)."""
    text = text.strip()
    if not text:
        return default_slots()
    if re.fullmatch(r"cpu:[0-9]{1,3}", text):
        n = int(text[4:])
        if n < 1:
            raise ConfigError(f"--slots {text!r}: at least one CPU slot")
        return [DeviceSlot("cpu", i) for i in range(n)]
    slots = []
    for part in text.split(","):
        m = re.fullmatch(r"cuda:([0-9]{1,3})", part.strip())
        if not m:
            raise ConfigError(
                f"--slots {text!r}: expected 'cuda:0,cuda:1' (GPUs) or 'cpu:N' (N CPU slots)"
            )
        slots.append(DeviceSlot("cuda", int(m.group(1))))
    if len({s.index for s in slots}) != len(slots):
        raise ConfigError(f"--slots {text!r} names a GPU twice")
    return slots


def default_slots() -> list[DeviceSlot]:
    """Every visible GPU, else one CPU slot."""
    try:
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:  # pragma: no cover - torch is a dependency
        n = 0
    return [DeviceSlot("cuda", i) for i in range(n)] or [DeviceSlot("cpu", 0)]


def slot_number(name: str) -> int:
    """ "cuda:3" -> 3, "cpu:0" -> 0 (`SlotAssignment.slot`)."""
    return int(name.split(":", 1)[1])


def initial_assignment(spec: RunSpec) -> SlotsAssigned | None:
    """The spec's `[placement]` as `SlotsAssigned` epoch 1, or None when it places nothing."""
    if not spec.placement.slots:
        return None
    run = spec.run.name
    return SlotsAssigned(
        run=run,
        source=PLACEMENT_SOURCE,
        event_id=event_id("slots", run, PLACEMENT_SOURCE, 1),
        time_ns=time.time_ns(),
        epoch=1,
        assignments=[
            SlotAssignment(node=s.node, slot=slot_number(s.slot), policy=s.policy, role=s.role)
            for s in spec.placement.slots
        ],
        reason="spec [placement]",
    )


@dataclass(frozen=True, slots=True)
class Hosted:
    """One actor a node hosts: on which of its slots, for which policy, in which role."""

    slot: int
    policy: str
    role: Role


@dataclass(frozen=True, slots=True)
class NodeAssignment:
    """What one node hosts, folded from `SlotsAssigned` events (epoch-fenced)."""

    node: str
    epoch: int = 0
    hosted: frozenset[Hosted] = frozenset()


def apply(
    state: NodeAssignment, event: Any, slots: list[DeviceSlot], policies: list[str]
) -> NodeAssignment:
    """Fold one event: a `SlotsAssigned` with a newer epoch replaces what this node hosts.

    An older or equal epoch is ignored (fencing). Assignments to slots this node does not offer,
    or to policies the run does not have, are dropped (the caller logs what it dropped).
    """
    if not isinstance(event, SlotsAssigned) or event.epoch <= state.epoch:
        return state
    offered = {s.index for s in slots}
    mine = frozenset(
        Hosted(a.slot, a.policy, a.role)
        for a in event.assignments
        if a.node == state.node and a.slot in offered and a.policy in policies
    )
    return NodeAssignment(node=state.node, epoch=event.epoch, hosted=mine)


def ignored(
    event: SlotsAssigned, node: str, slots: list[DeviceSlot], policies: list[str]
) -> list[str]:
    """This node's assignments in `event` that `apply` drops, each said in words."""
    offered = {s.index for s in slots}
    out = []
    for a in event.assignments:
        if a.node != node:
            continue
        if a.slot not in offered:
            out.append(f"slot {a.slot} ({a.policy} {a.role}): not offered by this node")
        elif a.policy not in policies:
            out.append(f"slot {a.slot}: unknown policy {a.policy!r}")
    return out
