"""`mrl run`: the single-machine main job, top to bottom: setup → node → report → cleanup.

A run directory holds everything a run is:

    DIR/spec.toml         the effective spec: overrides applied, model paths absolute (resume reads)
    DIR/nats/             the JetStream store of the embedded server (the log)
    DIR/server.json       url, users (passwords) and pid of the server while the run is live
    DIR/checkpoints/<policy>/step-<k>/   safetensors checkpoints; step-0 is the start
    DIR/run.log           structured logs (JSON lines)
    DIR/summary.json      the run folded from its log
    DIR/report.html       the same, with plots

`--compare` runs the spec once per probe (and per seed) into DIR/<probe>-s<seed>/ and writes the
paper-style table to DIR/compare.md and DIR/compare.json.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from mrl_actors.actors.options import ActorOptions
from mrl_actors.errors import ConfigError
from mrl_actors.events import RunFinished, event_id
from mrl_actors.logs import get_logger
from mrl_actors.probes import PROBE_NAMES, ProbeName
from mrl_actors.report.reporters import LogReport, open_reporter, report_live
from mrl_actors.report.stats import METRIC_KEYS, paired_differences, part_metric_keys
from mrl_actors.report.summary import compare_html, compare_markdown, render_html, summarize
from mrl_actors.report.tensorboard import spec_hparams
from mrl_actors.run.node import run_node
from mrl_actors.run.placement import DeviceSlot
from mrl_actors.run.start import open_run_log, record_start
from mrl_actors.see.access import ends_if_server_lost
from mrl_actors.see.deadletter import DeadLetters
from mrl_actors.see.port import LogFor
from mrl_actors.see.server import serve_run_dir
from mrl_actors.see.stream import EventLog
from mrl_actors.spec import RunSpec, effective_toml, load_spec

if TYPE_CHECKING:
    from mrl_actors.report.metrics import MetricsConfig

SPEC_FILE = "spec.toml"


async def _open_log(
    spec: RunSpec, run_dir: Path, stack: AsyncExitStack, on_lost: Callable[[str], None]
) -> tuple[EventLog, LogFor | None]:
    """The run's log: on its `server.url`, or on an embedded server in DIR/nats owned by the run."""
    if spec.server.url:
        return await open_run_log(spec, stack, on_lost, server=spec.server.url)
    names = [p.name for p in spec.policies]
    srv = await stack.enter_async_context(
        serve_run_dir(
            run_dir, run=spec.run.name, policies=names, sync_interval=spec.server.sync_interval
        )
    )
    return await open_run_log(spec, stack, on_lost, info=srv.info())


