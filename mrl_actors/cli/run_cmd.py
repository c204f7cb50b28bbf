"""`mrl run SPEC.toml`: train a spec's policies together on this machine (see `runner.py`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mrl_actors.checks import MAX_STEPS
from mrl_actors.cli import args as types
from mrl_actors.probes.registry import PROBE_NAMES


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "run",
        help="run an experiment spec on this machine (embedded NATS server, one node)",
        description="Train the spec's policies concurrently, sharing experience through the log.",
    )
    parser.add_argument("spec", nargs="?", type=types.spec_file, help="experiment spec (TOML)")
    parser.add_argument("--out", type=Path, help="run directory (default: runs/<run name>)")
    parser.add_argument(
        "--resume",
        type=types.existing_dir,
        metavar="RUN_DIR",
        help="continue a stopped or killed run",
    )
    parser.add_argument(
        "--compare", action="store_true", help="run the spec under every probe, print the table"
    )
    parser.add_argument(
        "--seeds",
        type=types.seeds,
        default=[],
        help="with --compare: comma-separated seeds (default: 0,1,2,3,4)",
    )
    parser.add_argument("--probe", choices=PROBE_NAMES, help="override run.probe")
    parser.add_argument(
        "--steps", type=types.int_in(1, MAX_STEPS), help="override run.steps (>= 1)"
    )
    parser.add_argument(
        "--stop-after", type=types.int_in(1), help=argparse.SUPPRESS
    )  # take this many steps per policy and exit as if stopped (resume tests)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    types.add_metrics_options(parser)
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    import os
    import sys

    import msgspec

    from mrl_actors import logs
    from mrl_actors.cli import run_until_signal
    from mrl_actors.errors import ConfigError
    from mrl_actors.run.runner import compare, resume_spec, run_once
    from mrl_actors.spec import load_spec

    metrics = types.metrics_config(args)
    if args.seeds and not args.compare:
        raise ConfigError("--seeds goes with --compare")
    if args.resume:
        if args.spec or args.compare:
            raise ConfigError("--resume RUN_DIR takes no spec and no --compare")
        spec, text = resume_spec(args.resume)
        out = args.resume
    elif args.spec is None:
        raise ConfigError("mrl run needs a SPEC.toml (or --resume RUN_DIR)")
    else:
        spec, text = load_spec(args.spec)
        out = args.out or Path("runs") / spec.run.name
    if args.probe is not None or args.steps is not None:
        run = msgspec.structs.replace(
            spec.run,
            probe=spec.run.probe if args.probe is None else args.probe,
            steps=spec.run.steps if args.steps is None else args.steps,
        )
        spec = msgspec.structs.replace(spec, run=run)
        text += (
            f"\n# overridden on the command line: run.probe = {run.probe!r}, steps = {run.steps}\n"
        )
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # our bars, not per-file ones
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    log_file = open(out / "run.log", "a", encoding="utf-8")  # noqa: SIM115 - closed below
    logs.configure("json", args.log_level, stream=log_file)
    bars = _Bars(enabled=not args.no_progress, total=spec.run.steps)
    try:
        if args.compare:
            seeds = args.seeds or [0, 1, 2, 3, 4]
            run_until_signal(
                lambda: compare(
                    spec,
                    text,
                    out,
                    seeds=seeds,
                    on_step=bars.step,
                    on_run=bars.reset,
                    metrics=metrics,
                )
            )
            bars.close()  # before printing, so the table is not drawn over
            print((out / "compare.md").read_text(encoding="utf-8"), end="")
            print(f"runs and reports: {out}/<probe>-s<seed>/report.html")
        else:
            summary = run_until_signal(
                lambda: run_once(
                    spec,
                    text,
                    out,
                    on_step=bars.step,
                    stop_after=args.stop_after,
                    metrics=metrics,
                )
            )
            bars.close()  # before printing, so the summary is not drawn over
            _print_summary(summary, out)
    finally:
        bars.close()
        log_file.close()
    sys.stdout.flush()
    return 0


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    print(f"run {summary['run'].get('name')} ({summary['run'].get('probe')}): {out}")
    print(f"{'policy':<12} {'steps':>5} {'acc@0':>7} {'acc':>7} {'reward':>7}")
    for name, p in sorted(summary["policies"].items()):
        acc0, acc = p.get("initial_accuracy"), p.get("final_accuracy")
        reward = p.get("final", {}).get("reward_mean")
        print(f"{name:<12} {p.get('steps', 0):>5} {_f(acc0):>7} {_f(acc):>7} {_f(reward):>7}")
    print(f"report: {out / 'report.html'}")


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


class _Bars:
    """One tqdm bar per policy on stderr, showing reward and accuracy as steps complete."""

    def __init__(self, *, enabled: bool, total: int) -> None:
        self.enabled = enabled
        self.total = total
        self.bars: dict[str, object] = {}
        self.prefix = ""

    def reset(self, run: str) -> None:
        self.close()
        self.prefix = run

    def step(self, policy: str, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        bar = self.bars.get(policy)
        if bar is None:
            desc = f"{self.prefix} {policy}".strip()
            bar = tqdm(total=self.total, desc=desc, position=len(self.bars), leave=True)
            self.bars[policy] = bar
        post = {"reward": f"{metrics.get('reward_mean', 0.0):.2f}"}
        if "eval_accuracy" in metrics:
            post["acc"] = f"{metrics['eval_accuracy']:.2f}"
        bar.set_postfix(post)  # type: ignore[attr-defined]
        bar.n = step  # type: ignore[attr-defined]
        bar.refresh()  # type: ignore[attr-defined]

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()  # type: ignore[attr-defined]
        self.bars = {}
