"""Math word problems (GSM8K `#### 42`, MATH `\\boxed{}`) from local files, verified by math-verify.

Mathematical equivalence (`0.5` vs `\\frac12`, `42.0` vs `42`) is judged by Hugging Face's
`math-verify`, the library TRL's and open-r1's accuracy rewards use. Its parser runs sympy, which
can be slow or raise on adversarial input: the verifier cuts completions to their last
`max_chars`, disables math-verify's signal-based timeout off the main thread (signals only work
there), and turns every exception into a zero-reward verdict.

Off the main thread nothing can interrupt sympy, and it evaluates `9^{9^{9}}` or `99999!` exactly,
holding the GIL for ever: one such completion would hang the whole process. So `too_costly` screens
every predicted answer first, cheaply and conservatively (power towers, factorials, huge exponents,
long digit runs, big binomials, long answers), and such answers are judged wrong without reaching
sympy. Plain numbers (`72`, `-0.5`, `1/2`) are compared exactly without sympy at all.
"""

from __future__ import annotations

import hashlib
import re
import threading
from fractions import Fraction
from pathlib import Path
from typing import Any

import msgspec

from mrl_actors.checks import check_float, check_int, fail
from mrl_actors.errors import ConfigError
from mrl_actors.logs import get_logger
from mrl_actors.tasks.base import SplitItems, TaskItem, Verdict, problem_key

log = get_logger(__name__)
_GSM = re.compile(r"####\s*([^\n#]+)")
# A whole number token: fractions and decimals included, so "#### 1/2" is 1/2, not 1.
_NUM = re.compile(r"-?\d[\d,]*(?:[./]\d+)?")
_PLAIN = re.compile(r"-?\d+(?:\.\d+|/\d+)?")
# Limits of `too_costly`: sympy handles answers within them in milliseconds.
_MAX_ANSWER_CHARS = 300
_LONG_DIGITS = re.compile(r"\d{31,}")
_MAX_EXPONENT_DIGITS = 3  # an exponent with at most 3 digits in all is below 1000 (9*99, 999)
_BINOM = re.compile(r"binom|choose")
_FOUR_DIGITS = re.compile(r"\d{4,}")
_COMMAND = re.compile(r"\\[A-Za-z]*")
_WORD = re.compile(r"[\w.]*")
_OPEN = {"{": "}", "(": ")", "[": "]"}
_CLOSE = {v: k for k, v in _OPEN.items()}


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


def _group_end(s: str, i: int) -> int:
    """Index just past the bracket group opening at `s[i]` (or `len(s)` when it never closes)."""
    depth = 0
    for j in range(i, len(s)):
        if s[j] in _OPEN:
            depth += 1
        elif s[j] in _CLOSE:
            depth -= 1
            if depth == 0:
                return j + 1
    return len(s)


def _group_start(s: str, j: int) -> int:
    """Index of the bracket opening the group that closes at `s[j]` (0 when it never opens)."""
    depth = 0
    for i in range(j, -1, -1):
        if s[i] in _CLOSE:
            depth += 1
        elif s[i] in _OPEN:
            depth -= 1
            if depth == 0:
                return i
    return 0


def _exponent_end(s: str, i: int) -> int:
    """Index just past the exponent that starts at `s[i]` (right after `^`).

    A bracket group, or a LaTeX command with its brace arguments, or else a run of word characters
    and dots: deliberately greedy, so `9**999999` counts all its digits (latex would take one).
    """
    while i < len(s) and s[i] in " -+":
        i += 1
    if i < len(s) and s[i] in _OPEN:
        return _group_end(s, i)
    if i < len(s) and s[i] == "\\":
        m = _COMMAND.match(s, i)
        i = m.end() if m else i + 1
        while i < len(s) and s[i] == "{":
            i = _group_end(s, i)
        return i
    m = _WORD.match(s, i)
    return m.end() if m else i


