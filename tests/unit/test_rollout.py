"""Rollout engines: the HF engine on tiny real models, the vLLM engine's CPU-testable parts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from helpers.heads import Boost

from mrl_actors.errors import EngineUnavailableError
from mrl_actors.grpo.logprobs import completion_logps
from mrl_actors.models.load import build_tiny
from mrl_actors.rollout import EngineConfig, SamplingConfig, encode_prompt, make_engine
from mrl_actors.rollout.hf import HFEngine, sample_tokens
from mrl_actors.rollout.text import completion_text
from mrl_actors.rollout.vllm_engine import (
    engine_env,
    llm_kwargs,
    reap,
    sampling_kwargs,
    to_generation,
    vllm_available,
)


@pytest.fixture(scope="module", params=["gpt2", "mistral-7b", "llama2-7b"])
def tiny(request: pytest.FixtureRequest, model_dir: Callable[[str], Path]) -> tuple[Any, Any]:
    torch.set_num_threads(1)
    return build_tiny(model_dir(request.param), hidden_size=32, layers=1, heads=2, seed=1)


def _prompts(tok: Any) -> list[np.ndarray]:
    return [encode_prompt(tok, t) for t in ("Q: 1+2=\nA:", "Hello", "Q: 12+30=\nA: the")]


def test_hf_engine_is_seeded_and_deterministic(tiny: tuple[Any, Any]) -> None:
    """Same seed, same tokens and log-probs bitwise; another seed, other samples."""
    model, tok = tiny
    eng = HFEngine(model, tok, SamplingConfig(max_new_tokens=6))
    a = eng.generate(_prompts(tok), n=3, seed=5)
    b = eng.generate(_prompts(tok), n=3, seed=5)
    c = eng.generate(_prompts(tok), n=3, seed=6)
    flat = lambda r: [(g.token_ids.tobytes(), g.logprobs.tobytes()) for gs in r for g in gs]  # noqa: E731
    assert flat(a) == flat(b)
    assert flat(a) != flat(c)
    assert [len(gs) for gs in a] == [3, 3, 3]
    g = a[0][0]
    assert g.token_ids.dtype == np.int32 and g.logprobs.dtype == np.float32
    assert len(g.token_ids) == len(g.logprobs) <= 6
    assert np.all(g.logprobs <= 0)
    assert g.finish_reason in ("stop", "length")


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_behaviour_logprobs_equal_learner_logprobs(
    tiny: tuple[Any, Any], temperature: float
) -> None:
    """The engine's log-probs are what the learner computes for the same tokens (ratio ~ 1),
    including left-padded prompts of different lengths."""
    model, tok = tiny
    s = SamplingConfig(max_new_tokens=5, temperature=temperature, stop_at_eos=False)
    eng = HFEngine(model, tok, s)
    prompts = _prompts(tok)
    gens = eng.generate(prompts, n=2, seed=0)
    for p, gs in zip(prompts, gens, strict=True):
        for g in gs:
            ids = torch.from_numpy(np.concatenate([p, g.token_ids]).astype(np.int64))[None]
            lp, _ = completion_logps(
                model, ids, torch.ones_like(ids), len(g.token_ids), temperature
            )
            np.testing.assert_allclose(lp[0].detach().numpy(), g.logprobs, atol=2e-5)


def test_stop_strings_cut_after_the_stop(models_dir: Path) -> None:
    """A stop string ends the completion with finish_reason 'stop' and is kept in the text."""
    model, tok = build_tiny(models_dir / "gpt2", hidden_size=32, layers=1, heads=2, seed=1)
    eng = HFEngine(model, tok, SamplingConfig(max_new_tokens=40, stop=("e",)))
    gens = eng.generate(_prompts(tok), n=4, seed=3)
    for gs in gens:
        for g in gs:
            if g.finish_reason == "stop":
                assert "e" in g.text
                assert "e" not in tok.decode(g.token_ids[:-1].tolist())
                assert len(g.logprobs) == len(g.token_ids)
            else:
                assert len(g.token_ids) == 40 and "e" not in g.text


def test_top_p_keeps_only_the_nucleus() -> None:
    """With top_p = 0.5 and one token holding 0.6 of the mass, only that token is drawn."""
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1]] * 200))
    gen = torch.Generator().manual_seed(0)
    assert set(sample_tokens(logits, gen, top_p=0.5).tolist()) == {0}
    assert set(sample_tokens(logits, gen, top_p=1.0).tolist()) == {0, 1, 2}
    assert set(sample_tokens(logits, gen, top_p=0.8).tolist()) == {0, 1}


def test_top_k_keeps_the_k_most_likely_whatever_their_place() -> None:
    """top_k = 2 on [0.1, 0.5, 0.05, 0.35]: only ids 1 and 3, then top_p cuts inside those."""
    logits = torch.log(torch.tensor([[0.1, 0.5, 0.05, 0.35]] * 400))
    gen = torch.Generator().manual_seed(1)
    assert set(sample_tokens(logits, gen, top_k=2).tolist()) == {1, 3}
    assert set(sample_tokens(logits, gen, top_k=2, top_p=0.5).tolist()) == {1}
    assert set(sample_tokens(logits, gen, top_k=4).tolist()) == {0, 1, 2, 3}


def test_inverse_cdf_draws_each_token_with_its_probability() -> None:
    """40,000 draws from a known distribution over 6 ids (one of probability 0): each id's
    frequency within 5 standard errors of its probability, the impossible one never drawn."""
    probs = torch.tensor([0.5, 0.2, 0.0, 0.15, 0.1, 0.05])
    n = 40_000
    logits = torch.log(probs).expand(n, -1)  # log 0 = -inf
    draws = sample_tokens(logits, torch.Generator().manual_seed(2))
    freq = torch.bincount(draws, minlength=6).double() / n
    se = (probs.double() * (1 - probs.double()) / n).sqrt()
    assert freq[2] == 0
    assert bool(((freq - probs.double()).abs() <= 5 * se + 1e-12).all()), freq


def test_sampler_is_seeded_one_uniform_per_row() -> None:
    """The same generator state gives the same tokens; each call advances it by one uniform a row
    (so a batch's stream does not depend on the vocabulary size or the truncation)."""
    logits = torch.randn(5, 1000, generator=torch.Generator().manual_seed(3))
    a = sample_tokens(logits, torch.Generator().manual_seed(4), top_p=0.9)
    b = sample_tokens(logits, torch.Generator().manual_seed(4), top_p=0.9)
    assert torch.equal(a, b)
    g = torch.Generator().manual_seed(4)
    sample_tokens(logits, g, top_k=50)
    u = torch.rand(1, generator=g, dtype=torch.float64)
    ref = torch.Generator().manual_seed(4)
    torch.rand(5, 1, generator=ref, dtype=torch.float64)
    assert torch.equal(u, torch.rand(1, generator=ref, dtype=torch.float64))


def test_sync_weights_tracks_version_and_copies(tiny: tuple[Any, Any], models_dir: Path) -> None:
    model, tok = tiny
    eng = make_engine(EngineConfig(kind="hf"), model, tok)
    eng.sync_weights(model, 3)
    assert eng.version == 3
    other, _ = build_tiny(models_dir / "gpt2", hidden_size=32, layers=1, heads=2, seed=9)
    src, _ = build_tiny(models_dir / "gpt2", hidden_size=32, layers=1, heads=2, seed=10)
    e2 = HFEngine(other, tok, SamplingConfig())
    e2.sync_weights(src, 1)
    assert torch.equal(other.lm_head.weight, src.lm_head.weight)


@pytest.mark.skipif(vllm_available(), reason="vLLM is installed here")
def test_vllm_engine_says_clearly_when_missing(tiny: tuple[Any, Any]) -> None:
    model, tok = tiny
    with pytest.raises(EngineUnavailableError, match=r"pip install -e '\.\[vllm\]'"):
        make_engine(EngineConfig(kind="vllm"), model, tok)


def _fake_output(ids: list[int], lps: list[float], reason: str, text: str | None) -> Any:
    logprobs = [
        {t: SimpleNamespace(logprob=lp), 7: SimpleNamespace(logprob=-9.0)}
        for t, lp in zip(ids, lps, strict=False)
    ]
    return SimpleNamespace(token_ids=ids, logprobs=logprobs, text=text, finish_reason=reason)


def test_vllm_output_conversion(tiny: tuple[Any, Any]) -> None:
    """vLLM CompletionOutputs become Generations: sampled-token log-probs, reasons mapped, and
    the text `completion_text` says, not vLLM's own."""
    _, tok = tiny
    prompt = encode_prompt(tok, "Q: 1+2=\nA:")
    g = to_generation(_fake_output([5, 6], [-0.5, -1.5], "stop", "vllm's"), tok, prompt)
    assert g.token_ids.tolist() == [5, 6] and g.logprobs.tolist() == [-0.5, -1.5]
    assert g.finish_reason == "stop" and g.text == completion_text(tok, prompt, [5, 6])
    g = to_generation(_fake_output([5], [-0.25], "abort", None), tok, prompt)
    assert g.finish_reason == "length"
    bad = _fake_output([5, 6], [-0.5, -1.5], "stop", "ab")
    bad.logprobs = None
    with pytest.raises(EngineUnavailableError, match="logprobs=0"):
        to_generation(bad, tok, prompt)


def test_completion_text_reads_as_after_the_prompt(model_dir: Callable[[str], Path]) -> None:
    """Llama's decoder drops a sequence's leading "▁": decoded alone, " 3" reads "3". Every
    engine's text keeps what the completion adds after its prompt."""
    _, tok = build_tiny(model_dir("llama2-7b"), hidden_size=32, layers=1, heads=2, seed=1)
    prompt = encode_prompt(tok, "Q: 1+2=\nA:")
    ids = tok(" 3 is it", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids).startswith("3")  # the defect: the space is gone
    assert (
        completion_text(tok, prompt, ids)
        == tok.decode([*prompt, *ids], skip_special_tokens=True)[
            len(tok.decode(prompt, skip_special_tokens=True)) :
        ]
    )
    assert completion_text(tok, prompt, ids).startswith(" 3")
    assert completion_text(tok, [], ids) == tok.decode(ids)
    model, _ = build_tiny(model_dir("llama2-7b"), hidden_size=32, layers=1, heads=2, seed=1)
    for gens in HFEngine(model, tok, SamplingConfig(max_new_tokens=6)).generate(
        [prompt], n=3, seed=0
    ):
        for g in gens:
            assert g.text == completion_text(tok, prompt, g.token_ids.tolist())


def test_vllm_request_and_engine_arguments_mirror_the_spec() -> None:
    """SamplingParams mirror SamplingConfig; LLM arguments carry every engine field; the
    engine's processes get their own multiprocessing and, on CPU, their cores."""
    kw = sampling_kwargs(
        SamplingConfig(temperature=0.7, top_p=0.9, max_new_tokens=9, stop=("\n",)), 4, 11
    )
    assert kw == {
        "n": 4, "temperature": 0.7, "top_p": 0.9, "max_tokens": 9, "stop": ["\n"],
        "include_stop_str_in_output": True, "ignore_eos": False, "logprobs": 0, "seed": 11,
    }  # fmt: skip
    cfg = EngineConfig(
        kind="vllm", max_model_len=512, kv_cache_gib=0.5, enforce_eager=True, cpu_cores="0-1"
    )
    kw = llm_kwargs(cfg, Path("/x/v3"))
    assert kw["model"] == "/x/v3" and kw["max_model_len"] == 512 and kw["enforce_eager"]
    assert kw["kv_cache_memory_bytes"] == 2**29 and kw["logprobs_mode"] == "processed_logprobs"
    assert "max_model_len" not in llm_kwargs(EngineConfig(kind="vllm"), Path("/x"))
    assert "kv_cache_memory_bytes" not in llm_kwargs(EngineConfig(kind="vllm"), Path("/x"))
    env = engine_env(cfg, "cpu")
    assert (
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "1" and env["VLLM_CPU_OMP_THREADS_BIND"] == "0-1"
    )
    assert "VLLM_CPU_OMP_THREADS_BIND" not in engine_env(cfg, "cuda:0")


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("max_model_len", 64, "more than sampling.max_new_tokens"),
        ("kv_cache_gib", -1.0, "kv_cache_gib"),
        ("cpu_cores", "all", "cpu_cores"),
        ("sync_check_tol", -1.0, "sync_check_tol"),
    ],
)
def test_vllm_engine_fields_are_checked(field: str, value: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EngineConfig(kind="vllm", **{field: value})


def test_stale_engine_directories_of_dead_processes_are_reaped(tmp_path: Path) -> None:
    """A killed process leaves its engine directory; the next engine on this host removes it,
    and keeps those of live processes and of other hosts."""
    host = socket.gethostname()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    for name in (f"{host}-{dead}-0", f"{host}-{os.getppid()}-0", f"elsewhere-{dead}-0"):
        (tmp_path / name / "v1").mkdir(parents=True)
    assert reap(tmp_path) == [tmp_path / f"{host}-{dead}-0"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{host}-{os.getppid()}-0", f"elsewhere-{dead}-0"]
    )


def test_eos_stops_with_reason_stop_and_is_kept(model_dir: Callable[[str], Path]) -> None:
    """EOS ends a completion ("stop"), stays in token_ids (as TRL keeps it), not in the text."""
    model, tok = build_tiny(model_dir("mistral-7b"), hidden_size=32, layers=1, heads=2, seed=1)
    boosted = Boost(model.get_output_embeddings(), tok.eos_token_id)
    model.get_output_embeddings = lambda: boosted
    gens = HFEngine(model, tok, SamplingConfig(max_new_tokens=5)).generate(
        _prompts(tok), n=2, seed=0
    )
    for g in (g for gs in gens for g in gs):
        assert g.token_ids.tolist() == [tok.eos_token_id] and g.finish_reason == "stop"
        assert g.text == "" and g.logprobs[0] > -1e-3
    gens = HFEngine(model, tok, SamplingConfig(max_new_tokens=5, stop_at_eos=False)).generate(
        _prompts(tok)[:1], n=1, seed=0
    )
    assert len(gens[0][0].token_ids) == 5 and gens[0][0].finish_reason == "length"


def test_every_generation_config_eos_id_stops(models_dir: Path) -> None:
    """A token in the model's generation_config.eos_token_id list (Qwen chat: `<|im_end|>` as well
    as `<|endoftext|>`) ends a completion like the tokenizer's EOS, and is kept."""
    model, tok = build_tiny(models_dir / "gpt2", hidden_size=32, layers=1, heads=2, seed=1)
    other = 198  # "\n": not the tokenizer's EOS (50256)
    model.generation_config.eos_token_id = [tok.eos_token_id, other]
    boosted = Boost(model.get_output_embeddings(), other)
    model.get_output_embeddings = lambda: boosted
    eng = HFEngine(model, tok, SamplingConfig(max_new_tokens=5, stop=("zzz",)))
    for g in (g for gs in eng.generate(_prompts(tok), n=2, seed=0) for g in gs):
        assert g.token_ids.tolist() == [other] and g.finish_reason == "stop"
    assert eng.end_ids == {tok.eos_token_id, other}


def test_a_stop_string_with_a_leading_space_at_the_start_is_seen(
    model_dir: Callable[[str], Path],
) -> None:
    """A SentencePiece decoder (Llama-2, Mistral) strips the first "▁" of what it decodes: the
    stop check reads the completion after a token of context, so " the" as the first token
    already stops."""
    model, tok = build_tiny(model_dir("mistral-7b"), hidden_size=32, layers=1, heads=2, seed=1)
    the = tok.convert_tokens_to_ids("▁the")
    boosted = Boost(model.get_output_embeddings(), the)
    model.get_output_embeddings = lambda: boosted
    eng = HFEngine(model, tok, SamplingConfig(max_new_tokens=5, stop=(" the",)))
    for g in (g for gs in eng.generate(_prompts(tok), n=2, seed=0) for g in gs):
        assert g.token_ids.tolist() == [the] and g.finish_reason == "stop"


def test_greedy_decoding_is_transformers_greedy(tiny: tuple[Any, Any]) -> None:
    """greedy=True takes the argmax at every step: the tokens `model.generate(do_sample=False)`
    gives for each prompt alone, also when prompts of different lengths share a padded batch."""
    model, tok = tiny
    eng = HFEngine(model, tok, SamplingConfig(max_new_tokens=8))
    prompts = _prompts(tok)
    batched = eng.generate(prompts, n=1, seed=0, greedy=True)
    for p, gens in zip(prompts, batched, strict=True):
        ids = torch.from_numpy(p.astype(np.int64))[None]
        ref = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=8,
            pad_token_id=tok.pad_token_id or 0,
        )[0, len(p) :]
        assert gens[0].token_ids.tolist() == ref.tolist()


