"""Lockstep against asynchronous: the same spec, the same learner steps, side by side.

    python tools/bench_async.py [--spec runtime/experiments/toy-pair.toml] [--steps 12]
        [--replicas 1] [--max-staleness 1] [--processes one|per_policy]
        [--async-peer-wait sampling|none] [--out DIR]

Runs the spec twice on this machine, once with `[run] mode = "lockstep"` and once with
`mode = "async"`, each in its own run directory with its own embedded server, and prints per
policy, from each run's log:

- wall: from the start of the policy's first learner step to its last `LearnerStepCompleted`;
- steps/min: learner steps over that wall time;
- idle: the share of that wall time its learner spent waiting: for its peers (lockstep and
  async: `peer_wait_s`) and, in async mode, for its own rollout actors (`rollout_wait_s`);
  both parts are shown apart (`peers`, `own rollouts`). `idle>1` leaves out step 1, which in
  async mode also waits for the rollout actors to build their models (a one-off start cost);
- staleness: learner versions between sampling and consumption of the groups it learned from,
  mean and max (0 in lockstep by construction);
- peer events/step: the peers' events (groups, reward summaries, successes) its steps consumed,
  per step: what the waiting buys.

`--async-peer-wait` sets the async run's `probes.sharing.async_peer_wait` (default: the spec's;
the toy pair ships `none`): with `sampling` a learner waits (up to `wait_for_peers_s`) for a peer
whose rollouts may be sampling its batch, so that it learns from that peer on the same prompts,
and a faster policy is paced by its slower peer while they are within `run.max_staleness` of each
other; with `none` it never waits and consumes what has arrived.

The shipped toy pair uses built-in tokenizers (`builtin:...`). Model paths of a spec that do
not exist are looked up by their last component under `MRL_MODELS_DIR` (default
`../shared/models` next to the checkout).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import msgspec

ROOT = Path(__file__).resolve().parents[1]


def _spec(
    path: Path,
    mode: str,
    steps: int,
    replicas: int,
    staleness: int,
    processes: str = "one",
    async_peer_wait: str | None = None,
) -> tuple[Any, str]:
    from mrl_actors.spec import load_spec

    spec, text = load_spec(path)
    models = Path(os.environ.get("MRL_MODELS_DIR", ROOT.parent / "shared" / "models"))
    policies = [
        p
        if Path(p.model).exists() or p.model.startswith("builtin:")
        else msgspec.structs.replace(p, model=str(models / Path(p.model).name))
        for p in spec.policies
    ]
    run = msgspec.structs.replace(
        spec.run,
        name=f"{spec.run.name}-{mode}",
        mode=mode,
        steps=steps,
        eval_every=steps,
        checkpoint_every=steps,
        rollout_replicas=replicas,
        max_staleness=staleness,
        processes=processes if mode == "async" else "one",
    )
    probes = spec.probes
    if async_peer_wait is not None and mode == "async":
        sharing = msgspec.structs.replace(probes.sharing, async_peer_wait=async_peer_wait)
        probes = msgspec.structs.replace(probes, sharing=sharing)
    note = (
        f"\n# bench_async: mode={mode} steps={steps} replicas={replicas} staleness={staleness}"
        f" async_peer_wait={probes.sharing.async_peer_wait}\n"
    )
    # the layouts compared are replicas per policy: no allocator (the demo spec runs MWRA)
    placement = msgspec.structs.replace(spec.placement, allocator="static")
    spec = msgspec.structs.replace(
        spec, run=run, policies=policies, placement=placement, probes=probes
    )
    return spec, text + note


async def _events(run_dir: Path, run: str) -> dict[int, Any]:
    from mrl_actors.see.access import open_log

    async with open_log(run_dir=run_dir, run=run) as log:
        return {rec.seq: rec.event async for rec in log.read(start_seq=1)}


def measure(run_dir: Path, spec: Any) -> dict[str, dict[str, float]]:
    from mrl_actors.events import LearnerStepCompleted, RolloutGroupCompleted

    events = anyio.run(_events, run_dir, spec.run.name)
    out: dict[str, dict[str, float]] = {}
    for p in spec.policies:
        steps = sorted(
            (
                e
                for e in events.values()
                if isinstance(e, LearnerStepCompleted) and e.policy == p.name
            ),
            key=lambda e: e.step,
        )
        first, last = steps[0], steps[-1]
        wall = (last.time_ns - first.time_ns) / 1e9 + first.metrics["step_time_s"]
        peer = [s.metrics.get("peer_wait_s", 0.0) for s in steps]
        own = [s.metrics.get("rollout_wait_s", 0.0) for s in steps]
        waits = [a + b for a, b in zip(peer, own, strict=True)]
        later = (last.time_ns - first.time_ns) / 1e9
        lags = [
            (s.step - 1) - g.policy_version
            for s in steps
            for c in s.consumed
            if isinstance(g := events[c.seq], RolloutGroupCompleted) and g.policy == p.name
        ]
        out[p.name] = {
            "wall_s": wall,
            "steps_per_min": len(steps) / wall * 60,
            "idle": sum(waits) / wall,
            "idle_after_1": sum(waits[1:]) / later if later > 0 else 0.0,
            "idle_peers": sum(peer) / wall,
            "idle_rollouts": sum(own) / wall,
            "staleness_mean": sum(lags) / len(lags),
            "staleness_max": float(max(lags)),
            "peer_events": sum(
                1
                for s in steps
                for c in s.consumed
                if getattr(events.get(c.seq), "policy", p.name) != p.name
            )
            / len(steps),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "runtime/experiments/toy-pair.toml")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--max-staleness", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here")
    parser.add_argument(
        "--processes",
        choices=["one", "per_policy"],
        default="one",
        help="how the async run hosts its policies ([run] processes); lockstep runs in one",
    )
    parser.add_argument(
        "--async-peer-wait",
        choices=["sampling", "none"],
        default=None,
        help="the async run's probes.sharing.async_peer_wait (default: the spec's)",
    )
    args = parser.parse_args(argv)

    from mrl_actors.run.runner import run_once

    out = args.out or Path(tempfile.mkdtemp(prefix="bench-async-"))
    results: dict[str, dict[str, dict[str, float]]] = {}
    totals: dict[str, float] = {}
    try:
        for mode in ("lockstep", "async"):
            spec, text = _spec(
                args.spec,
                mode,
                args.steps,
                args.replicas,
                args.max_staleness,
                args.processes,
                args.async_peer_wait,
            )
            run_dir = out / mode
            shutil.rmtree(run_dir, ignore_errors=True)
            t0 = time.perf_counter()
            anyio.run(lambda spec=spec, text=text, d=run_dir: run_once(spec, text, d))
            totals[mode] = time.perf_counter() - t0
            results[mode] = measure(run_dir, spec)
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)

    wait = args.async_peer_wait or "(the spec's)"
    print(
        f"\n{args.spec.name}: {args.steps} learner steps per policy, async with "
        f"{args.replicas} rollout replica(s) per policy, max_staleness {args.max_staleness}, "
        f"async_peer_wait {wait}, {os.cpu_count()} CPU cores\n"
    )
    head = ["policy", "mode", "wall s", "steps/min", "idle", "idle>1", "peers", "own rollouts"]
    head += ["stale mean", "stale max", "peer events/step"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for policy in results["lockstep"]:
        for mode in ("lockstep", "async"):
            r = results[mode][policy]
            print(
                f"| {policy} | {mode} | {r['wall_s']:.1f} | {r['steps_per_min']:.1f} | "
                f"{r['idle']:.1%} | {r['idle_after_1']:.1%} | {r['idle_peers']:.1%} | "
                f"{r['idle_rollouts']:.1%} | {r['staleness_mean']:.2f} | "
                f"{r['staleness_max']:.0f} | {r['peer_events']:.1f} |"
            )
    print(
        f"\nwhole run (setup, warm start, evals included): lockstep {totals['lockstep']:.1f} s, "
        f"async {totals['async']:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
