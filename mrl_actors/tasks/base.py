"""The task protocol: prompts with known answers, and a verifier that never raises.

A task is deterministic data split once into a train and a test set: `train_items()` feeds the
warm start and the RL prompts (`items(seed)`, `sample(seed, step, k)` draw only from it) and
`test_items()` is held out for evaluation. Both splits depend only on the task's config (its
`data_seed`), never on the run seed, so every run and every probe of a comparison is scored on the
same test items; prompt order derives from the run seed (DESIGN.md decision 3). No problem appears
in both splits, by text or by prompt id (`tests/unit/test_task_splits.py`).
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

    def train_items(self) -> list[TaskItem]:
        """The train split in its fixed order (warm start and RL prompts come only from it)."""
        ...

    def test_items(self) -> list[TaskItem]:
        """The held-out test split in its fixed order (evaluation uses only it)."""
        ...

    def items(self, seed: int) -> list[TaskItem]:
        """The train split in a seed-determined order."""
        ...

    def sample(self, seed: int, step: int, k: int) -> list[TaskItem]:
        """`k` train items for learner step `step`, a pure function of (seed, step, k)."""
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


def problem_key(text: str) -> str:
    """What makes two problems the same: their text with whitespace runs collapsed, casefolded."""
    return " ".join(text.split()).casefold()


def split_counts(universe: int, size: int, test_size: int) -> tuple[int, int]:
    """(train, test) sizes for a synthetic task whose distinct problems number `universe`.

    The test split gets `test_size` problems but never more than a quarter of the universe, the
    train split up to `size` of the rest: a tiny universe (a+b with a, b <= 4: 25 problems) still
    holds some problems out instead of failing.
    """
    test = min(test_size, universe // 4)
    return min(size, universe - test), test


class SplitItems:
    """The train/test plumbing every task shares; a task sets `_train` and `_test` in `__init__`."""

    _train: list[TaskItem]
    _test: list[TaskItem]

    def train_items(self) -> list[TaskItem]:
        return list(self._train)

    def test_items(self) -> list[TaskItem]:
        return list(self._test)

    def items(self, seed: int) -> list[TaskItem]:
        return shuffled(self._train, seed)

    def sample(self, seed: int, step: int, k: int) -> list[TaskItem]:
        return sample_from(self._train, seed, step, k)
