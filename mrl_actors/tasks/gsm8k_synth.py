"""A small GSM8K-format dataset the project generates itself: word problems with `#### n` answers.

GSM8K rows are `{"question": ..., "answer": "<worked solution>\\n#### <number>"}`, with calculator
annotations `<<3+4=7>>` in the solution. This generator writes rows of exactly that form from a
few templates of one- and two-step problems (add, take away, groups of), drawn from a seeded
generator: the same arguments give the same bytes on every machine, so the files the repository
ships (`runtime/data/gsm8k-synth/`) are checked against it and need no licence but the project's.
It exists so that the real-data path (local files → `datasets` → `MathTask` → the math verifier)
runs end to end at small scale, without downloading GSM8K.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

NAMES = ("Ana", "Ben", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jia", "Kofi", "Lena")
THINGS = ("apples", "pencils", "stickers", "marbles", "cards", "shells", "books", "coins")

Row = dict[str, str]


def _add(r: random.Random) -> Row:
    who, what = r.choice(NAMES), r.choice(THINGS)
    a, b = r.randint(2, 40), r.randint(2, 40)
    return {
        "question": f"{who} has {a} {what}. {who} gets {b} more {what}. "
        f"How many {what} does {who} have now?",
        "answer": f"{who} has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} {what} now.\n#### {a + b}",
    }


def _sub(r: random.Random) -> Row:
    who, what = r.choice(NAMES), r.choice(THINGS)
    a = r.randint(10, 60)
    b = r.randint(1, a - 1)
    return {
        "question": f"{who} had {a} {what} and gave {b} of them away. "
        f"How many {what} does {who} have left?",
        "answer": f"{who} has {a} - {b} = <<{a}-{b}={a - b}>>{a - b} {what} left.\n#### {a - b}",
    }


def _groups(r: random.Random) -> Row:
    who, what = r.choice(NAMES), r.choice(THINGS)
    a, b = r.randint(2, 9), r.randint(2, 12)
    return {
        "question": f"{who} has {a} boxes with {b} {what} in each box. "
        f"How many {what} does {who} have?",
        "answer": f"{who} has {a} * {b} = <<{a}*{b}={a * b}>>{a * b} {what}.\n#### {a * b}",
    }


def _two_step(r: random.Random) -> Row:
    who, other, what = *r.sample(NAMES, 2), r.choice(THINGS)
    a, b = r.randint(5, 30), r.randint(2, 20)
    c = r.randint(1, a + b - 1)
    total = a + b - c
    return {
        "question": f"{who} has {a} {what}. {other} gives {who} {b} more. Then {who} uses {c} "
        f"of them. How many {what} does {who} have?",
        "answer": f"After the gift {who} has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} {what}.\n"
        f"After using some, {a + b} - {c} = <<{a + b}-{c}={total}>>{total} are left.\n"
        f"#### {total}",
    }


TEMPLATES: tuple[Callable[[random.Random], Row], ...] = (_add, _sub, _groups, _two_step)


def rows(n: int, seed: int = 0, *, exclude: frozenset[str] = frozenset()) -> list[Row]:
    """`n` distinct problems (by question text), none of whose question is in `exclude`."""
    r = random.Random(f"gsm8k-synth/{seed}")
    out: list[Row] = []
    seen = set(exclude)
    while len(out) < n:
        row = r.choice(TEMPLATES)(r)
        if row["question"] in seen:
            continue
        seen.add(row["question"])
        out.append(row)
    return out


def pair(train: int = 300, test: int = 100, seed: int = 0) -> tuple[list[Row], list[Row]]:
    """(train rows, test rows): disjoint by question text, test drawn first."""
    held = rows(test, seed)
    return rows(train, seed + 1, exclude=frozenset(r["question"] for r in held)), held


def jsonl(items: list[Row]) -> str:
    """The rows as JSON lines, keys in GSM8K's order, one row per line."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in items)


def write_pair(directory: str | Path, train: int = 300, test: int = 100, seed: int = 0) -> None:
    """Write `train.jsonl` and `test.jsonl` into `directory`."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tr, te = pair(train, test, seed)
    (d / "train.jsonl").write_text(jsonl(tr), encoding="utf-8")
    (d / "test.jsonl").write_text(jsonl(te), encoding="utf-8")
