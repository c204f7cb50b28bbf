"""vLLM engine fields and head sizes are checked when a spec is parsed, before anything starts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mrl_actors.errors import ConfigError
from mrl_actors.rollout.heads import CPU_HEAD_SIZES, head_dim, model_head_dim
from mrl_actors.spec import parse_spec


def _spec(model: str, engine: str, tiny: str = "", placement: str = "") -> str:
    return f"""
[run]
name = "t"
{placement and 'mode = "async"'}
[[policies]]
name = "p"
model = "{model}"
{tiny}
[policies.engine]
{engine}
{placement}
"""


def test_a_head_size_vllm_cpu_cannot_serve_is_refused_naming_the_policy(models_dir: Path) -> None:
    tiny = "tiny = { hidden_size = 64, layers = 1, heads = 4 }"
    with pytest.raises(ConfigError, match=r"x\.toml: policies\[0\]\.engine: .*this model's is 16"):
        parse_spec(_spec(str(models_dir / "gpt2"), 'kind = "vllm"', tiny), source="x.toml")
    parse_spec(_spec(str(models_dir / "gpt2"), 'kind = "hf"', tiny))  # HF takes any size
    ok = "tiny = { hidden_size = 128, layers = 1, heads = 2 }"
    assert parse_spec(_spec(str(models_dir / "gpt2"), 'kind = "vllm"', ok)).policies[0].tiny


def test_gpu_slots_only_take_any_head_size(models_dir: Path) -> None:
    tiny = "tiny = { hidden_size = 64, layers = 1, heads = 4 }"
    slots = """[placement]
slots = [
  {{ node = "g", slot = "{0}:0", policy = "p" }},
  {{ node = "g", slot = "{0}:1", policy = "p", role = "rollout" }},
]"""
    parse_spec(_spec(str(models_dir / "gpt2"), 'kind = "vllm"', tiny, slots.format("cuda")))
    with pytest.raises(ConfigError, match="on a CPU slot"):
        parse_spec(_spec(str(models_dir / "gpt2"), 'kind = "vllm"', tiny, slots.format("cpu")))


def test_head_size_comes_from_the_models_config(
    models_dir: Path, model_dir: Callable[[str], Path]
) -> None:
    """GPT-2 names its sizes n_embd / n_head, Llama hidden_size / num_attention_heads; both 64
    and 128 here, which vLLM's CPU kernels take. A hub id not in the cache: unknown (None)."""
    assert model_head_dim(str(models_dir / "gpt2")) == 64
    assert model_head_dim(str(model_dir("llama2-7b"))) == 128
    assert model_head_dim("Org/not-cached-anywhere") is None
    assert head_dim({"head_dim": 80, "hidden_size": 64, "num_attention_heads": 4}) == 80
    assert {64, 128} <= set(CPU_HEAD_SIZES) and 16 not in CPU_HEAD_SIZES
    parse_spec(_spec(str(model_dir("llama2-7b")), 'kind = "vllm"'))


def test_engine_fields_are_checked_in_the_spec(models_dir: Path) -> None:
    model = str(models_dir / "gpt2")
    with pytest.raises(ConfigError, match=r"policies\[0\]\.engine\.max_model_len"):
        parse_spec(_spec(model, 'kind = "vllm"\nmax_model_len = 8'))
    with pytest.raises(ConfigError, match=r"policies\[0\]\.engine\.cpu_cores"):
        parse_spec(_spec(model, 'kind = "vllm"\ncpu_cores = "0-"'))
    spec = parse_spec(
        _spec(model, 'kind = "vllm"\nmax_model_len = 512\nenforce_eager = true\nkv_cache_gib = 1.5')
    )
    e = spec.policies[0].engine
    assert (e.max_model_len, e.enforce_eager, e.kv_cache_gib) == (512, True, 1.5)
