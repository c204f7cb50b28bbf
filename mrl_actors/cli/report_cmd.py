"""`mrl report RUN_DIR|--server URL`: `summary.json` and `report.html` from the log alone.

A run on several hosts has no one directory that holds it: its log does. This folds the log
(`mrl_actors.report.summary.summarize`) the
way `mrl run` does at its end, for a live or a finished run.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mrl_actors.cli import args as types


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write summary.json and report.html from a run's log")
    p.add_argument("run_dir", nargs="?", type=Path, help="run directory (holds nats/)")
    p.add_argument("--server", metavar="URL", type=types.server_urls, help="NATS URL(s)")
    p.add_argument("--run", type=types.token, help="run id (default: the only one there)")
    p.add_argument("--out", type=Path, help="directory to write (default: the run directory)")
    p.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    import anyio

    from mrl_actors.errors import ConfigError

    if (args.run_dir is None) == (args.server is None):
        raise ConfigError("give a run directory or --server URL (one of them)")
    out = args.out or args.run_dir
    if out is None:
        raise ConfigError("--out DIR is needed with --server")
    summary = anyio.run(build, args.run_dir, args.server, args.run)
    write(summary, out)
    print(f"wrote {out / 'summary.json'} and {out / 'report.html'}")
    return 0


async def build(run_dir: Path | None, server: str | None, run: str | None) -> dict[str, Any]:
    """The run's summary, folded from every event in its log (bad messages skipped, counted)."""
    from mrl_actors.events import RunStarted
    from mrl_actors.report.summary import summarize
    from mrl_actors.see.access import open_log
    from mrl_actors.see.inspect import tool_dead_letters

    async with open_log(run_dir=run_dir, server=server, run=run) as log:
        dead = tool_dead_letters(log)
        events = [rec.event async for rec in log.read(start_seq=1, dead_letters=dead)]
    summary = summarize(events)
    started = [e for e in events if isinstance(e, RunStarted)]
    if started and started[0].probes:
        summary["run"]["probe"] = started[0].probes[0]
    return summary


def write(summary: dict[str, Any], out: Path) -> None:
    import json

    from mrl_actors.report.summary import render_html

    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (out / "report.html").write_text(render_html(summary), encoding="utf-8")