def test_greedy_ignores_the_seed_and_keeps_stop_strings(models_dir: Path) -> None:
    """Evaluation decodes greedily through the engine, so it ends where training's samples end."""
    model, tok = build_tiny(models_dir / "gpt2", hidden_size=32, layers=1, heads=2, seed=1)
    eng = HFEngine(model, tok, SamplingConfig(max_new_tokens=40, stop=("e",)))
    a = eng.generate(_prompts(tok), n=2, seed=1, greedy=True)
    b = eng.generate(_prompts(tok), n=2, seed=2, greedy=True)
    flat = lambda r: [g.token_ids.tolist() for gs in r for g in gs]  # noqa: E731
    assert flat(a) == flat(b) and all(
        gs[0].token_ids.tolist() == gs[1].token_ids.tolist() for gs in a
    )
    for g in (g for gs in a for g in gs):
        if g.finish_reason == "stop":
            assert "e" in g.text and "e" not in tok.decode(g.token_ids[:-1].tolist())
        else:
            assert len(g.token_ids) == 40


def test_vllm_greedy_request_is_temperature_zero() -> None:
    kw = sampling_kwargs(
        SamplingConfig(temperature=0.7, top_p=0.9, stop=("\n",)), 1, 3, greedy=True
    )
    assert (kw["temperature"], kw["top_p"], kw["n"], kw["stop"]) == (0.0, 1.0, 1, ["\n"])
    assert kw["ignore_eos"] is False and kw["max_tokens"] == 64
