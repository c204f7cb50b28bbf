"""A seeded synthetic arithmetic task small enough for a tiny model to learn on a CPU in minutes.

Prompts look like `"Q: 7+5=\nA:"` and the target completion is `" 12\n"`. The verifier reads the
first number of the completion, so it rewards exactly what the target format teaches.

The first number is read whole, a decimal part included (a Unicode minus `−` reads as `-`), and
must spell the integer answer exactly: `" 12.5"` is not 12. The format is kept strict on purpose,
so `" 12.0"` does not count either: the target teaches `" 12"` and only that is rewarded.
"""

from __future__ import annotations

import re

import msgspec
import numpy as np

from mrl_actors.checks import check_int, fail
from mrl_actors.tasks.base import TaskItem, Verdict, derive_seed, sample_from, shuffled

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")  # the whole first number: "12.5" is not "12"
_MAX_SCAN = 10_000  # characters of a completion the verifier looks at (huge ones are cut)


class ArithmeticConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The synthetic arithmetic task."""

    # Operands are drawn from [0, max_operand].
    max_operand: int = 9
    # Operators to draw from ("+", "-", "*").
    ops: tuple[str, ...] = ("+",)
    # How many distinct items the task has (drawn once from `data_seed`).
    size: int = 512
    # Seed of the item set itself (separate from the run seed, so runs share one task).
    data_seed: int = 0

    def __post_init__(self) -> None:
        check_int(self, "max_operand", 0, 1_000_000)
        if not self.ops or any(op not in ("+", "-", "*") for op in self.ops):
            fail("ops", 'a non-empty list of "+", "-", "*"', list(self.ops))
        check_int(self, "size", 1, 1_000_000)


class ArithmeticTask:
    """`a op b` with small operands; reward 1 for the right integer first, else 0."""

    name = "arithmetic"

    def __init__(self, cfg: ArithmeticConfig | None = None) -> None:
        self.cfg = cfg or ArithmeticConfig()
        rng = np.random.default_rng(derive_seed("arithmetic", self.cfg.data_seed))
        self._items = []
        for i in range(self.cfg.size):
            a, b = (int(x) for x in rng.integers(0, self.cfg.max_operand + 1, size=2))
            op = self.cfg.ops[int(rng.integers(0, len(self.cfg.ops)))]
            val = a + b if op == "+" else a - b if op == "-" else a * b
            self._items.append(
                TaskItem(prompt_id=f"arith-{i}", prompt=f"{a}{op}{b}", answer=str(val))
            )

    def items(self, seed: int) -> list[TaskItem]:
        return shuffled(self._items, seed)

    def sample(self, seed: int, step: int, k: int) -> list[TaskItem]:
        return sample_from(self._items, seed, step, k)

    def prompt_text(self, item: TaskItem) -> str:
        return f"Q: {item.prompt}=\nA:"

    def target_text(self, item: TaskItem) -> str:
        return f" {item.answer}\n"

    def verify(self, completion: str, item: TaskItem) -> Verdict:
        if not isinstance(completion, str):
            return Verdict(0.0, False, "not_text")
        m = _NUMBER.search(completion[:_MAX_SCAN].replace("\u2212", "-"))
        if m is None:
            return Verdict(0.0, False, "no_answer")
        if m.group(0) == item.answer:
            return Verdict(1.0, True, "correct")
        return Verdict(0.0, False, "wrong_answer")