def too_costly(answer: str) -> bool:
    """Whether sympy might take unbounded time on `answer`, so it must not be handed to it.

    Conservative and cheap (scans of at most 300 characters, no parsing): an answer longer than
    300 characters, a factorial `!` (LaTeX's `\\!` thin space aside), a digit run over 30 digits,
    a binomial with a power or a 4-digit number, or any power (`^` or `**`) that is part of a
    tower (its exponent holds a power, a power follows it directly, or its bracketed base holds
    one) or whose exponent has more than 3 digits (so is 1000 or more). A correct answer written
    in one of these forms is judged wrong unless it matches the reference string exactly; such
    final answers are rare in GSM8K and MATH, and a hung process costs the whole run.
    """
    if len(answer) > _MAX_ANSWER_CHARS or _LONG_DIGITS.search(answer):
        return True
    s = answer.replace("\\!", "").replace("**", "^")
    if "!" in s:
        return True
    if _BINOM.search(s) and ("^" in s or _FOUR_DIGITS.search(s)):
        return True
    for i, c in enumerate(s):
        if c != "^":
            continue
        end = _exponent_end(s, i + 1)
        exponent = s[i + 1 : end]
        if "^" in exponent or sum(d.isdigit() for d in exponent) > _MAX_EXPONENT_DIGITS:
            return True
        if s[end:].lstrip().startswith("^"):
            return True  # a chained tower: 9^9^9, 9^{9}^{9}
        k = i - 1
        while k >= 0 and s[k] == " ":
            k -= 1
        if k >= 0 and s[k] in _CLOSE and "^" in s[_group_start(s, k) : k]:
            return True  # a bracketed base holding a power: (9^{99})^{99}
    return False


def _plain_number(answer: str) -> Fraction | None:
    """`answer` as an exact number when it is a plain integer, decimal or a/b; else None."""
    a = answer.strip().replace(",", "")
    if not _PLAIN.fullmatch(a):
        return None
    try:
        return Fraction(a)
    except (ValueError, ZeroDivisionError):
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


class MathConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A math word-problem dataset on local disk: `train` and `test` files, or one `path` to split.

    Files are .jsonl/.json or .parquet (or directories of them) read through `datasets`, in GSM8K
    form (`question`, `answer` ending in `#### 42`) or MATH form (`problem`, `solution` with a
    `\\boxed{}`): the default column names fall back to `problem`/`solution` when absent.
    """

    # Train split file (or directory). Set with `test`; or leave both empty and set `path`.
    train: str = ""
    # Test split file (or directory): evaluation uses only these problems.
    test: str = ""
    # One file to split deterministically: a problem goes to test when the hash of its text falls
    # in the first `test_fraction` of the hash range (stable under reordering and appending rows).
    path: str = ""
    # Share of `path`'s problems held out for test (single-file form only).
    test_fraction: float = 0.1
    # Column with the question text ("problem" is tried when "question" is absent).
    question_field: str = "question"
    # Column with the reference answer: GSM8K style ("... #### 42"), a \boxed{} solution, or bare
    # ("solution" is tried when "answer" is absent).
    answer_field: str = "answer"
    # Answer format the model is asked for: "gsm8k" (#### 42) or "boxed" (\boxed{42}).
    style: str = "gsm8k"
    # Completions longer than this are judged on their last `max_chars` characters only.
    max_chars: int = 4000

    def __post_init__(self) -> None:
        for field in ("question_field", "answer_field"):
            if not getattr(self, field):
                fail(field, "a non-empty string", getattr(self, field))
        if bool(self.train) != bool(self.test):
            fail("train", "set together with `test` (or both empty and `path` set)", self.train)
        if bool(self.path) == bool(self.train):
            fail("path", "set when `train`/`test` are not (exactly one form)", self.path)
        check_float(self, "test_fraction", gt=0.0, lt=1.0)
        if self.style not in ("gsm8k", "boxed"):
            fail("style", "'gsm8k' or 'boxed'", self.style)
        check_int(self, "max_chars", 1, 10_000_000)


_FALLBACK_FIELD = {"question": "problem", "answer": "solution"}


def _column(path: str, columns: list[str], field: str) -> str:
    if field in columns:
        return field
    alt = _FALLBACK_FIELD.get(field)
    if alt is not None and alt in columns:
        return alt
    also = f" or {alt!r}" if alt else ""
    raise ConfigError(f"{path}: no column {field!r}{also} (columns: {columns})")


def load_items(path: str, question_field: str, answer_field: str, prefix: str) -> list[TaskItem]:
    """Rows of a local JSON-lines or parquet dataset as `TaskItem`s (gold answers extracted)."""
    from datasets import load_dataset

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{path}: no such file or directory")
    files = sorted(str(f) for f in p.iterdir()) if p.is_dir() else [str(p)]
    suffix = Path(files[0]).suffix if files else ""
    builder = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}.get(suffix)
    if builder is None:
        raise ConfigError(f"{path}: expected .jsonl, .json or .parquet files, found {suffix!r}")
    ds: Any = load_dataset(builder, data_files=files, split="train")
    q_col = _column(path, ds.column_names, question_field)
    a_col = _column(path, ds.column_names, answer_field)
    items = []
    for i, row in enumerate(ds):
        raw = str(row[a_col])
        gold = extract_gsm8k(raw) or extract_boxed(raw) or raw.strip()
        items.append(TaskItem(prompt_id=f"{prefix}-{i}", prompt=str(row[q_col]), answer=gold))
    return items


def split_by_hash(
    items: list[TaskItem], test_fraction: float
) -> tuple[list[TaskItem], list[TaskItem]]:
    """(train, test): a problem is test when sha256 of its text lands in the first fraction.

    Keyed by the text (not the row), so duplicate rows land on the same side and the split of a
    problem never changes when the file is reordered or grows.
    """
    train: list[TaskItem] = []
    test: list[TaskItem] = []
    for it in items:
        h = int.from_bytes(hashlib.sha256(problem_key(it.prompt).encode()).digest()[:8], "big")
        (test if h < test_fraction * 2**64 else train).append(it)
    return train, test


class MathTask(SplitItems):
    """Word problems with a numeric or LaTeX final answer, with a train and a test split.

    With `train` and `test` files, a train problem whose text also appears in the test file is
    dropped from train (and counted in the log): held-out means held out.
    """

    name = "math"

    def __init__(self, cfg: MathConfig) -> None:
        if cfg.style not in ("gsm8k", "boxed"):
            raise ConfigError(f"MathConfig.style must be 'gsm8k' or 'boxed', got {cfg.style!r}")
        self.cfg = cfg
        q, a = cfg.question_field, cfg.answer_field
        if cfg.train or cfg.test:
            if not (cfg.train and cfg.test) or cfg.path:
                raise ConfigError(
                    "[task.math] takes `train` and `test` together, or one `path` to split"
                )
            train = load_items(cfg.train, q, a, "train")
            self._test = load_items(cfg.test, q, a, "test")
            held = {problem_key(it.prompt) for it in self._test}
            self._train = [it for it in train if problem_key(it.prompt) not in held]
            if len(self._train) < len(train):
                log.info("math.train_overlap_dropped", dropped=len(train) - len(self._train))
            where = f"{cfg.train} / {cfg.test}"
        elif cfg.path:
            if not 0.0 < cfg.test_fraction < 1.0:
                raise ConfigError(
                    f"[task.math] test_fraction must be in (0, 1), got {cfg.test_fraction}"
                )
            items = load_items(cfg.path, q, a, Path(cfg.path).stem)
            self._train, self._test = split_by_hash(items, cfg.test_fraction)
            where = cfg.path
        else:
            raise ConfigError("[task.math] needs `train` and `test` files, or one `path` to split")
        if not self._train or not self._test:
            raise ConfigError(
                f"{where}: the train split has {len(self._train)} problems and the test split "
                f"{len(self._test)}; both need at least one"
            )

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
    if predicted.strip() == gold.strip():
        return Verdict(1.0, True, "correct")
    if too_costly(predicted):
        return Verdict(0.0, False, "too_costly")
    g, p = _plain_number(gold), _plain_number(predicted)
    equal = g == p if g is not None and p is not None else math_equal(gold, predicted)
    if equal:
        return Verdict(1.0, True, "correct")
    return Verdict(0.0, False, "wrong_answer")
