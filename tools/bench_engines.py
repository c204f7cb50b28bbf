"""Tokens per second of the HF engine and the vLLM engine, side by side, on one checkpoint.

Both engines sample the same prompts (the arithmetic task's) from the same weights, n per prompt,
for the same number of new tokens, in rounds that alternate the two (so a loaded machine slows
both alike); the table gives the median and the range over rounds, the vLLM engine's start and
one weight sync (reload in place, checked). Run it where vLLM is installed (`make bench-engines`,
in .venv-vllm):

    .venv-vllm/bin/python tools/bench_engines.py                       # tiny Llama-2, head 64
    .venv-vllm/bin/python tools/bench_engines.py --family gpt2 --hidden 512 --heads 8
    .venv-vllm/bin/python tools/bench_engines.py --model /path/to/checkpoint

A tiny model's head size must be one vLLM's CPU attention takes (hidden / heads = 64 here).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]


def _tokens_per_s(engine: Any, prompts: list[Any], a: argparse.Namespace, seed: int) -> float:
    t0 = time.perf_counter()
    gens = engine.generate(prompts, n=a.n, seed=seed)
    dt = time.perf_counter() - t0
    return sum(len(g.token_ids) for gs in gens for g in gs) / dt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", help="a local checkpoint directory (else a tiny random model)")
    p.add_argument("--models-dir", default=str(ROOT.parent / "shared" / "models"))
    p.add_argument("--family", default="llama2-7b", help="tiny model's architecture/tokenizer")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--n", type=int, default=8, help="completions per prompt")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cpu-cores", default="auto", help="vLLM's OpenMP cores (engine cpu_cores)")
    a = p.parse_args()

    import torch

    from mrl_actors.models.load import build_tiny, load_model
    from mrl_actors.rollout import EngineConfig, SamplingConfig, encode_prompt, make_engine
    from mrl_actors.tasks import ArithmeticTask

    if a.model:
        model, tok = load_model(a.model)
        name = Path(a.model).name
    else:
        model, tok = build_tiny(
            Path(a.models_dir) / a.family, hidden_size=a.hidden, layers=a.layers, heads=a.heads
        )
        name = f"tiny {a.family} h{a.hidden}/{a.heads} x{a.layers}"
    task = ArithmeticTask()
    prompts = [encode_prompt(tok, task.prompt_text(i)) for i in task.sample(0, 0, a.prompts)]
    sampling = SamplingConfig(max_new_tokens=a.new_tokens, stop_at_eos=False)
    hf = make_engine(EngineConfig(sampling=sampling), model, tok)
    cfg = EngineConfig(
        kind="vllm",
        sampling=sampling,
        dtype="float32",
        enforce_eager=True,
        max_model_len=max(len(x) for x in prompts) + a.new_tokens + 8,
        kv_cache_gib=0.25,
        cpu_cores=a.cpu_cores,
    )
    with tempfile.TemporaryDirectory(prefix="bench-engines-") as d:
        vl = make_engine(cfg, model, tok, engine_dir=Path(d))
        t0 = time.perf_counter()
        _tokens_per_s(vl, prompts[:1], a, 0)  # starts the engine
        start_s = time.perf_counter() - t0
        _tokens_per_s(hf, prompts[:1], a, 0)  # warm-up
        rates: dict[str, list[float]] = {"hf": [], "vllm": []}
        for r in range(a.rounds):
            rates["hf"].append(_tokens_per_s(hf, prompts, a, r + 1))
            rates["vllm"].append(_tokens_per_s(vl, prompts, a, r + 1))
        with torch.no_grad():
            for q in model.parameters():
                q.mul_(1.001)
        t0 = time.perf_counter()
        vl.sync_weights(model, 1)
        sync_s = time.perf_counter() - t0
        how = "reload" if vl.reloads else "restart"  # type: ignore[attr-defined]
        vl.close()  # type: ignore[attr-defined]
    print(
        f"# {name}; {a.prompts} prompts x {a.n}, {a.new_tokens} new tokens, {a.rounds} rounds "
        f"alternating; torch threads here {torch.get_num_threads()}, vLLM cores {a.cpu_cores!r}"
    )
    print("| engine | tokens/s (median) | min..max | vs hf |")
    print("|---|---|---|---|")
    base = statistics.median(rates["hf"])
    for k, v in rates.items():
        med = statistics.median(v)
        print(f"| {k} | {med:,.0f} | {min(v):,.0f}..{max(v):,.0f} | {med / base:.2f}x |")
    print(
        f"\nvLLM engine start (enforce_eager): {start_s:.1f} s; weight sync ({how}): {sync_s:.2f} s"
    )


if __name__ == "__main__":
    main()
