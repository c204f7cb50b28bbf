"""`mrl-node`: host some of a run's policies on this machine, against a server given by URL.

`mrl run` is one machine: it starts the embedded server and one node in its own process. On
several hosts, each host runs `mrl-node` against the same JetStream server or cluster, hosting
the policies named for it (`--policies`); the log is the only thing the nodes share. Credentials
come from `MRL_NATS_*` environment variables (see `mrl_actors/see/connection.py`), never from the
spec or the log: on a cluster the operator gives each node a user whose permissions are
`mrl_actors.see.auth.node_permissions` (its policies' subjects and its own node subject). Without
`--server`, the node joins the live server of `--run-dir` (its `server.json`), each policy as
its own user. SIGTERM stops it like Ctrl-C; a lost server ends it with one error line.
`--metrics-port N` serves the run's Prometheus metrics (`mrl_actors.report.metrics`) while it runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mrl_actors.cli import args as types


def build_parser() -> argparse.ArgumentParser:
    parser = types.Parser(
        prog="mrl-node", description="Host a run's policy actors on this machine."
    )
    parser.add_argument("spec", type=types.spec_file, help="the run's experiment spec (TOML)")
    types.add_set_option(
        parser, "set a spec field as `mrl run --set` does (every node of a run must agree)"
    )
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
    parser.add_argument(
        "--slots",
        default="",
        help="the slots this node offers: 'cuda:0,cuda:1' (GPUs) or 'cpu:N' (N CPU slots); "
        "default every visible GPU, else one CPU slot",
    )
    parser.add_argument(
        "--liveness-s",
        type=float,
        default=None,
        help="seconds between this node's heartbeats (NodeHeartbeat events); default the "
        "spec's [mwra] liveness_interval_s (10)",
    )
    types.add_metrics_options(parser)
    parser.add_argument("--log-format", choices=["console", "json"], default="json")
    parser.add_argument("--log-level", type=types.log_level, default="info")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from mrl_actors import logs
    from mrl_actors.cli import Terminated, run_until_signal, unwrap_error
    from mrl_actors.see.connection import redact

    logs.configure(args.log_format, args.log_level)
    try:
        run_until_signal(_serve, args)
    except KeyboardInterrupt:
        return 130
    except Terminated:
        return 143
    except BaseException as exc:
        err = unwrap_error(exc)
        if err is None:
            raise
        print(f"mrl-node: error: {redact(str(err))}", file=sys.stderr)
        return 2
    return 0


async def _serve(args: argparse.Namespace) -> None:
    from contextlib import AsyncExitStack

    from mrl_actors.cli.compose import compose_spec, write_effective_spec
    from mrl_actors.errors import ConfigError
    from mrl_actors.run.node import run_node
    from mrl_actors.run.placement import parse_slots
    from mrl_actors.run.start import open_run_log, record_start
    from mrl_actors.see.access import ends_if_server_lost
    from mrl_actors.see.server import open_run_dir

    spec, spec_text = compose_spec([args.spec], args.sets)
    slots = parse_slots(args.slots)
    if args.liveness_s is not None and not 0.1 <= args.liveness_s <= 3600:
        raise ConfigError(f"--liveness-s {args.liveness_s}: must be in [0.1, 3600] seconds")
    hosted = [p for p in args.policies.split(",") if p] or None
    unknown = set(hosted or ()) - {p.name for p in spec.policies}
    if unknown:
        raise ConfigError(f"--policies names {sorted(unknown)}, not in {args.spec}")
    names = [p.name for p in spec.policies]
    async with AsyncExitStack() as stack:
        if args.server:
            where: dict[str, Any] = {"server": args.server}
        else:  # the run directory's live server, or one started here for as long as we run
            info = await stack.enter_async_context(
                open_run_dir(args.run_dir, run=spec.run.name, policies=names)
            )
            where = {"info": info}
        on_lost = await stack.enter_async_context(
            ends_if_server_lost("restart mrl-node once the server is back")
        )
        # By URL one user (MRL_NATS_*) hosts every policy here; by run directory the node
        # writes its own events as admin and each policy connects as its own user.
        log, log_for = await open_run_log(spec, stack, on_lost, **where)
        args.run_dir.mkdir(parents=True, exist_ok=True)
        write_effective_spec(args.run_dir, spec)  # `mrl replay`/`mrl report` read it here too
        await record_start(log, spec, spec_text)
        await run_node(
            log,
            spec,
            args.run_dir,
            node=args.node,
            policies=hosted,
            slots=slots,
            log_for=log_for,
            liveness_s=args.liveness_s,
            metrics=types.metrics_config(args),
        )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
