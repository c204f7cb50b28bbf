"""`mrl run` with `[run] processes = "per_policy"`: each policy in an `mrl-node` process of its own.

In one process, policies share one interpreter lock, one allocator and one pool of threads: a
large-vocabulary policy's memory traffic slows every other one (issue 18 measured a tiny policy's
learner step going from 0.25 s to 7.26 s beside a 152k-vocabulary one). Here `mrl run` keeps the
server, the start events and the report, and hosts each policy in
`python -m mrl_actors.cli.mrl_node SPEC --run-dir DIR --policies NAME --node local-NAME`, which
joins the run's live server (its `server.json`) as that policy's user and takes the policy's
`threads` budget (or the machine's cores split between the spec's policies). The processes
meet only in the log, as nodes on several hosts do. `mrl run` follows the log's learner steps
for its progress display, waits for every process, and kills (by PID) those still running when
it is stopped or one of them fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from mrl_actors.errors import MrlError
from mrl_actors.events import LearnerStepCompleted
from mrl_actors.logs import get_logger
from mrl_actors.spec import RunSpec

STOP_TIMEOUT_S = 30.0


class PolicyProcessError(MrlError):
    """A policy's process ended with an error."""


def node_command(run_dir: Path, policy: str) -> list[str]:
    spec = run_dir / "spec.toml"  # the effective spec `mrl run` wrote
    return [
        sys.executable,
        "-m",
        "mrl_actors.cli.mrl_node",
        str(spec),
        "--run-dir",
        str(run_dir),
        "--policies",
        policy,
        "--node",
        f"local-{policy}",
    ]


async def host_in_processes(
    log: Any,
    spec: RunSpec,
    run_dir: Path,
    *,
    on_step: Callable[[str, int, dict[str, float]], None] | None = None,
) -> None:
    """Host every policy of `spec` in its own `mrl-node` process until all have finished."""
    logger = get_logger(__name__, run=spec.run.name)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for p in spec.policies:
            out = open(run_dir / f"node-{p.name}.log", "ab")  # noqa: SIM115 (the child's)
            procs[p.name] = subprocess.Popen(
                node_command(run_dir, p.name), stdout=out, stderr=subprocess.STDOUT
            )
            out.close()
        logger.info("policy_processes_started", pids={n: q.pid for n, q in procs.items()})
        async with anyio.create_task_group() as tg:
            if on_step is not None:
                tg.start_soon(_progress, log, spec, on_step)
            while any(q.poll() is None for q in procs.values()):
                failed = {n: q.returncode for n, q in procs.items() if q.returncode}
                if failed:
                    raise PolicyProcessError(
                        f"policy process(es) {failed} ended with an error; see "
                        f"{run_dir}/node-<policy>.log"
                    )
                await anyio.sleep(0.2)
            failed = {n: q.returncode for n, q in procs.items() if q.returncode}
            if failed:
                raise PolicyProcessError(
                    f"policy process(es) {failed} ended with an error; see "
                    f"{run_dir}/node-<policy>.log"
                )
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await _stop(procs)


async def _progress(
    log: Any, spec: RunSpec, on_step: Callable[[str, int, dict[str, float]], None]
) -> None:
    names = {p.name for p in spec.policies}
    async for rec in log.read(start_seq=1, kinds=["learner"], follow=True):
        ev = rec.event
        if isinstance(ev, LearnerStepCompleted) and ev.policy == ev.source and ev.policy in names:
            on_step(ev.policy, ev.step, dict(ev.metrics))


async def _stop(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    """SIGTERM the processes still running (mrl-node stops as on Ctrl-C), then SIGKILL."""
    live = [q for q in procs.values() if q.poll() is None]
    for q in live:
        os.kill(q.pid, signal.SIGTERM)
    with anyio.move_on_after(STOP_TIMEOUT_S):
        while any(q.poll() is None for q in live):
            await anyio.sleep(0.1)
    for q in live:
        if q.poll() is None:
            os.kill(q.pid, signal.SIGKILL)
            q.wait()
