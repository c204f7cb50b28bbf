"""`mrl replay RUN_DIR`: replay a run's learners from its log, exactly or under another probe.

Exact replay (the default) rebuilds each policy from its `step-0` checkpoint, re-feeds every
learner step the events it recorded, and checks the weights' sha256 against the one the step
logged: a mismatch fails with `mrl: error: <policy> step <k>: ...` and exit status 2. On CPU the
match is bitwise (the replay uses the run's thread count).

`--probe X` is a counterfactual replay (`mrl_actors.run.counterfactual`): the same logged experience
through probe X's update rule, side by side with the exact replay; it writes
`RUN_DIR/counterfactual-X.json` and `.html` (per step: loss, gradient norm, L2 distance to the
logged weights; at the end: held-out accuracy of both).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mrl_actors.probes.registry import PROBE_NAMES

if TYPE_CHECKING:
    from mrl_actors.see.port import LogPort


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "replay",
        help="replay a run's learners from its log (checks every weights sha256)",
        description="Re-feed each policy's logged learner inputs from its step-0 checkpoint.",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run directory")
    parser.add_argument(
        "--server", help="read the log from this NATS URL (credentials from MRL_NATS_*)"
    )
    parser.add_argument(
        "--run",
        help="the run id on the server (default: the one in RUN_DIR/spec.toml); without a "
        "spec.toml in RUN_DIR the spec is read from the log's RunStarted event",
    )
    parser.add_argument("--policy", action="append", help="only this policy (repeatable)")
    parser.add_argument(
        "--verify",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="check each step's weights sha256 against the log (default: on)",
    )
    parser.add_argument(
        "--probe",
        choices=PROBE_NAMES,
        help="counterfactual: the same experience through this probe; writes a report page",
    )
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    import anyio

    from mrl_actors.errors import ConfigError
    from mrl_actors.run.runner import SPEC_FILE, resume_spec

    if (args.run_dir / SPEC_FILE).exists():
        spec, _ = resume_spec(args.run_dir)
        if args.run and args.run != spec.run.name:
            raise ConfigError(
                f"--run {args.run!r}: {args.run_dir}/{SPEC_FILE} is run {spec.run.name!r}"
            )
    else:
        spec = anyio.run(_logged_spec, args)
    names = [p.name for p in spec.policies]
    unknown = sorted(set(args.policy or ()) - set(names))
    if unknown:
        raise ConfigError(f"--policy {unknown[0]!r}: the run's policies are {names}")
    chosen = [p for p in spec.policies if not args.policy or p.name in args.policy]
    if args.probe and not args.verify:
        raise ConfigError("--probe replays the logged run exactly beside it: drop --no-verify")
    return anyio.run(_replay, args, spec, chosen)


async def _logged_spec(args: argparse.Namespace) -> Any:
    """The spec a run was started with, from its log's RunStarted (a host whose directory
    has no spec.toml: it hosted none of the run, or ran an older `mrl-node`)."""
    from mrl_actors.errors import ConfigError
    from mrl_actors.events import RunStarted
    from mrl_actors.see.access import open_log
    from mrl_actors.spec import parse_spec

    where: dict[str, Any] = {"server": args.server} if args.server else {"run_dir": args.run_dir}
    async with open_log(run=args.run, **where) as log:
        async for rec in log.read(kinds=["run"]):
            if isinstance(rec.event, RunStarted):
                # in the mode the run used: its text may leave it out (the default changed)
                text, mode = rec.event.spec_toml, rec.event.run_mode
                return parse_spec(text, source="the log's RunStarted", mode=mode)
    raise ConfigError(f"{args.run_dir} has no spec.toml and the log has no RunStarted event")


async def _replay(args: argparse.Namespace, spec: Any, chosen: list[Any]) -> int:
    from mrl_actors.run.node import set_heap, set_threads
    from mrl_actors.see.access import open_log

    set_threads(spec)  # the run's float arithmetic: bitwise replay needs the same thread count
    set_heap(spec)
    where: dict[str, Any] = {"server": args.server} if args.server else {"run_dir": args.run_dir}
    async with open_log(run=args.run or spec.run.name, **where) as log:
        if args.probe:
            await _counterfactual(log, args, spec, chosen)
        else:
            await _exact(log, args, spec, chosen)
    return 0


async def _exact(log: LogPort, args: argparse.Namespace, spec: Any, chosen: list[Any]) -> None:
    import anyio

    from mrl_actors.actors.learner_ranks import hosted_ranks
    from mrl_actors.actors.replay import replay
    from mrl_actors.run.counterfactual import start_runtime

    for p in chosen:
        if p.learner_slots > 1:  # as many ranks as the run's learner: bitwise on CPU
            async with hosted_ranks(spec, p.name, args.run_dir) as lead:
                n = await replay(log, lead, verify=args.verify)
        else:
            rt = await anyio.to_thread.run_sync(start_runtime, spec, p, args.run_dir)
            n = await replay(log, rt, verify=args.verify)
        what = "every weights sha256 matches the log" if args.verify else "not verified"
        print(f"{p.name}: {n} steps replayed, {what}")


async def _counterfactual(
    log: LogPort, args: argparse.Namespace, spec: Any, chosen: list[Any]
) -> None:
    import json

    from mrl_actors.report.summary import render_counterfactual_html
    from mrl_actors.run.counterfactual import counterfactual

    results = [await counterfactual(log, spec, args.run_dir, p, args.probe) for p in chosen]
    page = {"run": spec.run.name, "probe": args.probe, "policies": results}
    base = args.run_dir / f"counterfactual-{args.probe}"
    base.with_suffix(".json").write_text(json.dumps(page, indent=2), encoding="utf-8")
    base.with_suffix(".html").write_text(render_counterfactual_html(page), encoding="utf-8")
    print(f"{'policy':<10} {'logged':>10} {'acc':>6} {args.probe:>10} {'acc':>6} {'dist':>9}")
    for r in results:
        last = r["steps"][-1]["distance"] if r["steps"] else 0.0
        acc_l = r["final"]["logged"]["eval_accuracy"]
        acc_c = r["final"]["counterfactual"]["eval_accuracy"]
        print(
            f"{r['policy']:<10} {r['logged_probe']:>10} {acc_l:>6.3f} {args.probe:>10} "
            f"{acc_c:>6.3f} {last:>9.4f}"
        )
    print(f"report: {base.with_suffix('.html')}")
