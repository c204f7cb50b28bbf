"""`mrl`: the command line.

Each command group lives in its own module with a `register(subparsers)` function that adds its
parser and sets `handler` to a function `(args) -> int`. Those modules import only the standard
library at top level and load heavy packages inside their handlers, so `mrl --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from mrl_actors import __version__
from mrl_actors.errors import MrlError

# Command groups, in the order `mrl --help` lists them: (module, name).
_GROUPS = ("run", "replay", "log", "thl")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mrl", description="Mutual RL for heterogeneous LLMs over a NATS JetStream log."
    )
    parser.add_argument("--version", action="version", version=f"mrl-actors {__version__}")
    parser.add_argument(
        "--log-format", choices=["console", "json"], default="console", help="structured log style"
    )
    parser.add_argument("--log-level", default="info", help="debug, info, warning or error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _GROUPS:
        module = importlib.import_module(f"mrl_actors.cli.{name}_cmd")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from mrl_actors import logs

    logs.configure(args.log_format, args.log_level)
    try:
        return int(args.handler(args) or 0)
    except MrlError as exc:
        print(f"mrl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mrl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
