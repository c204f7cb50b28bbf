"""Verifiers judge malformed, empty, huge and adversarial completions without raising."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mrl_actors.tasks import ArithmeticTask, CountdownTask, TaskItem, Verdict, verify_math
from mrl_actors.tasks.countdown import evaluate_expression
from mrl_actors.tasks.math import extract_boxed, extract_gsm8k, math_equal, too_costly

ARITH = ArithmeticTask()
COUNTDOWN = CountdownTask()
GSM_ITEM = TaskItem(prompt_id="g", prompt="?", answer="42")

ADVERSARIAL = [
    "",
    " ",
    "\x00\x00\x00",
    "#### ",
    "####",
    "\\boxed{",
    "\\boxed{}",
    "\\boxed{\\boxed{\\boxed{",
    "}" * 1000 + "{" * 1000,
    "#### 1e99999999",
    "#### 9" * 5000,
    "\\boxed{" + "(" * 5000 + "}",
    "\\boxed{\\frac{1}{0}}",
    "\\boxed{x^{x^{x^{x^{x^{x^{x^{x}}}}}}}}",
    "\\boxed{10**10**10**10}",
    "<answer>" + "9**9**9**9" + "</answer>",
    "<answer>__import__('os').system('echo pwned')</answer>",
    "<answer>(lambda: 1)()</answer>",
    "<answer>1/0</answer>",
    "<answer>" + "(" * 300 + "1" + ")" * 300 + "</answer>",
    "<answer>" + "+".join(["1"] * 5000) + "</answer>",
    "🙂" * 10_000,
    "\ud800 lone surrogate",
    "A" * 2_000_000,
]


@pytest.mark.parametrize("completion", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_verifiers_never_raise_on_adversarial_completions(completion: str) -> None:
    """Every verifier returns a zero-reward Verdict on garbage (a hang fails by pytest-timeout)."""
    for verdict in (
        ARITH.verify(completion, ARITH.items(0)[0]) if not any(c.isdigit() for c in completion)
        else Verdict(0.0, False, "skip"),
        COUNTDOWN.verify(completion, COUNTDOWN.items(0)[0]),
        verify_math(completion, "42"),
    ):  # fmt: skip
        assert isinstance(verdict, Verdict)
        assert verdict.reward in (0.0, 1.0)
        assert verdict.success == (verdict.reward == 1.0)
        assert verdict.reason


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_verifiers_never_raise_on_any_text(text: str) -> None:
    """Property: no text makes a verifier raise, and every verdict is well formed."""
    for v in (
        ARITH.verify(text, ARITH.items(0)[0]),
        COUNTDOWN.verify(text, COUNTDOWN.items(0)[0]),
        verify_math(text, "42"),
    ):
        assert v.reward in (0.0, 1.0) and isinstance(v.reason, str)


def test_verifiers_handle_non_text() -> None:
    """A completion that is not a string (a bug upstream) is judged, not raised on."""
    assert ARITH.verify(None, ARITH.items(0)[0]).reason == "not_text"  # type: ignore[arg-type]
    assert COUNTDOWN.verify(b"x", COUNTDOWN.items(0)[0]).reason == "not_text"  # type: ignore[arg-type]
    assert verify_math(None, "42").reason == "empty"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("completion", "gold", "ok"),
    [
        ("Natalia sold 48 + 24 = 72 clips.\n#### 72", "72", True),
        ("#### 1,234", "1234", True),
        ("the answer is #### 72.0", "72", True),
        ("#### 71", "72", False),
        ("So \\boxed{\\frac{1}{2}}", "0.5", True),
        ("\\boxed{\\frac{1}{2}}", "\\frac{2}{4}", True),
        ("\\boxed{2\\sqrt{2}}", "\\sqrt{8}", True),
        ("\\boxed{3}", "\\frac{1}{2}", False),
        ("first #### 3 then #### 72", "72", True),  # the last answer counts
        ("no final answer, just 72", "72", False),
    ],
)
def test_math_verifier_judges_equivalence(completion: str, gold: str, ok: bool) -> None:
    """GSM8K and \\boxed{} answers are compared by mathematical equivalence (math-verify)."""
    v = verify_math(completion, gold)
    assert v.success is ok, v


def test_math_verify_runs_off_the_main_thread() -> None:
    """math-verify's signal timeout only works on the main thread; actors call from others."""
    out: list[bool] = []
    th = threading.Thread(target=lambda: out.append(math_equal("\\frac{1}{2}", "0.5")))
    th.start()
    th.join(30)
    assert out == [True]


COSTLY = [
    "\\boxed{9^{9^{9}}}",
    "#### 9**9**9**9",
    "\\boxed{99999!}",
    "\\boxed{10^{10^{10}}}",
    "\\boxed{9^9^9}",
    "\\boxed{9^{9}^{9}}",
    "\\boxed{(9^{99})^{99}}",
    "\\boxed{2^{99999999}}",
    "\\boxed{9^(999*999)}",
    "\\boxed{\\binom{10^{30}}{10^{15}}}",
    "\\boxed{" + "9" * 40 + "}",
    "\\boxed{" + "1+" * 200 + "1}",
]


_COSTLY_CHILD = """
import json, sys, threading
from mrl_actors.tasks import verify_math
results = []
for completion in json.loads(sys.stdin.read()):
    out = []
    th = threading.Thread(target=lambda: out.append(verify_math(completion, "5")), daemon=True)
    th.start()
    th.join(timeout=10)
    results.append([th.is_alive(), [v.success for v in out], [v.reason for v in out]])
print(json.dumps(results))
"""


