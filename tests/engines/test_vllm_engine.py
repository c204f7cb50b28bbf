"""The project's vLLM engine against its HF engine, on the same weights and prompts.

Tiny random-weight models of real architectures (GPT-2, Llama-2) with their real tokenizers,
head size 64 (hidden 128, 2 heads: a size vLLM's CPU attention takes), in float32: vLLM then
computes what the HF engine computes, so greedy tokens are equal and the behaviour log-probs
agree with the learner's within TOL. After a weight update the engine's greedy outputs are the
new weights' (the HF engine on the new weights says what they are).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mrl_actors.errors import ConfigError
from mrl_actors.grpo.batch import Sample, collate
from mrl_actors.grpo.logprobs import completion_logps
from mrl_actors.models.load import build_tiny
from mrl_actors.rollout import EngineConfig, SamplingConfig, encode_prompt, make_engine
from mrl_actors.rollout.hf import HFEngine
from mrl_actors.rollout.vllm_engine import EngineSyncError, VLLMEngine

NEW = 12  # new tokens per completion
TOL = 1e-4  # |vLLM behaviour log-prob - learner log-prob| per token, float32 on CPU
PROMPTS = (
    "Q: 1+2=\nA:",
    "Hello",
    "Q: 12+30=\nA: the",
    "The capital of France is",
    "def add(a, b):",
    "Once upon a time",
    "1, 2, 3,",
    "Translate: bonjour ->",
)


def _cfg(**kw: Any) -> EngineConfig:
    return EngineConfig(
        kind="vllm",
        sampling=SamplingConfig(max_new_tokens=NEW, stop_at_eos=False, **kw),
        dtype="float32",
        enforce_eager=True,
        max_model_len=128,
        kv_cache_gib=0.0625,
    )


@pytest.fixture(scope="module", params=["llama2-7b", "gpt2"])
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def setup(
    family: str, models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, Any, VLLMEngine, int]]:
    model, tok = build_tiny(models_dir / family, hidden_size=128, layers=2, heads=2, seed=0)
    threads = torch.get_num_threads()
    eng = make_engine(_cfg(), model, tok, engine_dir=tmp_path_factory.mktemp("engines"))
    assert isinstance(eng, VLLMEngine)
    try:
        yield model, tok, eng, threads
    finally:
        eng.close()


def _prompts(tok: Any) -> list[np.ndarray]:
    return [encode_prompt(tok, t) for t in PROMPTS]


def _greedy(engine: Any, tok: Any) -> list[Any]:
    return [gs[0] for gs in engine.generate(_prompts(tok), n=1, seed=0, greedy=True)]


def test_greedy_outputs_are_token_equal_to_the_hf_engines(
    setup: tuple[Any, Any, VLLMEngine, int],
) -> None:
    """8 prompts x 12 tokens: the same ids, the same text, the same (unscaled) log-probs."""
    model, tok, eng, _ = setup
    hf = HFEngine(model, tok, _cfg().sampling)
    ours, theirs = _greedy(eng, tok), _greedy(hf, tok)
    for v, h in zip(ours, theirs, strict=True):
        assert v.token_ids.tolist() == h.token_ids.tolist()
        assert len(v.token_ids) == NEW
        assert v.text == h.text
        np.testing.assert_allclose(v.logprobs, h.logprobs, atol=TOL)


def test_engine_runs_in_its_own_processes_and_leaves_our_threads(
    setup: tuple[Any, Any, VLLMEngine, int],
) -> None:
    """vLLM's CPU worker cuts torch's threads where it runs: not in this process."""
    _, tok, eng, threads = setup
    _greedy(eng, tok)
    assert torch.get_num_threads() == threads
    assert os.environ.get("VLLM_CPU_OMP_THREADS_BIND") is None  # set for its processes only


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_behaviour_logprobs_match_the_learners(
    setup: tuple[Any, Any, VLLMEngine, int], temperature: float
) -> None:
    """Sampled at `temperature`, each token's behaviour log-prob is the learner's within TOL."""
    model, tok, _, _ = setup
    eng = setup[2]
    eng.cfg = _cfg(temperature=temperature)
    try:
        prompts = _prompts(tok)[:4]
        gens = eng.generate(prompts, n=3, seed=7)
    finally:
        eng.cfg = _cfg()
    samples = [
        Sample(p, g.token_ids, g.logprobs, 0.0)
        for p, gs in zip(prompts, gens, strict=True)
        for g in gs
    ]
    assert len({s.completion_ids.tobytes() for s in samples}) > 1  # it sampled
    b = collate(samples)
    with torch.no_grad():
        lp, _ = completion_logps(
            model, b.input_ids, b.attention_mask, b.completion_ids.size(1), temperature
        )
    gap = float(((lp - b.behaviour_logps).abs() * b.mask).max())
    assert gap < TOL


def test_after_a_weight_update_the_outputs_are_the_new_weights(
    setup: tuple[Any, Any, VLLMEngine, int], models_dir: Path, family: str
) -> None:
    """Synced to other weights, the engine answers as the HF engine on those weights does; the
    sync was checked (probe gap within tolerance), and only the new version is kept on disk."""
    model, tok, eng, _ = setup
    other, _ = build_tiny(models_dir / family, hidden_size=128, layers=2, heads=2, seed=5)
    before = [g.token_ids.tolist() for g in _greedy(eng, tok)]
    syncs = eng.reloads + eng.restarts
    eng.sync_weights(other, 3)
    assert eng.version == 3 and eng.reloads + eng.restarts == syncs + 1
    assert eng.last_gap < 1e-3
    after = _greedy(eng, tok)
    expected = _greedy(HFEngine(other, tok, _cfg().sampling), tok)
    assert [g.token_ids.tolist() for g in after] == [g.token_ids.tolist() for g in expected]
    assert [g.token_ids.tolist() for g in after] != before
    assert sorted(p.name for p in eng.dir.iterdir()) == ["v3"]
    eng.sync_weights(model, 4)  # back, for the tests that follow
    assert sorted(p.name for p in eng.dir.iterdir()) == ["v4"]


def test_a_sync_that_cannot_be_checked_restarts_then_says_so(
    models_dir: Path, tmp_path: Path
) -> None:
    """A probe that never passes (tolerance below float noise): the reload is not trusted, the
    engine restarts from the synced directory, and the still-failing check raises, naming it."""
    model, tok = build_tiny(models_dir / "llama2-7b", hidden_size=128, layers=1, heads=2, seed=0)
    cfg = EngineConfig(
        kind="vllm",
        sampling=SamplingConfig(max_new_tokens=4),
        dtype="float32",
        enforce_eager=True,
        max_model_len=64,
        kv_cache_gib=0.03125,
        sync_check_tol=1e-300,
    )
    eng = make_engine(cfg, model, tok, engine_dir=tmp_path)
    assert isinstance(eng, VLLMEngine)
    try:
        eng.generate(_prompts(tok)[:1], n=1, seed=0)
        moved = copy.deepcopy(model)
        with torch.no_grad():
            for p in moved.parameters():
                p.add_(0.01)
        with pytest.raises(EngineSyncError, match=r"restarted from .*v1 still differs"):
            eng.sync_weights(moved, 1)
        assert eng.restarts == 0 and eng.reloads == 0 and eng.version == 0
        assert eng.model_dir == eng.dir / "v1"  # it runs on what it was given, and says so
    finally:
        eng.close()
    assert not eng.dir.exists()


def test_a_head_size_vllm_cpu_cannot_serve_is_refused_before_it_starts(
    models_dir: Path, tmp_path: Path
) -> None:
    model, tok = build_tiny(models_dir / "gpt2", hidden_size=32, layers=1, heads=2, seed=0)
    with pytest.raises(ConfigError, match=r"head size of 32, 64.*this model.s is 16"):
        make_engine(_cfg(), model, tok, engine_dir=tmp_path)
