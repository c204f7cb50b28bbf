"""The real-size run on a CPU: two ~0.5B policies, 2-rank learners, time and peak memory by phase.

    python tools/bench_realsize.py [--tokenizers ../shared/models] [--out runs/real-size-cpu]

1. Builds the spec's two models as local directories (random weights, seeded, real shapes and
   tokenizers; nothing is downloaded) into `runtime/experiments/realsize-models/`: the
   Qwen1.5-0.5B shape from the Qwen1.5 config with its tokenizer, and a Llama-family model of the
   same widths and depth with the Mistral tokenizer (`--tokenizers` holds `qwen1.5-1.8b/` and
   `mistral-7b/`: their configs and tokenizer files).
2. Runs `mrl run runtime/experiments/real-size-cpu.toml` (each policy in its own process, each
   learner on 2 gloo ranks) and samples every process's resident memory once a second.
3. Prints, per policy and phase, the median and largest time, read from the run's log and node
   logs: generate (a rollout batch), THL (the probe's batch build, which retokenizes the peer's
   completions), learner forward+backward, optimizer, gathering the shards into rank 0's full
   copy, weights publish (from the step's event to its `WeightsPublished`), and fetch and load of
   one published version (timed here, after the run, with the code a rollout actor uses), and the
   peak resident memory of each process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "runtime" / "experiments" / "real-size-cpu.toml"
SHAPE = {"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 24}
SHAPE |= {"num_attention_heads": 16, "num_key_value_heads": 16}
MODELS = {  # spec model dir -> (tokenizer/config dir, overrides)
    "qwen1.5-0.5b-shape": ("qwen1.5-1.8b", {**SHAPE, "tie_word_embeddings": True}),
    "mistral-0.4b-shape": ("mistral-7b", {**SHAPE, "tie_word_embeddings": False}),
}


def build_models(models: Path, tokenizers: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from mrl_actors.models.load import is_complete, load_tokenizer, save_model

    for name, (source, overrides) in MODELS.items():
        out = models / name
        if is_complete(out):
            continue
        cfg = AutoConfig.from_pretrained(tokenizers / source)
        for k, v in overrides.items():
            setattr(cfg, k, v)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.float32)
        n = sum(p.numel() for p in model.parameters())
        print(f"built {name}: {n / 1e6:.0f}M parameters (vocabulary {cfg.vocab_size})")
        save_model(model, out, load_tokenizer(tokenizers / source))
        del model


def _children(root: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += kids.get(pid, [])
    return out


def _role(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return ""
    args = [c.decode(errors="replace") for c in cmd]
    if "mrl_actors.actors.learner_ranks" in args:
        return f"{args[args.index('--policy') + 1]} learner rank {args[args.index('--rank') + 1]}"
    if "mrl_actors.cli.mrl_node" in args:
        return f"{args[args.index('--policies') + 1]} node (learner rank 0, rollout)"
    if "mrl_actors.cli" in args:
        return "mrl run (server client, report)"
    return ""


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run(out: Path, timeout_s: float) -> tuple[int, dict[str, int], float]:
    cmd = [sys.executable, "-m", "mrl_actors.cli", "run", str(SPEC), "--out", str(out)]
    proc = subprocess.Popen([*cmd, "--no-progress"], cwd=ROOT)
    peak: dict[str, int] = {}
    t0 = time.monotonic()
    try:
        while proc.poll() is None and time.monotonic() - t0 < timeout_s:
            for pid in _children(proc.pid):
                role = _role(pid)
                if role:
                    peak[role] = max(peak.get(role, 0), _rss_kb(pid))
            time.sleep(1.0)
    finally:
        if proc.poll() is None:
            for pid in reversed(_children(proc.pid)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, peak, time.monotonic() - t0


async def _read(out: Path) -> list[Any]:
    from mrl_actors.see.access import open_log

    async with open_log(run_dir=out, run="real-size-cpu") as log:
        return [rec.event async for rec in log.read(start_seq=1)]


async def _fetch_and_load(out: Path, ev: Any, model: Any) -> tuple[float, float]:
    import anyio

    from mrl_actors.models.weights import fetch, load_state_bytes
    from mrl_actors.see.access import open_log

    async with open_log(run_dir=out, run="real-size-cpu") as log:
        t0 = time.perf_counter()
        data = await fetch(log, ev.blob, "bench")
        t1 = time.perf_counter()
        await anyio.to_thread.run_sync(load_state_bytes, model, data)
        return t1 - t0, time.perf_counter() - t1


def phases(out: Path) -> dict[str, dict[str, list[float]]]:
    import anyio

    from mrl_actors.events import LearnerStepCompleted, WeightsPublished
    from mrl_actors.models.load import load_model

    events = anyio.run(_read, out)
    table: dict[str, dict[str, list[float]]] = {}
    stepped: dict[tuple[str, int], int] = {}
    for e in events:
        if isinstance(e, LearnerStepCompleted) and e.policy == e.source:
            row = table.setdefault(e.policy, {})
            for key, phase in (
                ("probe_time_s", "THL + probe batch"),
                ("forward_backward_s", "learner forward + backward"),
                ("optimizer_s", "optimizer"),
                ("gather_s", "gather shards (rank 0 copy)"),
                ("learn_time_s", "learner step (all)"),
            ):
                if key in e.metrics:
                    row.setdefault(phase, []).append(e.metrics[key])
            stepped[(e.policy, e.step)] = e.time_ns
    last: dict[str, Any] = {}
    for e in events:
        if isinstance(e, WeightsPublished) and (e.policy, e.version) in stepped:
            dt = (e.time_ns - stepped[(e.policy, e.version)]) / 1e9
            table[e.policy].setdefault("weights publish", []).append(dt)
            last[e.policy] = e
    for policy in table:
        log_file = out / f"node-{policy}.log"
        for line in log_file.read_text(errors="replace").splitlines() if log_file.exists() else []:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("event") == "batch" and "gen_s" in rec:
                table[policy].setdefault("generate (one batch)", []).append(rec["gen_s"])
    for policy, ev in last.items():
        model_dir = out / "checkpoints" / policy / "step-0"
        model, _ = load_model(model_dir)
        f, ld = anyio.run(_fetch_and_load, out, ev, model)
        table[policy]["weights fetch"] = [f]
        table[policy]["weights load"] = [ld]
        del model
    return table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizers", type=Path, default=ROOT.parent / "shared" / "models")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the run's directory (default runs/real-size-cpu, replaced at each run)",
    )
    ap.add_argument("--timeout-s", type=float, default=3600.0)
    args = ap.parse_args()
    if args.out is None:  # the bench's own directory: the previous run in it goes
        args.out = ROOT / "runs" / "real-size-cpu"
        shutil.rmtree(args.out, ignore_errors=True)
    models = SPEC.parent / "realsize-models"
    build_models(models, args.tokenizers)
    avail = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            avail = int(line.split()[1]) // 1024**2
    print(f"memory available before the run: {avail} GiB")
    rc, peak, wall = run(args.out, args.timeout_s)
    print(f"mrl run exit status {rc}, wall {wall:.0f} s")
    if rc != 0:  # what its directory holds is not this run's: no table
        print(f"mrl run failed: its messages are above, its log in {args.out}", file=sys.stderr)
        return 1
    table = phases(args.out)
    print("\n| policy | phase | median s | max s | n |\n|---|---|---|---|---|")
    for policy, row in table.items():
        for phase, xs in row.items():
            med = statistics.median(xs)
            print(f"| {policy} | {phase} | {med:.2f} | {max(xs):.2f} | {len(xs)} |")
    print("\n| process | peak resident memory (GiB) |\n|---|---|")
    for role, kb in sorted(peak.items()):
        print(f"| {role} | {kb / 1024**2:.2f} |")
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
