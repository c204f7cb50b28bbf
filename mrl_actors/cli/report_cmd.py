"""`mrl report RUN_DIR|--server URL [--to wandb,mlflow]`: `summary.json` and `report.html`
from the log alone, and the run sent to tracking tools.

A run on several hosts has no one directory that holds it: its log does. This folds the log
(`mrl_actors.report.summary.summarize`) the way `mrl run` does at its end, for a live or a
finished run. `--to` feeds the same events to the tracking backends
(`mrl_actors.report.reporters`), as `[run] report_to` does live: a run made without them can be
looked at in W&B, MLflow, trackio or TensorBoard afterwards, its hyperparameters the effective
spec its `RunStarted` recorded.
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
    p.add_argument(
        "--to",
        type=types.report_backends,
        default=[],
        metavar="NAME[,NAME]",
        help="also send the run to these tracking tools: tensorboard, wandb, mlflow, trackio "
        "(what each writes where: docs/mwra.md#tracking-tools)",
    )
    p.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    import anyio

    from mrl_actors.errors import ConfigError

    if (args.run_dir is None) == (args.server is None):
        raise ConfigError("give a run directory or --server URL (one of them)")
    out = args.out or args.run_dir
    if out is None:
        raise ConfigError("--out DIR is needed with --server")
    if args.to:
        from mrl_actors.report.reporters import check_installed

        check_installed(args.to, field="--to")
    events = anyio.run(read_events, args.run_dir, args.server, args.run)
    summary = summarize_events(events)
    write(summary, out)
    print(f"wrote {out / 'summary.json'} and {out / 'report.html'}")
    if args.to:
        send(events, args.to, out, summary["run"].get("name") or args.run or "run")
        print(f"sent to {', '.join(args.to)} (under {out})")
    return 0


async def read_events(run_dir: Path | None, server: str | None, run: str | None) -> list[Any]:
    """Every event of the run's log (bad messages skipped, counted)."""
    from mrl_actors.see.access import open_log
    from mrl_actors.see.inspect import tool_dead_letters

    async with open_log(run_dir=run_dir, server=server, run=run) as log:
        dead = tool_dead_letters(log)
        return [rec.event async for rec in log.read(start_seq=1, dead_letters=dead)]


async def build(run_dir: Path | None, server: str | None, run: str | None) -> dict[str, Any]:
    """The run's summary, folded from every event in its log."""
    return summarize_events(await read_events(run_dir, server, run))


def summarize_events(events: list[Any]) -> dict[str, Any]:
    from mrl_actors.events import RunStarted
    from mrl_actors.report.summary import summarize

    summary = summarize(events)
    started = [e for e in events if isinstance(e, RunStarted)]
    if started and started[0].probes:
        summary["run"]["probe"] = started[0].probes[0]
    return summary


def send(events: list[Any], backends: list[str], out: Path, run: str) -> None:
    """The run's events through `LogReport` into each backend, then finished."""
    from mrl_actors.report.reporters import LogReport, open_reporter
    from mrl_actors.report.tensorboard import spec_hparams

    reporters = [open_reporter(name, out, run) for name in backends]
    report = LogReport(reporters, spec_of=logged_spec, hparams=spec_hparams)
    for event in events:
        report.feed(event)
    report.finish()


def logged_spec(started: Any) -> Any:
    """The effective spec of a run from its `RunStarted`: the spec text it recorded, with the
    probe, seed and name it ran under (a `--compare` sub-run's are not in the text); None,
    logged, when that text no longer parses (the hyperparameters are then left out)."""
    from mrl_actors.errors import ConfigError
    from mrl_actors.logs import get_logger
    from mrl_actors.spec import parse_spec

    try:
        spec = parse_spec(started.spec_toml, source=f"the RunStarted of {started.run}")
    except ConfigError as exc:
        get_logger(__name__).warning("report.spec_unreadable", error=str(exc))
        return None
    probe = started.probes[0] if started.probes else spec.run.probe
    return spec.with_probe(probe, seed=started.seed, name=started.run)


def write(summary: dict[str, Any], out: Path) -> None:
    import json

    from mrl_actors.report.summary import render_html

    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (out / "report.html").write_text(render_html(summary), encoding="utf-8")
