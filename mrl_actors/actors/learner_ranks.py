"""The launcher of an N-rank learner: rank 0 in the learner's process, ranks 1..N-1 spawned.

`learner_ranks` (used by the host of a policy's learner when `learner_slots > 1`) prepares the
policy at step 0 (its `step-0` checkpoint, which the other ranks load), spawns one process per
further rank (`python -m mrl_actors.actors.learner_ranks`, the same interpreter), joins them in a
process group on a free loopback port (gloo on CPU, NCCL on CUDA) and hands back rank 0's
runtime (`actors.ranks.LeadRuntime`). On exit it tells the ranks to stop, waits for them, and
kills (by PID) any that did not end in time. A rank that dies makes rank 0's next collective
fail: the learner stops with the error, and a restart begins from the log.

All ranks of a learner run on the host of its slots (MWRA and the placement give a policy's
learner slots to one node as one unit).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import msgspec

from mrl_actors.actors.runtime import PolicyRuntime, prepare_runtime
from mrl_actors.errors import ConfigError
from mrl_actors.logs import get_logger
from mrl_actors.spec import PolicySpec, RunSpec

STOP_TIMEOUT_S = 60.0


def _policy(spec: RunSpec, name: str) -> PolicySpec:
    for p in spec.policies:
        if p.name == name:
            return p
    raise ConfigError(f"policy {name!r} is not in run {spec.run.name!r}")


def rank_threads(spec: RunSpec, policy: PolicySpec) -> int:
    """Threads of one learner rank: the policy's `threads` budget split between its ranks, or
    the machine's cores split between every rank of every policy."""
    if policy.threads:
        return max(1, policy.threads // policy.learner_slots)
    ranks = sum(p.learner_slots for p in spec.policies)
    return max(1, (os.cpu_count() or 1) // ranks)


def _sharded(rt: object, spec: RunSpec, policy: PolicySpec, ops: object, device: str) -> object:
    from mrl_actors.grpo.distributed import Ops, ShardedGRPOLearner

    assert isinstance(ops, Ops)
    model = rt.model  # type: ignore[attr-defined]
    pad = rt.tokenizer.pad_token_id or 0  # type: ignore[attr-defined]
    ref = rt.learner.ref_model  # type: ignore[attr-defined]
    return ShardedGRPOLearner(
        model, policy.grpo, ops, device=device, ref_model=ref, seed=spec.run.seed, pad_id=pad
    )


@contextmanager
def learner_ranks(
    spec: RunSpec,
    name: str,
    run_dir: Path,
    devices: Sequence[str] | None = None,
    prepare: Callable[[str], PolicyRuntime] | None = None,
) -> Iterator[object]:
    """Rank 0's runtime of `name`'s learner with its other ranks running (see the module).

    Rank 0 keeps the threads of the process that hosts it; the other ranks take
    `rank_threads`. `prepare(device)` builds rank 0's runtime at step 0 (default
    `runtime.prepare_runtime`; a host that builds several models passes its locked builder)."""
    from mrl_actors.actors.ranks import LeadRuntime
    from mrl_actors.grpo.distributed import Ops, close_group, init_group, listen_store

    policy = _policy(spec, name)
    world = policy.learner_slots
    devices = list(devices or ["cpu"] * world)
    if len(devices) != world:
        raise ConfigError(f"{name}: {world} learner ranks need {world} devices, got {devices}")
    logger = get_logger(__name__, run=spec.run.name, policy=name)
    # saves `step-0` on a first start, which the other ranks load
    rt = prepare(devices[0]) if prepare else prepare_runtime(spec, policy, run_dir, devices[0])
    here = run_dir / "ranks" / name
    here.mkdir(parents=True, exist_ok=True)
    spec_file = here / "spec.json"
    spec_file.write_bytes(msgspec.json.encode(spec))
    store = listen_store(world)  # rank 0's; the others join it by its port
    port = int(store.port)
    procs: list[subprocess.Popen[bytes]] = []
    lead: LeadRuntime | None = None
    try:
        for r in range(1, world):
            cmd = [sys.executable, "-m", "mrl_actors.actors.learner_ranks"]
            cmd += ["--spec-json", str(spec_file), "--policy", name, "--run-dir", str(run_dir)]
            cmd += ["--rank", str(r), "--world", str(world), "--port", str(port)]
            cmd += ["--device", devices[r]]
            log_file = open(here / f"rank-{r}.log", "ab")  # noqa: SIM115 (kept by the child)
            procs.append(subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT))
            log_file.close()
        logger.info("learner_ranks_started", world=world, pids=[p.pid for p in procs])
        ops = Ops(init_group(0, world, port, devices[0], store=store))
        rt.learner = _sharded(rt, spec, policy, ops, devices[0])
        lead = LeadRuntime.of(rt, ops)
        yield lead
    finally:
        if lead is not None and all(p.poll() is None for p in procs):
            try:
                lead.stop()
            except RuntimeError as exc:  # a rank already gone: its peers are killed below
                logger.warning("learner_ranks_stop_failed", error=str(exc)[:200])
        for p in procs:
            try:
                p.wait(timeout=STOP_TIMEOUT_S if lead is not None else 0.1)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
        close_group()


def rank_devices(device: str, world: int) -> list[str]:
    """The devices of a learner's ranks from its first slot's: CPU for all on a CPU slot, the
    next `world` GPUs from the first on a GPU slot."""
    if not device.startswith("cuda"):
        return [device] * world
    first = int(device.partition(":")[2] or 0)
    return [f"cuda:{first + r}" for r in range(world)]


@asynccontextmanager
async def hosted_ranks(
    spec: RunSpec,
    name: str,
    run_dir: Path,
    device: str = "cpu",
    prepare: Callable[[str], PolicyRuntime] | None = None,
) -> AsyncIterator[Any]:
    """`learner_ranks` for an async host: started and stopped in a worker thread."""
    import anyio

    world = _policy(spec, name).learner_slots
    cm = learner_ranks(spec, name, run_dir, rank_devices(device, world), prepare)
    rt = await anyio.to_thread.run_sync(cm.__enter__)
    try:
        yield rt
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(cm.__exit__, type(exc), exc, exc.__traceback__)
        raise
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(cm.__exit__, None, None, None)


def _exit_with_parent() -> None:
    """A rank whose rank 0 died (SIGKILL) has nobody to follow: it ends too."""
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def rank_main(argv: Sequence[str] | None = None) -> int:
    """A rank > 0 of a learner: build the policy at step 0, join the group, follow rank 0."""
    ap = argparse.ArgumentParser(prog="mrl_actors.actors.learner_ranks")
    ap.add_argument("--spec-json", type=Path, required=True)
    ap.add_argument("--policy", required=True)
    ap.add_argument("--run-dir", type=Path, required=True)
    ap.add_argument("--rank", type=int, required=True)
    ap.add_argument("--world", type=int, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    _exit_with_parent()

    import torch

    from mrl_actors.actors.ranks import follow
    from mrl_actors.actors.runtime import build_runtime, checkpoint_dir
    from mrl_actors.grpo.distributed import Ops, ShardedGRPOLearner, close_group, init_group
    from mrl_actors.models.heap import set_mmap_threshold
    from mrl_actors.tasks import make_task

    spec = msgspec.json.decode(args.spec_json.read_bytes(), type=RunSpec)
    policy = _policy(spec, args.policy)
    torch.set_num_threads(rank_threads(spec, policy))
    set_mmap_threshold(spec.run.malloc_mmap_threshold_mib)
    start = checkpoint_dir(args.run_dir, policy.name, 0)
    rt = build_runtime(spec, policy, make_task(spec.task), weights_dir=start, device=args.device)
    ops = Ops(init_group(args.rank, args.world, args.port, args.device))
    learner = _sharded(rt, spec, policy, ops, args.device)
    assert isinstance(learner, ShardedGRPOLearner)
    rt.learner = learner
    try:
        follow(rt, learner, ops)
    finally:
        close_group()
    return 0


if __name__ == "__main__":
    sys.exit(rank_main())
