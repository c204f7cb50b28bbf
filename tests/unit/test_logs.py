"""Logging is configured once at the entry point, and loggers made earlier follow it."""

from __future__ import annotations

import io

from mrl_actors import logs


def test_loggers_made_before_configure_follow_it() -> None:
    early = logs.get_logger("test.early", actor="a")  # as a module-level logger would be
    out = io.StringIO()
    logs.configure("json", "warning", stream=out)
    early.info("hidden")
    early.warning("shown", seq=7)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and '"shown"' in lines[0]
    assert (
        '"actor": "a"' in lines[0]
        and '"seq": 7' in lines[0]
        and '"logger": "test.early"' in lines[0]
    )
    logs.configure()