def test_math_verifier_refuses_costly_answers_off_the_main_thread() -> None:
    """Off the main thread nothing interrupts sympy: answers it would evaluate for ever are refused.

    Before the guard, `9^{9^{9}}` made sympy compute the integer holding the GIL, so the verifying
    thread (and the whole process, `join(timeout=...)` included) never came back. Each completion
    is verified in a thread, as rollouts are, inside a child process with a hard time limit so a
    regression fails this test instead of hanging the suite.
    """
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _COSTLY_CHILD],
            input=json.dumps(COSTLY),
            capture_output=True,
            text=True,
            timeout=10 * len(COSTLY) + 60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("verify_math hung on a costly answer (the child process never finished)")
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for completion, (alive, successes, reasons) in zip(COSTLY, results, strict=True):
        assert not alive, f"verify_math hung on {completion[:60]!r}"
        assert successes == [False], (completion[:60], reasons)


def test_too_costly_keeps_ordinary_answers() -> None:
    """The guard passes the answers GSM8K and MATH actually have."""
    ordinary = ["42", "-0.5", "1,000", "10,\\!000", "\\frac{1}{2}", "x^2+2x+1", "2^{10}", "(x+1)^2"]
    ordinary += ["(x^2+1)(x^2-1)", "2\\sqrt{2}", "e^{i\\pi}", "\\binom{10}{3}", "3^{999}"]
    for ok in ordinary:
        assert not too_costly(ok), ok
    assert too_costly("9^{1000}") and too_costly("5!") and too_costly("(2^{3})^{4}")


def test_math_verifier_in_a_thread_still_judges_ordinary_answers() -> None:
    out: list[bool] = []

    def judge() -> None:
        out.append(verify_math("\\boxed{\\frac{1}{2}}", "0.5").success)
        out.append(verify_math("so #### 42", "42").success)
        out.append(verify_math("#### 72.0", "72").success)
        out.append(verify_math("#### 41", "42").success)

    th = threading.Thread(target=judge, daemon=True)
    th.start()
    th.join(timeout=30)
    assert out == [True, True, True, False]


def test_gsm8k_answers_keep_fractions_and_decimals() -> None:
    """`#### 1/2` is one half, not 1 (the number pattern used to stop at the slash)."""
    assert extract_gsm8k("#### 1/2") == "1/2"
    assert extract_gsm8k("#### 2.5 apples") == "2.5"
    assert not verify_math("#### 1/2", "1").success
    assert not verify_math("#### 1.5", "1").success
    assert verify_math("#### 1/2", "0.5").success


def test_extractors() -> None:
    assert extract_gsm8k("a\n#### 1,000\n") == "1000"
    assert extract_gsm8k("nothing") is None
    assert extract_boxed("x \\boxed{\\frac{a}{b}} y") == "\\frac{a}{b}"
    assert extract_boxed("\\boxed{unclosed") is None


def test_arithmetic_verifier() -> None:
    item = TaskItem(prompt_id="a", prompt="7+5", answer="12")
    assert ARITH.verify(" 12\n", item) == Verdict(1.0, True, "correct")
    assert ARITH.verify(" 13\n", item).reason == "wrong_answer"
    assert ARITH.verify(" 123", item).reason == "wrong_answer"  # not a prefix match
    assert ARITH.verify(" twelve", item).reason == "no_answer"
    assert ARITH.verify(" 12.", item).success  # a full stop is not a decimal part


def test_arithmetic_verifier_reads_the_whole_first_number() -> None:
    """`12.5` used to be read as 12; the format is strict, so `12.0` is wrong too."""
    item = TaskItem(prompt_id="a", prompt="7+5", answer="12")
    assert ARITH.verify(" 12.5\n", item).reason == "wrong_answer"
    assert ARITH.verify(" 12.0\n", item).reason == "wrong_answer"
    neg = TaskItem(prompt_id="n", prompt="3-5", answer="-2")
    assert ARITH.verify(" \u22122\n", neg).success  # a Unicode minus is a minus
    assert ARITH.verify(" -2.5\n", neg).reason == "wrong_answer"


def test_countdown_verifier_rules() -> None:
    item = TaskItem(prompt_id="c", prompt="3 5 7 -> 22", answer="3*5+7")
    assert COUNTDOWN.verify("<answer>3*5+7</answer>", item).success
    assert COUNTDOWN.verify("<answer>(7+5)*3-14</answer>", item).reason == "number_not_allowed"
    assert COUNTDOWN.verify("<answer>3*5+3+1</answer>", item).reason == "number_not_allowed"
    assert COUNTDOWN.verify("<answer>3+5+7</answer>", item).reason == "wrong_value"
    assert COUNTDOWN.verify("3*5+7", item).reason == "no_answer"
    assert COUNTDOWN.verify("<answer>3*5+7.0</answer>", item).reason.startswith("invalid")


def test_countdown_items_are_solvable() -> None:
    """Every generated item's reference expression verifies as correct."""
    for item in COUNTDOWN.items(0)[:200]:
        assert COUNTDOWN.verify(COUNTDOWN.target_text(item), item).success, item
    with pytest.raises(ValueError):
        evaluate_expression("2**3")
