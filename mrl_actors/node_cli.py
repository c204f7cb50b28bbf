"""`mrl-node`: host some of a run's policies on this machine, against a server given by URL.

`mrl run` is one machine: it starts the embedded server and one node in its own process. On
several hosts, each host runs `mrl-node` against the same JetStream server or cluster, hosting
the policies named for it (`--policies`); the log is the only thing the nodes share. Credentials
come from `MRL_NATS_*` environment variables (see `mrl_actors/connection.py`), never from the
spec or the log. Without `--server`, the node joins the live server of `--run-dir` (its
`server.json`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mrl_actors.cli import args as types


def build_parser() -> argparse.ArgumentParser:
    parser = types.Parser(
        prog="mrl-node", description="Host a run's policy actors on this machine."
    )
    parser.add_argument("spec", type=types.spec_file, help="the run's experiment spec (TOML)")
    parser.add_argument(
        "--run-dir", type=Path, required=True, help="checkpoints go here (local to this host)"
    )
    parser.add_argument(
        "--server",
        type=types.server_urls,
        default="",
        help="NATS URL(s), comma-separated for a cluster",
    )
    parser.add_argument(
        "--policies",
        type=types.token_list,
        default="",
        help="comma-separated policy names to host (default: all)",
    )
    parser.add_argument(
        "--node", type=types.token, default=types.host_token(), help="this node's name"
    )
    parser.add_argument("--log-format", choices=["console", "json"], default="json")
    parser.add_argument("--log-level", type=types.log_level, default="info")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from mrl_actors import logs
    from mrl_actors.errors import MrlError

    logs.configure(args.log_format, args.log_level)
    try:
        import anyio

        anyio.run(_serve, args)
    except MrlError as exc:
        print(f"mrl-node: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


async def _serve(args: argparse.Namespace) -> None:
    from contextlib import AsyncExitStack

    from mrl_actors.connection import ConnectionConfig, connect
    from mrl_actors.errors import ConfigError
    from mrl_actors.log import EventLog, LogConfig
    from mrl_actors.node import run_node
    from mrl_actors.server import open_run_dir
    from mrl_actors.spec import load_spec

    spec, _ = load_spec(args.spec)
    hosted = [p for p in args.policies.split(",") if p] or None
    unknown = set(hosted or ()) - {p.name for p in spec.policies}
    if unknown:
        raise ConfigError(f"--policies names {sorted(unknown)}, not in {args.spec}")
    async with AsyncExitStack() as stack:
        if args.server:
            cfg = ConnectionConfig.from_env(url=args.server)
        else:
            info = await stack.enter_async_context(open_run_dir(args.run_dir))
            cfg = ConnectionConfig(url=info.url, token=info.token)
        nc = await connect(cfg)
        stack.push_async_callback(nc.close)
        log = await EventLog.open(nc, spec.run.name, LogConfig(replicas=spec.server.replicas))
        args.run_dir.mkdir(parents=True, exist_ok=True)
        await run_node(log, spec, args.run_dir, node=args.node, policies=hosted)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
