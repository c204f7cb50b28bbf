"""Math word problems (GSM8K `#### 42`, MATH `\\boxed{}`) from local files, verified by math-verify.

Mathematical equivalence (`0.5` vs `\\frac12`, `42.0` vs `42`) is judged by Hugging Face's
`math-verify`, the library TRL's and open-r1's accuracy rewards use. Its parser runs sympy, which
can be slow or raise on adversarial input: the verifier cuts completions to their last
`max_chars`, disables math-verify's signal-based timeout off the main thread (signals only work
there), and turns every exception into a zero-reward verdict.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import msgspec

from mrl_actors.errors import ConfigError
from mrl_actors.logs import get_logger
from mrl_actors.tasks.base import TaskItem, Verdict, sample_from, shuffled

log = get_logger(__name__)
_GSM = re.compile(r"####\s*([^\n#]+)")
_NUM = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def extract_gsm8k(text: str) -> str | None:
    """The answer after the last `####`, without thousands separators; None if there is none."""
    found = _GSM.findall(text)
    if not found:
        return None
    m = _NUM.search(found[-1])
    return m.group(0).replace(",", "") if m else found[-1].strip() or None


def extract_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` with balanced braces; None if there is none."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None


def math_equal(gold: str, predicted: str, timeout: int = 5) -> bool:
    """Whether two answers are mathematically equal under math-verify; False on any failure."""
    from math_verify import parse, verify

    t = timeout if threading.current_thread() is threading.main_thread() else None
    try:
        g = parse(f"${gold}$", parsing_timeout=t)
        p = parse(f"${predicted}$", parsing_timeout=t)
        if not g or not p:
            return gold.strip() == predicted.strip()
        return bool(verify(g, p, timeout_seconds=t))
    except Exception as e:  # math-verify/sympy can raise anything on adversarial input
        log.debug("math_verify.failed", error=repr(e)[:200])
        return False


class MathConfig(msgspec.Struct, frozen=True, kw_only=True):
    """A math word-problem dataset on local disk."""

    # A .jsonl/.json or .parquet file (or a directory of them) readable by `datasets`.
    path: str
    # Column with the question text.
    question_field: str = "question"
    # Column with the reference answer: GSM8K style ("... #### 42"), a \boxed{} solution, or bare.
    answer_field: str = "answer"
    # Answer format the model is asked for: "gsm8k" (#### 42) or "boxed" (\boxed{42}).
    style: str = "gsm8k"
    # Completions longer than this are judged on their last `max_chars` characters only.
    max_chars: int = 4000


def load_items(path: str, question_field: str, answer_field: str, prefix: str) -> list[TaskItem]:
    """Rows of a local JSON-lines or parquet dataset as `TaskItem`s (gold answers extracted)."""
    from datasets import load_dataset

    p = Path(path)
    files = sorted(str(f) for f in p.iterdir()) if p.is_dir() else [str(p)]
    suffix = Path(files[0]).suffix if files else ""
    builder = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}.get(suffix)
    if builder is None:
        raise ConfigError(f"{path}: expected .jsonl, .json or .parquet files, found {suffix!r}")
    ds: Any = load_dataset(builder, data_files=files, split="train")
    for field in (question_field, answer_field):
        if field not in ds.column_names:
            raise ConfigError(f"{path}: no column {field!r} (columns: {ds.column_names})")
    items = []
    for i, row in enumerate(ds):
        raw = str(row[answer_field])
        gold = extract_gsm8k(raw) or extract_boxed(raw) or raw.strip()
        items.append(
            TaskItem(prompt_id=f"{prefix}-{i}", prompt=str(row[question_field]), answer=gold)
        )
    return items


class MathTask:
    """Word problems with a numeric or LaTeX final answer."""

    name = "math"

    def __init__(self, cfg: MathConfig) -> None:
        if cfg.style not in ("gsm8k", "boxed"):
            raise ConfigError(f"MathConfig.style must be 'gsm8k' or 'boxed', got {cfg.style!r}")
        self.cfg = cfg
        self._items = load_items(
            cfg.path, cfg.question_field, cfg.answer_field, Path(cfg.path).stem
        )
        if not self._items:
            raise ConfigError(f"{cfg.path}: the dataset is empty")

    def items(self, seed: int) -> list[TaskItem]:
        return shuffled(self._items, seed)

    def sample(self, seed: int, step: int, k: int) -> list[TaskItem]:
        return sample_from(self._items, seed, step, k)

    def prompt_text(self, item: TaskItem) -> str:
        if self.cfg.style == "boxed":
            return f"{item.prompt}\nPut the final answer in \\boxed{{}}.\n"
        return f"{item.prompt}\nEnd with the final answer after ####.\n"

    def target_text(self, item: TaskItem) -> str:
        if self.cfg.style == "boxed":
            return f"\\boxed{{{item.answer}}}"
        return f"#### {item.answer}"

    def verify(self, completion: str, item: TaskItem) -> Verdict:
        return verify_math(completion, item.answer, self.cfg.max_chars)


def verify_math(completion: str, gold: str, max_chars: int = 4000) -> Verdict:
    """Judge a completion's final answer (`#### x` or `\\boxed{x}`, the last one) against `gold`."""
    if not isinstance(completion, str) or not completion.strip():
        return Verdict(0.0, False, "empty")
    tail = completion[-max_chars:]
    try:
        predicted = extract_gsm8k(tail)
        if predicted is None:
            predicted = extract_boxed(tail)
    except Exception as e:  # regexes on odd unicode should not raise, but never let one escape
        return Verdict(0.0, False, f"extract_failed: {type(e).__name__}")
    if predicted is None or not predicted.strip():
        return Verdict(0.0, False, "no_answer")
    if predicted.strip() == gold.strip() or math_equal(gold, predicted):
        return Verdict(1.0, True, "correct")
    return Verdict(0.0, False, "wrong_answer")
