"""Argument types for `mrl` and `mrl-node`: every value is checked while the line is parsed.

Each function takes the argument's text and returns its value, or raises ArgumentTypeError with
what was wrong and what is expected; argparse then says which argument it was, and exits 2.
`Parser` prints that as one line (`mrl: error: argument --seq: must be >= 1, got 0`), as every
other CLI error is printed, instead of argparse's usage block.

Standard library only at import time (the heavy modules load inside the functions that need them),
so `mrl --help` stays instant.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

_TOKEN = re.compile(r"[A-Za-z0-9_-]+")  # one NATS subject token: no '.', '*', '>' or spaces


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, `<tool>: error: ...`, exit status 2."""

    def error(self, message: str) -> NoReturn:
        tool, _, sub = self.prog.partition(" ")
        self.exit(2, f"{tool}: error: {sub + ': ' if sub else ''}{message}\n")


def int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An integer in [lo, hi]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            rule = f">= {lo}" if hi is None else f"in [{lo}, {hi:_}]"
            raise argparse.ArgumentTypeError(f"must be {rule}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def seeds(text: str) -> list[int]:
    """Comma-separated seeds, each an integer in [0, 2**63 - 1], none twice."""
    parts = [p.strip() for p in text.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    values = [int_in(0, 2**63 - 1)(p) for p in parts]
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"a seed is given twice: {text!r}")
    return values


def token(text: str) -> str:
    """One subject token (a policy, node or run name): letters, digits, '_' and '-' only."""
    if not _TOKEN.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a name: use letters, digits, '_' or '-' (no '.', '*', '>' or spaces)"
        )
    return text


def event_kind(text: str) -> str:
    """An event kind the log knows (`mrl_actors.events.KINDS`)."""
    from mrl_actors.events import KINDS

    if text not in KINDS:
        raise argparse.ArgumentTypeError(
            f"unknown event kind {text!r}: use one of {', '.join(sorted(KINDS))}"
        )
    return text


def where(text: str) -> Any:
    """A field predicate (`reward>0.5`, `text~boxed`), its regular expression compiled now."""
    from mrl_actors.errors import ConfigError
    from mrl_actors.see.inspect import parse_where

    try:
        pred = parse_where(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if pred.op == "~":
        try:
            re.compile(str(pred.value))
        except re.error as exc:
            raise argparse.ArgumentTypeError(
                f"{text!r}: {str(pred.value)!r} is not a regular expression ({exc})"
            ) from None
    return pred


def since(text: str) -> Any:
    """A start time: `10m`, `2h`, `1d` ago or an ISO time (a datetime in UTC)."""
    from mrl_actors.errors import ConfigError
    from mrl_actors.see.inspect import parse_since

    try:
        return parse_since(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def existing_dir(text: str) -> Path:
    """A directory that exists."""
    path = Path(text)
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"{text} {what}")
    return path


def tokenizer_source(text: str) -> str:
    """A tokenizer directory that exists, or a built-in name (`builtin:gpt2-bpe`)."""
    if text.startswith("builtin:"):
        from mrl_actors.errors import ConfigError
        from mrl_actors.models.builtin import builtin_name

        try:
            builtin_name(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc
        return text
    return str(existing_dir(text))


def spec_file(text: str) -> Path:
    """A spec file that exists (its contents are checked by `load_spec`)."""
    path = Path(text)
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"{text} {what}")
    return path


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def log_level(text: str) -> str:
    """A structlog level name, any case."""
    if text.lower() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r}: use one of {', '.join(LOG_LEVELS)}")
    return text.lower()


def token_list(text: str) -> str:
    """Comma-separated names, each a `token`; returned as given (the caller splits it).

    Empty means "none given" (the default).
    """
    if not text:
        return text
    for part in text.split(","):
        token(part.strip())
    return text


def report_backends(text: str) -> list[str]:
    """Comma-separated tracking backends (`wandb,mlflow`), each known, none twice."""
    from mrl_actors.errors import ConfigError
    from mrl_actors.report.reporters import check_report_to

    names = [part.strip() for part in text.split(",")]
    try:
        check_report_to("--to", names)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--to: ")) from None
    return names


def server_urls(text: str) -> str:
    """Comma-separated NATS URLs (`nats://host:4222`, or `host:4222`); returned as given.

    Empty means "none given" (the default).
    """
    if not text:
        return text
    for part in text.split(","):
        part = part.strip()
        scheme = part.partition("://")[0] if "://" in part else "nats"
        if not part or any(c.isspace() for c in part) or scheme not in _SCHEMES:
            raise argparse.ArgumentTypeError(
                f"{part!r} is not a NATS URL: use nats://HOST:PORT (or tls://, ws://, wss://)"
            )
    return text


_SCHEMES = ("nats", "tls", "ws", "wss")


def host_token() -> str:
    """This host's name as one subject token (dots and other characters become '-')."""
    import socket

    return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname()) or "node"


def add_set_option(parser: argparse.ArgumentParser, help: str) -> None:
    """`--set KEY=VALUE`, repeatable, into `args.sets` (applied by `cli.compose`)."""
    parser.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help=help
    )


def add_metrics_options(parser: argparse.ArgumentParser) -> None:
    """`--metrics-port N [--metrics-host H]`: serve the run's Prometheus metrics (default off)."""
    parser.add_argument(
        "--metrics-port",
        type=int_in(0, 65535),
        metavar="N",
        help="serve the run's Prometheus metrics on this port while the node runs "
        "(0: a free port, logged as metrics_served); default: no metrics server",
    )
    parser.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="H",
        help="address the metrics server binds (default 127.0.0.1; 0.0.0.0 for every interface)",
    )


def metrics_config(args: argparse.Namespace) -> Any:
    """The `MetricsConfig` of `add_metrics_options`' arguments, or None without --metrics-port."""
    if args.metrics_port is None:
        return None
    from mrl_actors.report.metrics import MetricsConfig

    return MetricsConfig(host=args.metrics_host, port=args.metrics_port)