async def run_once(
    spec: RunSpec,
    spec_text: str,
    run_dir: Path,
    *,
    on_step: Callable[[str, int, dict[str, float]], None] | None = None,
    stop_after: int | None = None,
    metrics: MetricsConfig | None = None,
) -> dict[str, Any]:
    """One run of one probe into `run_dir`; returns its summary (also written to disk).

    With `metrics`, the node serves the run's Prometheus metrics there while it runs.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / SPEC_FILE).write_text(_SPEC_HEADER + effective_toml(spec), encoding="utf-8")
    logger = get_logger(__name__, run=spec.run.name)
    t0 = time.perf_counter()
    hint = f"resume with: mrl run --resume {run_dir}"
    async with ends_if_server_lost(hint) as on_lost, AsyncExitStack() as stack:
        log, log_for = await _open_log(spec, run_dir, stack, on_lost)
        had = await record_start(log, spec, spec_text)
        opts = ActorOptions(on_step=on_step, stop_after=stop_after)
        local = [p.name for p in spec.policies]  # one machine: every policy here, placed or not
        finished = stop_after is None
        async with anyio.create_task_group() as tg:
            report = _log_report(spec, run_dir)
            if report is not None:  # [run] report_to: the tracking tools follow the log
                await tg.start(report_live, log, report)
            if spec.placement.allocator == "mwra":
                # one node of `local_slot_count()` CPU slots: it runs the allocator (the only
                # candidate for its lease) and hosts what its decisions give each slot
                slots = [DeviceSlot("cpu", i) for i in range(spec.local_slot_count())]
                await run_node(
                    log, spec, run_dir, slots=slots, opts=opts, log_for=log_for, metrics=metrics
                )
            elif spec.run.processes == "per_policy" and stop_after is None and metrics is None:
                from mrl_actors.run.processes import host_in_processes

                await host_in_processes(log, spec, run_dir, on_step=on_step)
            else:
                await run_node(
                    log, spec, run_dir, policies=local, opts=opts, log_for=log_for, metrics=metrics
                )
            done = event_id("run", spec.run.name, "mrl", "finished")
            if finished and done not in had:  # a resumed run that had already finished
                await log.append(
                    RunFinished(
                        run=spec.run.name,
                        source="mrl",
                        event_id=done,
                        time_ns=time.time_ns(),
                        status="completed",
                        summary={"wall_time_s": time.perf_counter() - t0},
                    )
                )
            tg.cancel_scope.cancel()  # the reporter reads the rest of the log and finishes
        dead = DeadLetters(log, "mrl", best_effort=True)  # the summary survives any message
        events = [rec.event async for rec in log.read(start_seq=1, dead_letters=dead)]
        summary = summarize(events)
        summary["run"]["probe"] = spec.run.probe
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        (run_dir / "report.html").write_text(render_html(summary), encoding="utf-8")
        logger.info("run_written", dir=str(run_dir), finished=finished)
    return summary


def _log_report(spec: RunSpec, run_dir: Path) -> LogReport | None:
    """The tracking backends of `[run] report_to`, fed from the log (TensorBoard is written by
    the learners themselves, `[run] tensorboard`), with the run's effective spec as their
    hyperparameters; None when there are none."""
    names = [n for n in spec.run.report_to if n != "tensorboard"]
    if not names:
        return None
    reporters = [open_reporter(n, run_dir, spec.run.name) for n in names]
    return LogReport(reporters, spec_of=lambda _: spec, hparams=spec_hparams, keep_going=True)


_SPEC_HEADER = (
    "# The effective spec of this run, written by `mrl run`: command-line and --compare overrides\n"
    "# are values here and model paths are absolute. `mrl run --resume DIR` reads it; the spec as\n"
    "# written is in the log's RunStarted event.\n\n"
)


def resume_spec(run_dir: Path) -> tuple[RunSpec, str]:
    """The spec a run directory was run with (its effective spec.toml) and that file's text."""
    path = run_dir / SPEC_FILE
    if not path.exists():
        raise ConfigError(f"{run_dir} is not a run directory: no {SPEC_FILE} in it")
    return load_spec(path)


async def compare(
    spec: RunSpec,
    spec_text: str,
    out: Path,
    *,
    seeds: Sequence[int],
    probes: Sequence[ProbeName] = PROBE_NAMES,
    on_step: Callable[[str, int, dict[str, float]], None] | None = None,
    on_run: Callable[[str], None] | None = None,
    stop_after: int | None = None,
    metrics: MetricsConfig | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Run the spec under each probe and seed; write compare.json, compare_paired.json,
    compare.md and compare.html (each probe against independent, paired by seed).

    Each sub-run's directory keeps its own effective spec (its probe, seed and name), so
    `mrl run --resume DIR/<probe>-s<seed>` continues that sub-run, not the base spec.
    `stop_after` stops every sub-run after that many steps per policy (resume tests).
    `metrics` serves each sub-run's metrics in turn, on the same address.
    """
    results: dict[str, list[dict[str, Any]]] = {}
    for probe in probes:
        for seed in seeds:
            name = f"{spec.run.name}-{probe}-s{seed}"
            if on_run is not None:
                on_run(name)
            variant = spec.with_probe(probe, seed=seed, name=name)
            text = spec_text + f"\n# --compare: run.probe = {probe!r}, run.seed = {seed}\n"
            summary = await run_once(
                variant,
                text,
                out / f"{probe}-s{seed}",
                on_step=on_step,
                stop_after=stop_after,
                metrics=metrics,
            )
            results.setdefault(probe, []).append(summary)
    (out / "compare.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    keys = (*METRIC_KEYS, *part_metric_keys(results))  # and per task part, when it has parts
    paired = [d.as_dict() for d in paired_differences(results, metrics=keys)]
    (out / "compare_paired.json").write_text(json.dumps(paired, indent=2), encoding="utf-8")
    (out / "compare.md").write_text(compare_markdown(results, seeds, paired), encoding="utf-8")
    (out / "compare.html").write_text(compare_html(results, seeds, paired), encoding="utf-8")
    return results
