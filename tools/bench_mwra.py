"""MWRA against a static 50/50 split, live, side by side: a skewed pair on three CPU nodes.

    python tools/bench_mwra.py [--steps 16] [--repeats 1] [--out DIR]

Two policies of the toy pair, one of them slow: it samples `--slow-tokens` tokens per completion
(no stop string, no stop at end-of-sequence) where the fast one stops at the end of its answer
line (at most 8 tokens). Three nodes (`h1`, `h2`, `h3`, two CPU slots each) run as
`mrl-node` processes against one embedded server; each policy's learner has a slot of its own
and the four other slots are rollout slots, two per policy, as `[placement]` says. The same
spec runs twice, alternating (`--repeats` times each):

- static: `allocator = "static"`, the placement holds for the whole run;
- mwra: `allocator = "mwra"`, the placement is MWRA's starting point and the allocator (a
  candidate on every node, one leading) moves rollout slots at weight-version boundaries.

Printed per run and policy, from the run's log: learner steps per minute (from its first to its
last step), the learner's idle share (its wait for groups over wait plus compute,
`LearnerStepTimed`), the mean seconds per step, and for MWRA its decisions and measured slot
moves. The slow policy's steps per minute is the figure MWRA should raise; the machine's cores
are shared by every actor, so a slot moved to the slow policy also moves CPU time to it.
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

ROOT = Path(__file__).resolve().parents[1]
NODES = {"h1": 2, "h2": 2, "h3": 2}
PLACEMENT = [  # (node, slot, policy, role)
    ("h1", "cpu:0", "fast", "learner"),
    ("h2", "cpu:0", "slow", "learner"),
    ("h1", "cpu:1", "fast", "rollout"),
    ("h3", "cpu:0", "fast", "rollout"),
    ("h2", "cpu:1", "slow", "rollout"),
    ("h3", "cpu:1", "slow", "rollout"),
]


def make_spec(allocator: str, steps: int, slow_tokens: int, name: str) -> tuple[Any, str]:
    from mrl_actors.spec import load_spec, parse_spec

    base, _ = load_spec(ROOT / "runtime/experiments/toy-pair.toml")
    fast, slow = base.policies
    text = f"""
[run]
name = "{name}"
seed = 0
probe = "independent"
mode = "async"
rollout_replicas = 2
max_staleness = 2
steps = {steps}
prompts_per_step = 8
group_size = 8
eval_every = {steps}
eval_size = 8
checkpoint_every = {steps}

[task]
kind = "arithmetic"
[task.arithmetic]
digits = 2
spaced_digits = true
size = 4000
test_size = 64

[placement]
allocator = "{allocator}"

[mwra]
liveness_interval_s = 2.0
"""
    for node, slot, policy, role in PLACEMENT:
        text += f"""
[[placement.slots]]
node = "{node}"
slot = "{slot}"
policy = "{policy}"
role = "{role}"
"""
    for label, p, tokens, stop, eos in (
        ("fast", fast, 8, '["\\n"]', "true"),
        ("slow", slow, slow_tokens, "[]", "false"),  # every completion is slow_tokens long
    ):
        tiny = p.tiny
        assert tiny is not None
        text += f"""
