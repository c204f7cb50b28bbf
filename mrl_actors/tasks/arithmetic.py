"""A seeded family of synthetic arithmetic problems, from a+b with one digit to multi-digit sums.

`max_operand = 4` gives 25 problems a tiny model learns in minutes; `digits = 2` gives 10,000
sums of operands up to 99, most with a carry: thousands of distinct problems, and a held-out
test set that memorising the train set does not solve.

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
from mrl_actors.errors import ConfigError
from mrl_actors.tasks.base import SplitItems, TaskItem, Verdict, derive_seed, split_counts

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")  # the whole first number: "12.5" is not "12"
_SPACED = re.compile(r"-? ?\d(?: \d)*(?: \. \d(?: \d)*)?")  # "1 2 . 5": digits one by one
_MAX_SCAN = 10_000  # characters of a completion the verifier looks at (huge ones are cut)
_PROBLEM = re.compile(r"(\d+)([-+*])(\d+)")  # an item's `prompt`: "37+48"
_OP_PART = {"+": "add", "-": "sub", "*": "mul"}


def carries(a: int, b: int) -> bool:
    """Whether the written sum a + b carries in any column (37 + 48 does, 32 + 46 does not)."""
    while a or b:
        if a % 10 + b % 10 >= 10:
            return True
        a, b = a // 10, b // 10
    return False


class ArithmeticConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The synthetic arithmetic task: a family of `a op b` problems with a held-out test split."""

    # Operands are drawn from [0, max_operand] (used when `digits` is 0).
    max_operand: int = 9
    # When > 0: operands have up to this many digits (2: 0..99, 10,000 a+b problems, most of
    # them carrying), and `max_operand` is ignored.
    digits: int = 0
    # Write digits one by one ("3 7 + 4 8"), so that byte-level BPE tokenizers (GPT-2's, which
    # has one token for each number below 1000) see one token per digit, as Llama's does.
    spaced_digits: bool = False
    # Operators to draw from ("+", "-", "*").
    ops: tuple[str, ...] = ("+",)
    # Train items: at most this many distinct problems (fewer when the family is smaller).
    size: int = 512
    # Held-out test items: this many distinct problems, but at most a quarter of the family.
    test_size: int = 256
    # Seed of the problem set and its split (separate from the run seed, so runs share one task).
    data_seed: int = 0
    # How problems are cut into parts, each evaluated on its own (`eval_accuracy_<part>`) and
    # each a possible warm start (`tiny.warm_start_parts`): "" none; "op" by operator ("add",
    # "sub", "mul"); "carry" sums by whether any column carries ("nocarry", "carry"; needs
    # ops = ["+"]).
    parts: str = ""

    def __post_init__(self) -> None:
        check_int(self, "max_operand", 0, 1_000_000)
        if not self.ops or any(op not in ("+", "-", "*") for op in self.ops):
            fail("ops", 'a non-empty list of "+", "-", "*"', list(self.ops))
        check_int(self, "size", 1, 1_000_000)
        check_int(self, "digits", 0, 9)
        check_int(self, "test_size", 1, 1_000_000)
        if self.parts not in ("", "op", "carry"):
            fail("parts", '"", "op" or "carry"', self.parts)
        if self.parts == "carry" and tuple(self.ops) != ("+",):
            fail("parts", '"carry" only with ops = ["+"] (carries of sums)', self.parts)


def _operand_range(cfg: ArithmeticConfig) -> tuple[int, int]:
    if cfg.digits > 0:
        return 0, 10**cfg.digits - 1
    return 0, cfg.max_operand


def _draw_distinct(rng: np.random.Generator, universe: int, n: int) -> list[int]:
    """`n` distinct indices of [0, universe) in a seeded order (no enumeration of huge families)."""
    if universe <= 4_000_000:
        return [int(i) for i in rng.choice(universe, size=n, replace=False)]
    seen: dict[int, None] = {}
    while len(seen) < n:
        for i in rng.integers(0, universe, size=n):
            seen.setdefault(int(i))
            if len(seen) == n:
                break
    return list(seen)


class ArithmeticTask(SplitItems):
    """`a op b`; reward 1 for the right integer first, else 0. Train and test never share a problem.

    The family holds every (a, op, b) with operands in range; `size + test_size` distinct problems
    are drawn from it once (from `data_seed`), the first `test_size` held out for evaluation.
    """

    name = "arithmetic"

    def __init__(self, cfg: ArithmeticConfig | None = None) -> None:
        self.cfg = cfg or ArithmeticConfig()
        lo, hi = _operand_range(self.cfg)
        span = hi - lo + 1
        if span < 1 or not self.cfg.ops or any(op not in "+-*" for op in self.cfg.ops):
            raise ConfigError(
                f"task.arithmetic: operands {lo}..{hi} and ops {self.cfg.ops} make no problems "
                "(ops are '+', '-', '*')"
            )
        universe = len(self.cfg.ops) * span * span
        n_train, n_test = split_counts(universe, self.cfg.size, self.cfg.test_size)
        rng = np.random.default_rng(derive_seed("arithmetic", self.cfg.data_seed))
        items = [
            self._problem(i, lo, span) for i in _draw_distinct(rng, universe, n_train + n_test)
        ]
        self._test, self._train = items[:n_test], items[n_test:]

    def _problem(self, index: int, lo: int, span: int) -> TaskItem:
        op_i, rest = divmod(index, span * span)
        a, b = lo + rest // span, lo + rest % span
        op = self.cfg.ops[op_i]
        val = a + b if op == "+" else a - b if op == "-" else a * b
        return TaskItem(prompt_id=f"arith-{a}{op}{b}", prompt=f"{a}{op}{b}", answer=str(val))

    @property
    def parts(self) -> tuple[str, ...]:
        """The names of the task's parts, in a fixed order (empty: the task has none)."""
        if self.cfg.parts == "op":
            return tuple(_OP_PART[op] for op in self.cfg.ops)
        if self.cfg.parts == "carry":
            return ("nocarry", "carry")
        return ()

    def part(self, item: TaskItem) -> str | None:
        """Which part `item` belongs to (None when the task has no parts)."""
        if not self.cfg.parts:
            return None
        m = _PROBLEM.fullmatch(item.prompt)
        if m is None:
            return None
        a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
        if self.cfg.parts == "op":
            return _OP_PART[op]
        return "carry" if carries(a, b) else "nocarry"

    def prompt_text(self, item: TaskItem) -> str:
        return f"Q: {self._spell(item.prompt)}=\nA:"

    def target_text(self, item: TaskItem) -> str:
        return f" {self._spell(item.answer)}\n"

    def _spell(self, text: str) -> str:
        """`text` as the model sees it: with `spaced_digits`, "37+48" is "3 7 + 4 8"."""
        return " ".join(text.replace(" ", "")) if self.cfg.spaced_digits else text

    def verify(self, completion: str, item: TaskItem) -> Verdict:
        if not isinstance(completion, str):
            return Verdict(0.0, False, "not_text")
        text = completion[:_MAX_SCAN].replace("\u2212", "-")
        if self.cfg.spaced_digits:  # read "1 2 5" (and "- 1 2") as one number
            text = _SPACED.sub(lambda m: m.group(0).replace(" ", ""), text)
        m = _NUMBER.search(text)
        if m is None:
            return Verdict(0.0, False, "no_answer")
        if m.group(0) == item.answer:
            return Verdict(1.0, True, "correct")
        return Verdict(0.0, False, "wrong_answer")
