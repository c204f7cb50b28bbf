"""The task protocol: prompts with known answers, and a verifier that never raises.

A task is deterministic data: `items(seed)` and `sample(seed, step, k)` depend only on their
arguments, so a policy actor's prompt order derives from the run seed (DESIGN.md decision 3).
"""

from __future__ import annotations

import hashlib
from typing import Protocol, runtime_checkable

import msgspec


class TaskItem(msgspec.Struct, frozen=True):
    """One prompt with its reference answer."""

    prompt_id: str  # stable id, unique within the task (events refer to it)
    prompt: str  # the question, before the task's prompt template
    answer: str  # the reference answer the verifier compares against


class Verdict(msgspec.Struct, frozen=True):
    """A verifier's judgement of one completion."""

    reward: float  # the scalar reward GRPO uses
    success: bool  # whether the completion is correct (SGT shares only these)
    reason: str  # short machine-readable why: "correct", "wrong_answer", "no_answer", ...


@runtime_checkable
class Task(Protocol):
    """What a policy actor needs from a task."""

    name: str

    def items(self, seed: int) -> list[TaskItem]:
        """All items of the task (or of its train split), in a seed-determined order."""
        ...

    def sample(self, seed: int, step: int, k: int) -> list[TaskItem]:
        """`k` items for learner step `step`, a pure function of (seed, step, k)."""
        ...

    def prompt_text(self, item: TaskItem) -> str:
        """The full text given to the model."""
        ...

    def target_text(self, item: TaskItem) -> str:
        """A correct completion (for supervised warm starts and tests)."""
        ...

    def verify(self, completion: str, item: TaskItem) -> Verdict:
        """Judge `completion`; never raises, whatever the completion is."""
        ...


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (run seed, step, ids), stable across processes and machines."""
    h = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def shuffled(items: list[TaskItem], seed: int) -> list[TaskItem]:
    """All `items` in a seed-determined order (what `Task.items(seed)` returns)."""
    import numpy as np

    order = np.random.default_rng(derive_seed(seed, "items")).permutation(len(items))
    return [items[int(i)] for i in order]


def sample_from(items: list[TaskItem], seed: int, step: int, k: int) -> list[TaskItem]:
    """`k` items for `step`, walking seed-shuffled epochs: each item once per epoch."""
    import numpy as np

    n = len(items)
    out = []
    for j in range(step * k, step * k + k):
        epoch, pos = divmod(j, n)
        order = np.random.default_rng(derive_seed(seed, "epoch", epoch)).permutation(n)
        out.append(items[int(order[pos])])
    return out
