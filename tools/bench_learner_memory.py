"""Peak memory and time of one GRPO learner step at a real vocabulary: dense vs chunked head.

The policy has the Qwen1.5-0.5B shape (the Qwen1.5 config with hidden 1024, intermediate 2816,
24 layers, 16 heads, vocabulary 151,936, tied embeddings as Qwen1.5-0.5B; 464M parameters) and
random weights, float32 on the CPU. Each arm runs in a subprocess of its own, so its peak resident
set (`ru_maxrss`) is that arm's alone:

- `dense`: the learner as it was before chunking: the LM head's [B, T, V] float32 logits, their
  log-softmax and the entropy over them through autograd (`dense_completion_logps`), every
  decoder activation kept for backward.
- `chunked`: `completion_logps` over `--chunk` positions at a time (the default learner), with
  `gradient_checkpointing` (the backbone keeps one [tokens, hidden] tensor per layer) and
  `max_tokens_per_micro_batch = --budget` padded positions per forward/backward.
- `chunked-nockpt`: chunked head, activations kept (what the head alone saves).

The chunked arms also fix the C heap's mmap threshold at `--mmap-threshold-mib` (the spec's
`[run] malloc_mmap_threshold_mib`, `mrl_actors.models.heap`; 0: glibc's default), so that freed
activation blocks leave the resident set; the dense arm keeps glibc's default, as before.

Each subprocess builds the model, takes one warm-up step on a single short sample (so AdamW's
state exists, as in every step after a run's first), then the measured step on `tokens`
completion tokens (`--seqs` sequences of tokens / seqs each, 16-token prompts). Before that step
it hands freed heap back to the system and resets the kernel's high-water mark, so "step peak
RSS" is the measured step's own peak (the interpreter and libraries included); "process peak"
is the whole subprocess's (model building and the warm-up step included). The table gives
weights + gradients + AdamW state (16 bytes a parameter), what the step's peak holds beyond them,
and the measured step's wall time.

Run: `nice -n 10 .venv/bin/python tools/bench_learner_memory.py
--runs chunked:4096,dense:1024,chunked:1024` (`--layers 1 --runs dense:256,chunked:256`: a look).
Each arm's address space is capped at `--max-gb` (default: the memory available when the script
starts, less 1 GB), so an arm that needs more than the machine has fails with an allocation error
in its own row instead of the kernel killing whatever it picks.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
GB = 1024**3
ARMS = ("dense", "chunked", "chunked-nockpt")


def _peak_rss() -> int:
    """This process's peak resident set in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_step_peak() -> int:
    """Hand freed heap back (glibc's malloc_trim), reset the kernel's high-water mark (VmHWM,
    Linux >= 4.0: write 5 to clear_refs) and return the resident set now, in bytes."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")
    return _status_bytes("VmRSS")


def _status_bytes(key: str) -> int:
    """A `kB` line of /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise KeyError("MemAvailable")


def _cap(limit: int) -> Any:
    """A `preexec_fn` capping the child's address space at `limit` bytes."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return cap


def build_policy(models_dir: Path, layers: int = 24, seed: int = 0) -> Any:
    """The Qwen1.5-0.5B-shape policy with random float32 weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(str(models_dir / "qwen1.5-1.8b"))
    cfg.hidden_size, cfg.intermediate_size = 1024, 2816
    cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads = layers, 16, 16
    cfg.vocab_size, cfg.tie_word_embeddings = 151_936, True
    cfg.max_window_layers = layers
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)


