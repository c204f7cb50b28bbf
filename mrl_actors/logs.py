"""structlog, configured once for the whole process.

Every line is one event name with bound context (run, actor, policy, seq), rendered as JSON for
machines or as aligned console text for people. Library code calls `get_logger(__name__)` and binds
context; only entry points (the CLI, `mrl-node`) call `configure`.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog

_configured = False


class _CurrentStderr:
    """Writes to whatever `sys.stderr` is at the time of the write, not at configure time.

    Tests and embedding applications swap `sys.stderr`; a logger holding the old (closed)
    stream would raise `ValueError: I/O operation on closed file` on its next line.
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(
    fmt: Literal["console", "json"] = "console", level: str = "info", stream: Any = None
) -> None:
    """Set up structlog once; later calls replace the previous configuration."""
    global _configured
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=stream or _CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    _configured = True


def get_logger(name: str, **context: Any) -> Any:
    """A logger bound to `name` (as `logger`) and any context given."""
    if not _configured:
        configure()
    return _Lazy(name, context)


class _Lazy:
    """Binds at each call, so loggers made at import time (module level) follow a later
    `configure` (the CLI's --log-level, a run's log file) instead of the defaults."""

    __slots__ = ("_context", "_name")

    def __init__(self, name: str, context: dict[str, Any]) -> None:
        self._name = name
        self._context = context

    def bind(self, **more: Any) -> _Lazy:
        return _Lazy(self._name, {**self._context, **more})

    def __getattr__(self, method: str) -> Any:
        return getattr(
            structlog.get_logger(self._name).bind(logger=self._name, **self._context), method
        )
