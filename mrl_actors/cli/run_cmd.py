"""`mrl run SPEC.toml`: train a spec's policies together on this machine (see `runner.py`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mrl_actors.checks import MAX_STEPS
from mrl_actors.cli import args as types
from mrl_actors.probes.registry import PROBE_NAMES

EXAMPLES = """\
examples:
  mrl run runtime/experiments/toy-pair.toml                       the CPU demo (async system)
  mrl run spec.toml --set policies.gpt2.grpo.lr=1e-4 --set run.steps=20
  mrl run base.toml gpu.toml --dry-run                            print the composed spec
  mrl run spec.toml --compare --seeds 0,1,2 --out runs/cmp        every probe x seed, then the table
  mrl run --resume runs/toy-pair                                  continue a stopped or killed run

--set KEY=VALUE sets any spec field (a TOML value; bare text is a string); policies by name:
policies.NAME.FIELD. Several spec files are merged in order ([[policies]] by name).
docs: docs/grpo-and-probes.md#mrl-run (options), #the-spec (every field), #checked-inputs
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "run",
        help="run an experiment spec on this machine (embedded NATS server, one node)",
        description="Train the spec's policies concurrently, sharing experience through the log.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "spec",
        nargs="*",
        type=types.spec_file,
        help="experiment spec (TOML); several are merged in order, later ones win",
    )
    types.add_set_option(
        parser, "set any spec field: policies.gpt2.grpo.lr=1e-4 (repeatable; checked as the file)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the effective spec (TOML) and exit"
    )
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
    parser.add_argument(
        "--probe", choices=PROBE_NAMES, help="override run.probe (as --set run.probe=P)"
    )
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

    from mrl_actors import logs
    from mrl_actors.cli import run_until_signal
    from mrl_actors.cli.compose import compose_spec
    from mrl_actors.errors import ConfigError
    from mrl_actors.run.runner import SPEC_FILE, compare, resume_spec, run_once
    from mrl_actors.spec import effective_toml

    metrics = types.metrics_config(args)
    if args.seeds and not args.compare:
        raise ConfigError("--seeds goes with --compare")
    sets = list(args.sets)
    if args.probe is not None:
        sets.append(f"run.probe={args.probe}")
    if args.steps is not None:
        sets.append(f"run.steps={args.steps}")
    if args.resume:
        if args.spec or args.compare or sets:
            raise ConfigError(
                "--resume RUN_DIR takes no spec, no --compare and no overrides: it continues "
                "the run as its spec.toml says"
            )
        spec, text = resume_spec(args.resume)
        out = args.resume
    elif not args.spec:
        raise ConfigError("mrl run needs a SPEC.toml (or --resume RUN_DIR)")
    else:
        spec, text = compose_spec(args.spec, sets)
        out = args.out or Path("runs") / spec.run.name
        if args.dry_run:
            print(effective_toml(spec), end="")
            return 0
        _refuse_existing_run(out, args.compare, SPEC_FILE)
    if metrics is not None:
        from mrl_actors.report.metrics import check_port_free

        check_port_free(metrics)
    from mrl_actors.report.reporters import check_installed

    check_installed(spec.run.report_to)  # before anything is created
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # our bars, not per-file ones
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    log_file = open(out / "run.log", "a", encoding="utf-8")  # noqa: SIM115 - closed below
    logs.configure("json", args.log_level, stream=_Tee(log_file, sys.stderr))
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
            print(f"runs and reports: {out}/<probe>-s<seed>/report.html, {out}/compare.html")
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


def _refuse_existing_run(out: Path, compare: bool, spec_file: str) -> None:
    """A new run never lands on an old one: `--out` naming a run directory (or, with
    `--compare`, one holding sub-runs) would replay the old run and overwrite its spec."""
    from mrl_actors.errors import ConfigError

    old = [out / spec_file] if (out / spec_file).exists() else []
    if compare and out.is_dir():
        old += sorted(out.glob(f"*/{spec_file}"))[:1]
    if old:
        raise ConfigError(
            f"--out {out}: already holds a run ({old[0]}); continue it with "
            f"`mrl run --resume {old[0].parent}`, or choose another --out"
        )


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    from mrl_actors.report.slots import slot_lines, system_text

    run = summary["run"]
    spec = run.get("spec", {})
    slots = summary.get("slots", {})
    replicas, staleness = spec.get("rollout_replicas", 1), spec.get("max_staleness", "-")
    system = system_text(spec.get("mode", "?"), replicas, staleness, slots)
    print(f"run {run.get('name')} ({run.get('probe')}, {system}): {out}")
    print(
        f"{'policy':<12} {'steps':>5} {'acc@0':>7} {'acc':>7} {'reward':>7} "
        f"{'weights':>7} {'stale':>6} {'wait s':>7}"
    )
    for name, p in sorted(summary["policies"].items()):
        acc0, acc = p.get("initial_accuracy"), p.get("final_accuracy")
        final = p.get("final", {})
        waits = [v for _, v in p.get("series", {}).get("rollout_wait_s", [])]
        wait = sum(waits) / len(waits) if waits else None
        version = final.get("learner_version", p.get("steps", 0))
        print(
            f"{name:<12} {p.get('steps', 0):>5} {_f(acc0):>7} {_f(acc):>7} "
            f"{_f(final.get('reward_mean')):>7} {'v' + str(int(version)):>7} "
            f"{_f(final.get('staleness_mean'), 2):>6} {_f(wait, 2):>7}"
        )
    if slots:  # a summary written before the slot table has none
        print("\n".join(slot_lines(slots)))
    print(f"report: {out / 'report.html'}")


def _f(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


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


class _Tee:
    """The run's JSON log file, with the warm start's progress also shown on the terminal: on an
    empty cache building the tiny models takes a minute before the first step's bar appears."""

    SHOWN = ("tiny_policy.building", "warm_start.progress", "tiny_policy.built")

    def __init__(self, file: Any, terminal: Any) -> None:
        self.file = file
        self.terminal = terminal

    def write(self, text: str) -> int:
        n = self.file.write(text)
        if '"event": "tiny_policy.' in text or '"event": "warm_start.' in text:
            self._show(text)
        return n

    def flush(self) -> None:
        self.file.flush()

    def _show(self, text: str) -> None:
        import json

        try:
            rec = json.loads(text)
        except ValueError:
            return
        event, model = rec.get("event"), rec.get("model", "?")
        if event == "tiny_policy.building":
            line = (
                f"warm start {model}: building, {rec.get('steps')} supervised steps (cached after)"
            )
        elif event == "warm_start.progress":
            line = f"warm start {model}: step {rec.get('step')}/{rec.get('steps')}"
            line += f", loss {float(rec.get('loss', float('nan'))):.3f}"
        elif event == "tiny_policy.built":
            line = f"warm start {model}: done in {float(rec.get('seconds', 0.0)):.0f} s"
        else:
            return
        self.terminal.write(line + "\n")
        self.terminal.flush()
