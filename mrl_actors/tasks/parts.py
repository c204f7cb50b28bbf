"""Parts of a task: disjoint skills evaluated one by one, and warm starts on some of them.

A task may cut its problems into named parts (`ArithmeticTask` by operator, or sums by whether
they carry). Evaluation then reports accuracy per part beside the whole, and a policy can be
warm-started on some parts only (`tiny.warm_start_parts`) while RL runs on all of them: the
scenario where one policy knows what the other does not, which is what sharing is for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mrl_actors.errors import ConfigError
from mrl_actors.tasks.base import TaskItem, sample_from, shuffled


def part_names(task: Any) -> tuple[str, ...]:
    """The task's parts in a fixed order; empty for a task without parts."""
    return tuple(getattr(task, "parts", ()))


def part_of(task: Any, item: TaskItem) -> str | None:
    """The part `item` belongs to, or None (no parts, or an item outside them)."""
    if not part_names(task):
        return None
    part: str | None = task.part(item)
    return part


class PartView:
    """The task with its train split cut to `parts`: what a warm start on those parts reads.

    Only the train split is cut (the warm start never reads the test split); the prompt and
    target formats, the verifier and the name are the task's own.
    """

    def __init__(self, task: Any, parts: Sequence[str]) -> None:
        known = part_names(task)
        unknown = [p for p in parts if p not in known]
        if not parts or unknown:
            raise ConfigError(
                f"warm_start_parts {list(parts)}: the task's parts are {list(known)} "
                '(set [task.arithmetic] parts = "op" or "carry")'
            )
        self.task = task
        self.parts = tuple(parts)
        self.name = task.name
        self.cfg = getattr(task, "cfg", None)
        self._train = [it for it in task.train_items() if part_of(task, it) in self.parts]
        if not self._train:
            raise ConfigError(f"warm_start_parts {list(parts)}: no train problem is in them")

    def train_items(self) -> list[TaskItem]:
        return list(self._train)

    def test_items(self) -> list[TaskItem]:
        return []  # a warm start never reads the test split

    def items(self, seed: int) -> list[TaskItem]:
        return shuffled(self._train, seed)

    def sample(self, seed: int, step: int, k: int) -> list[TaskItem]:
        return sample_from(self._train, seed, step, k)

    def prompt_text(self, item: TaskItem) -> str:
        text: str = self.task.prompt_text(item)
        return text

    def target_text(self, item: TaskItem) -> str:
        text: str = self.task.target_text(item)
        return text
