"""`mrl`: the command line.

Each command group lives in its own module with a `register(subparsers)` function that adds its
parser and sets `handler` to a function `(args) -> int`. Those modules import only the standard
library at top level and load heavy packages inside their handlers, so `mrl --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from mrl_actors import __version__
from mrl_actors.cli import args
from mrl_actors.cli.args import Parser
from mrl_actors.errors import MrlError

T = TypeVar("T")

QUIET = ("log", "status", "report")  # read-only commands: console logs from warning up
# Command groups, in the order `mrl --help` lists them: (module, name).
_GROUPS = ("run", "replay", "log", "thl", "report", "status")


EXAMPLES = """\
examples:
  mrl run runtime/experiments/toy-pair.toml                 train two policies on this machine
  mrl run spec.toml --set policies.gpt2.grpo.lr=1e-4        any spec field from the command line
  mrl log tail runs/toy-pair -f --kind rollout --where 'reward_mean>0.5'
  mrl status runs/toy-pair                                  nodes, slots, versions, backlog
  mrl report runs/toy-pair                                  summary.json, report.html from the log
  mrl replay runs/toy-pair                                  replay and check every weights sha256
  mrl COMMAND --help                                        a command's options and examples

docs: README.md (tour), docs/grpo-and-probes.md (mrl run, the spec), docs/log.md (mrl log),
docs/several-hosts.md (mrl-node, status, report), docs/wire-format.md (reading the log elsewhere)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mrl",
        description="Mutual RL for heterogeneous LLMs over a NATS JetStream log.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mrl-actors {__version__}")
    parser.add_argument(
        "--log-format", choices=["console", "json"], default="console", help="structured log style"
    )
    parser.add_argument(
        "--log-level",
        type=args.log_level,
        default=None,
        help="debug, info, warning or error (default info; warning for the read-only "
        f"commands {', '.join(QUIET)}, whose embedded server's start and stop are not news)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _GROUPS:
        module = importlib.import_module(f"mrl_actors.cli.{name}_cmd")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from mrl_actors import logs

    if args.log_level is None:
        args.log_level = "warning" if args.command in QUIET else "info"
    logs.configure(args.log_format, args.log_level)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("mrl: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("mrl: terminated", file=sys.stderr)
        return 143
    except BaseException as exc:
        if _find(exc, BrokenPipeError) is not None:  # `mrl log tail | head`: read enough
            # stop as a shell tool stopped by SIGPIPE does, without a traceback, and with
            # stdout on /dev/null so that Python's flush at exit does not fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141
        err = unwrap_error(exc)
        if err is None:
            raise
        print(f"mrl: error: {err}", file=sys.stderr)
        return 2


class Terminated(BaseException):
    """SIGTERM arrived; everything was stopped and cleaned up as for Ctrl-C."""


E = TypeVar("E", bound=BaseException)


def _find(exc: BaseException, kind: type[E]) -> E | None:
    """`exc` if it is a `kind`, else the first `kind` an exception group holds (at any depth)."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find(inner, kind)
            if found is not None:
                return found
    return None


def unwrap_error(exc: BaseException) -> MrlError | None:
    """The `MrlError` behind `exc`, also from inside (nested) exception groups: task groups
    wrap what their tasks raise, and the person at the terminal needs the message, not the
    traceback."""
    return _find(exc, MrlError)


def run_until_signal(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """`anyio.run(fn, *args)`, stopped by SIGTERM the way Ctrl-C stops it: the task is
    cancelled, so every `finally` and context exit runs (the embedded server stops, its
    `server.json` goes), then `Terminated` is raised."""
    import signal

    import anyio

    got: list[int] = []
    results: list[T] = []

    async def main() -> None:
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM) as signals:
                    async for signum in signals:
                        got.append(signum)
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(watch)
            results.append(await fn(*args))
            tg.cancel_scope.cancel()

    try:
        anyio.run(main)
    except BaseException as exc:
        if got:  # whatever the stop raised on the way down, it was the signal's doing
            raise Terminated from exc
        raise
    if got:
        raise Terminated
    return results[0]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
