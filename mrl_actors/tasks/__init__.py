"""Tasks and verifiers: synthetic arithmetic, countdown, and math datasets from local files.

`make_task(cfg)` turns a config Struct into a task; every task follows `base.Task`.
"""

from __future__ import annotations

import msgspec

from mrl_actors.checks import fail
from mrl_actors.errors import ConfigError
from mrl_actors.tasks.arithmetic import ArithmeticConfig, ArithmeticTask
from mrl_actors.tasks.base import Task, TaskItem, Verdict, derive_seed
from mrl_actors.tasks.countdown import CountdownConfig, CountdownTask
from mrl_actors.tasks.math import MathConfig, MathTask, verify_math

TASK_KINDS = ("arithmetic", "countdown", "math")  # what `make_task` builds


class TaskConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which task a policy trains on; only the block for `kind` is read."""

    # "arithmetic" (synthetic), "countdown" (synthetic) or "math" (local GSM8K/MATH-style file).
    kind: str = "arithmetic"
    # Settings of the synthetic arithmetic task.
    arithmetic: ArithmeticConfig = msgspec.field(default_factory=ArithmeticConfig)
    # Settings of the countdown task.
    countdown: CountdownConfig = msgspec.field(default_factory=CountdownConfig)
    # Settings of a math dataset; required when kind == "math".
    math: MathConfig | None = None

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            fail("kind", "one of " + ", ".join(TASK_KINDS), self.kind)
        if self.kind == "math" and self.math is None:
            fail("math", "a [task.math] block with `path` when kind = 'math'", None)


def make_task(cfg: TaskConfig) -> Task:
    """The task `cfg` describes; raises ConfigError on an unknown kind or missing block."""
    if cfg.kind == "arithmetic":
        return ArithmeticTask(cfg.arithmetic)
    if cfg.kind == "countdown":
        return CountdownTask(cfg.countdown)
    if cfg.kind == "math":
        if cfg.math is None:
            raise ConfigError(
                "task.kind = 'math' needs a [task.math] block with `train` and `test` files "
                "(or one `path`)"
            )
        return MathTask(cfg.math)
    raise ConfigError(f"unknown task.kind {cfg.kind!r}: use arithmetic, countdown or math")


__all__ = [
    "ArithmeticConfig",
    "ArithmeticTask",
    "CountdownConfig",
    "CountdownTask",
    "MathConfig",
    "MathTask",
    "Task",
    "TaskConfig",
    "TaskItem",
    "Verdict",
    "derive_seed",
    "make_task",
    "verify_math",
]