[[policies]]
name = "{label}"
model = "{p.model}"
tiny = {{ hidden_size = {tiny.hidden_size}, layers = {tiny.layers}, heads = {tiny.heads}, \
warm_start_steps = {tiny.warm_start_steps} }}
[policies.engine.sampling]
temperature = 1.0
max_new_tokens = {tokens}
stop = {stop}
stop_at_eos = {eos}
[policies.grpo]
loss_type = "dapo"
lr = 5e-4
beta = 0.0
"""
    return parse_spec(text), text


async def run_nodes(spec: Any, text: str, run_dir: Path) -> None:
    """The run's server here, and each node an `mrl-node` process of its own (as on separate
    hosts: no shared interpreter lock), until every node has exited."""
    import subprocess
    import sys

    from mrl_actors.run.start import record_start
    from mrl_actors.see.access import open_log
    from mrl_actors.see.server import serve_run_dir

    names = [p.name for p in spec.policies]
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "spec.toml").write_text(text)
    async with serve_run_dir(run_dir, run=spec.run.name, policies=names) as srv:
        info = srv.info()
        async with open_log(info=info, run=spec.run.name, create=True) as log:
            await record_start(log, spec, text)
        env = {
            **os.environ,
            "MRL_NATS_USER": "admin",
            "MRL_NATS_PASSWORD": info.users["admin"],
        }
        procs = []
        for name, slots in NODES.items():
            cmd = [sys.executable, "-m", "mrl_actors.cli.mrl_node", str(run_dir / "spec.toml")]
            cmd += ["--node", name, "--run-dir", str(run_dir / name), "--server", info.url]
            cmd += ["--slots", f"cpu:{slots}"]
            out = (run_dir / f"{name}.out").open("wb")
            procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT))
        try:
            while any(p.poll() is None for p in procs):
                await anyio.sleep(0.5)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        failed = [(n, p.returncode) for n, p in zip(NODES, procs, strict=True) if p.returncode]
        if failed:
            raise SystemExit(f"nodes failed: {failed}; see {run_dir}/<node>.out")


async def _events(run_dir: Path, run: str) -> list[Any]:
    from mrl_actors.see.access import open_log
    from mrl_actors.see.server import open_run_dir

    async with open_run_dir(run_dir, run=run) as info, open_log(info=info, run=run) as log:
        return [rec.event async for rec in log.read(start_seq=1)]


def measure(run_dir: Path, spec: Any) -> dict[str, dict[str, float]]:
    from mrl_actors import events as ev

    events = anyio.run(_events, run_dir, spec.run.name)
    out: dict[str, dict[str, float]] = {}
    for p in spec.policies:
        done = sorted(
            (e for e in events if isinstance(e, ev.LearnerStepCompleted) and e.policy == p.name),
            key=lambda e: e.step,
        )
        timed = [e for e in events if isinstance(e, ev.LearnerStepTimed) and e.policy == p.name]
        wall = (done[-1].time_ns - done[0].time_ns) / 1e9
        wait = sum(t.wait_s for t in timed)
        compute = sum(t.compute_s for t in timed)
        out[p.name] = {
            "steps_per_min": (len(done) - 1) / wall * 60 if wall > 0 else 0.0,
            "idle": wait / (wait + compute) if wait + compute > 0 else 0.0,
            "s_per_step": wall / max(len(done) - 1, 1),
        }
    decisions = [e for e in events if isinstance(e, ev.SlotsAssigned) and e.source == "mwra"]
    moves = [e for e in events if isinstance(e, ev.SlotMoveMeasured)]
    # the split MWRA settled on: its last rebalance (the static placement when it made none)
    settled = [d for d in decisions if "rebalance" in d.reason]
    final = settled[-1] if settled else next(e for e in events if isinstance(e, ev.SlotsAssigned))
    rollout = {p.name: 0 for p in spec.policies}
    for a in final.assignments:
        if a.role == "rollout":
            rollout[a.policy] += 1
    out["_run"] = {
        "decisions": float(len(decisions)),
        "moves": float(len(moves)),
        "move_s": sum(m.seconds for m in moves) / len(moves) if moves else 0.0,
        **{f"final_{k}": float(v) for k, v in rollout.items()},
    }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--slow-tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here")
    args = parser.parse_args(argv)

    out = args.out or Path(tempfile.mkdtemp(prefix="bench-mwra-"))
    rows: list[tuple[str, int, dict[str, dict[str, float]], float]] = []
    try:
        for rep in range(args.repeats):
            for allocator in ("static", "mwra"):
                name = f"bench-mwra-{allocator}-{rep}"
                spec, text = make_spec(allocator, args.steps, args.slow_tokens, name)
                run_dir = out / name
                shutil.rmtree(run_dir, ignore_errors=True)
                t0 = time.perf_counter()
                anyio.run(run_nodes, spec, text, run_dir)
                rows.append((allocator, rep, measure(run_dir, spec), time.perf_counter() - t0))
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)

    print(
        f"\nskewed pair: slow samples {args.slow_tokens} tokens per completion, fast at most 8; "
        f"{args.steps} learner steps each; 3 nodes x 2 CPU slots on {os.cpu_count()} cores\n"
    )
    head = ["allocator", "rep", "slow steps/min", "fast steps/min", "slow idle", "fast idle"]
    head += ["slow s/step", "fast s/step", "decisions", "moves", "s/move", "rollout slow/fast"]
    head += ["wall s"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for allocator, rep, r, wall in rows:
        s, f, run = r["slow"], r["fast"], r["_run"]
        print(
            f"| {allocator} | {rep} | {s['steps_per_min']:.2f} | {f['steps_per_min']:.2f} | "
            f"{s['idle']:.1%} | {f['idle']:.1%} | {s['s_per_step']:.1f} | "
            f"{f['s_per_step']:.1f} | {run['decisions']:.0f} | {run['moves']:.0f} | "
            f"{run['move_s']:.1f} | {run['final_slow']:.0f}/{run['final_fast']:.0f} | "
            f"{wall:.0f} |"
        )
    by = {
        a: [r["slow"]["steps_per_min"] for a2, _, r, _ in rows if a2 == a]
        for a in ("static", "mwra")
    }
    mean = {a: sum(v) / len(v) for a, v in by.items()}
    print(
        f"\nslow policy steps/min, mean over repeats: static {mean['static']:.2f}, "
        f"mwra {mean['mwra']:.2f} (ratio {mean['mwra'] / mean['static']:.2f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