def run_arm(a: argparse.Namespace) -> dict[str, Any]:
    """One arm in this process: warm-up step, measured step, peak RSS."""
    import numpy as np
    import torch

    import mrl_actors.grpo.learner as learner_mod
    from mrl_actors.grpo import GRPOConfig, GRPOLearner, Sample
    from mrl_actors.grpo.logprobs import dense_completion_logps
    from mrl_actors.models.heap import set_mmap_threshold

    torch.set_num_threads(a.threads)
    if a.arm != "dense":
        set_mmap_threshold(a.mmap_threshold_mib)
    model = build_policy(Path(a.models_dir), a.layers)
    n_params = sum(p.numel() for p in model.parameters())
    if a.arm == "dense":  # the learner's log-prob pass before chunking, unchanged otherwise

        def dense(*args: Any, chunk_tokens: int = 0, **kw: Any) -> Any:
            return dense_completion_logps(*args, **kw)

        learner_mod.completion_logps = dense  # type: ignore[assignment]
    cfg = GRPOConfig(
        lr=1e-6,
        is_cap=None,
        logit_chunk_tokens=a.chunk,
        gradient_checkpointing=a.arm == "chunked",
        max_tokens_per_micro_batch=a.budget if a.arm == "chunked" else 0,
        max_completion_length=a.tokens // a.seqs,
    )
    learner = GRPOLearner(model, cfg, seed=0, pad_id=0)
    g = np.random.default_rng(0)
    v = model.config.vocab_size

    def samples(n: int, t: int) -> list[Sample]:
        return [
            Sample(
                g.integers(3, v, size=16).astype(np.int32),
                g.integers(3, v, size=t).astype(np.int32),
                np.full(t, -12.0, np.float32),
                float(1.0 if i % 2 else -1.0),
            )
            for i in range(n)
        ]

    learner.step(samples(2, 2))  # warm-up: AdamW's state exists from here on
    batch = samples(a.seqs, a.tokens // a.seqs)
    rss_before = _reset_step_peak()
    t0 = time.perf_counter()
    try:
        m = learner.step(batch)
    except RuntimeError as e:  # an allocation above the cap: what it had reached, and the ask
        if "allocate" not in str(e):
            raise
        m = {"tokens": float(a.tokens), "loss": float("nan")}
        oom = str(e).split("you tried to allocate", 1)[-1].split(".")[0].strip()
    else:
        oom = ""
    step_s = time.perf_counter() - t0
    step_peak = _status_bytes("VmHWM")
    return {
        "arm": a.arm,
        "out_of_memory": oom,
        "tokens": int(m["tokens"]),
        "params": n_params,
        "state_bytes": 16 * n_params,  # float32 weights + gradients + AdamW exp_avg, exp_avg_sq
        "rss_before_step": rss_before,
        "step_peak_rss": step_peak,
        "process_peak_rss": _peak_rss(),
        "step_s": step_s,
        "loss": m["loss"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--runs",
        default="dense:1024,chunked:1024,chunked:4096",
        help="comma-separated ARM:TOKENS, ARM in " + ", ".join(ARMS),
    )
    p.add_argument("--seqs", type=int, default=0, help="sequences per step (0: tokens / 128)")
    p.add_argument("--chunk", type=int, default=512, help="positions per LM-head chunk")
    p.add_argument(
        "--budget", type=int, default=2304, help="chunked arm: max_tokens_per_micro_batch"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--mmap-threshold-mib", type=int, default=4, help="chunked arms' heap setting (0: default)"
    )
    p.add_argument("--layers", type=int, default=24, help="decoder layers (fewer: a quick look)")
    p.add_argument(
        "--max-gb", type=float, default=0.0, help="address-space cap per arm (0: available - 1)"
    )
    p.add_argument("--models-dir", default=str(ROOT.parent / "shared" / "models"))
    p.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)  # set in the subprocess
    p.add_argument("--tokens", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args()

    if a.arm:  # the subprocess: one arm, one JSON line
        a.seqs = a.seqs or max(a.tokens // 128, 1)
        sys.stdout.write(json.dumps(run_arm(a)) + "\n")
        return

    limit = int(a.max_gb * GB) if a.max_gb > 0 else _available_bytes() - GB
    rows = []
    for run in a.runs.split(","):
        arm, tokens = run.split(":")
        if arm not in ARMS:
            raise SystemExit(f"unknown arm {arm!r}: one of {', '.join(ARMS)}")
        cmd = [sys.executable, __file__, "--arm", arm, "--tokens", tokens, "--chunk", str(a.chunk)]
        cmd += ["--threads", str(a.threads), "--models-dir", a.models_dir, "--seqs", str(a.seqs)]
        cmd += ["--layers", str(a.layers), "--budget", str(a.budget)]
        cmd += ["--mmap-threshold-mib", str(a.mmap_threshold_mib)]
        res = subprocess.run(
            cmd, capture_output=True, text=True, check=False, preexec_fn=_cap(limit)
        )
        if res.returncode != 0:
            last = (res.stderr.strip().splitlines() or ["(no output)"])[-1]
            rows.append(
                {"arm": arm, "tokens": int(tokens), "failed": f"rc {res.returncode}: {last}"}
            )
        else:
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        sys.stderr.write(f"{rows[-1]}\n")

    import torch

    print(
        f"# one GRPO learner step, Qwen1.5-0.5B shape ({a.layers} layers, random weights, "
        f"float32, CPU, {a.threads} threads), 16-token prompts, head chunk {a.chunk}, chunked "
        f"arm's token budget {a.budget} and heap mmap threshold {a.mmap_threshold_mib} MiB; "
        f"each arm's address space capped at {limit / GB:.1f} GB; "
        f"torch {torch.__version__}"
    )
    print(
        "| arm | completion tokens | weights+grads+AdamW GB | step peak RSS GB | beyond them GB "
        "| within +2 GB | process peak RSS GB | step s |"
    )
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    for r in rows:
        if "failed" in r:
            print(f"| {r['arm']} | {r['tokens']} | failed: {r['failed']} | | | | | |")
            continue
        state, peak = r["state_bytes"] / GB, r["step_peak_rss"] / GB
        if r.get("out_of_memory"):
            print(
                f"| {r['arm']} | {r['tokens']} | {state:.2f} | > {peak:.2f} (then could not "
                f"allocate {r['out_of_memory']}) | > {peak - state:.2f} | no "
                f"| > {r['process_peak_rss'] / GB:.2f} | (failed after {r['step_s']:.1f}) |"
            )
            continue
        print(
            f"| {r['arm']} | {r['tokens']} | {state:.2f} | {peak:.2f} | {peak - state:.2f} "
            f"| {'yes' if peak - state <= 2.0 else 'no'} | {r['process_peak_rss'] / GB:.2f} "
            f"| {r['step_s']:.1f} |"
        )


if __name__ == "__main__":
    main()
