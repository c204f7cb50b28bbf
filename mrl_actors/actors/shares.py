"""Which rollout slot samples which prompt batch, decided by the log alone.

With a fixed number of replicas, replica `r` of `n` takes the batches `k % n == r`. When the
allocator moves rollout slots between policies the number changes mid-run, and every slot of a
policy must still agree, without talking to the others, on who takes each batch: a batch sampled
twice wastes a slot, a batch nobody takes stalls the learner.

The rule reads only what every slot of the policy folds in the same order (the log's order):

- batch `k` opens when the learner publishes version `v(k) = max(k - max_staleness, 0)` (the
  oldest weights it may be sampled with);
- its owner is `slots[k % len(slots)]`, `slots` being the policy's rollout slots (sorted) in the
  assignment in force when `v(k)` was published, or in the newest assignment if `v(k)` is not
  published yet;
- if that slot is no longer one of the policy's rollout slots (moved, or its node lost), the
  batch goes to the newest assignment's `slots[k % len(slots)]`.

So a change of assignment never takes an opened batch from a slot that still serves the policy,
and a batch whose slot left is taken over by the same successor on every slot. Between the
assignment that moves a slot and its node stopping the old actor, both may sample that batch.
Before appending, a slot replaces its fresh groups by those the log already holds for the same
ids (which depend only on the run, policy, batch and prompt), and the server drops a second copy
of any id: the log keeps one group per id. Only two appends of one batch racing within the same
moment can leave, next to the first copy's group, a `SuccessVerified` of the second copy (a
verified success of that prompt, with its own text).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mrl_actors.events import SlotKey, SlotsAssigned


@dataclass
class Shares:
    """The fold behind the rule, for one policy. Mutated in log order by its one reader."""

    policy: str
    max_staleness: int
    epoch: int = 0
    current: tuple[SlotKey, ...] = ()  # the policy's rollout slots now, sorted
    opened: dict[int, tuple[SlotKey, ...]] = field(default_factory=dict)  # version -> slots

    def assign(self, event: SlotsAssigned) -> bool:
        """Fold an assignment (a newer epoch only); True if it changed the policy's slots."""
        if event.epoch <= self.epoch:
            return False
        self.epoch = event.epoch
        mine = tuple(
            sorted(
                (a.node, a.slot)
                for a in event.assignments
                if a.policy == self.policy and a.role == "rollout"
            )
        )
        changed, self.current = mine != self.current, mine
        return changed

    def publish(self, version: int) -> None:
        """Fold the first `WeightsPublished` of `version`: the batches it opens get owners."""
        self.opened.setdefault(version, self.current)

    def owner(self, batch: int) -> SlotKey | None:
        """The slot that samples `batch` (None: the policy has no rollout slot now)."""
        slots = self.opened.get(max(batch - self.max_staleness, 0)) or self.current
        if slots and slots[batch % len(slots)] in self.current:
            return slots[batch % len(slots)]
        return self.current[batch % len(self.current)] if self.current else None
