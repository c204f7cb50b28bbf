"""GPU-host specs parse and build their runtimes, vLLM engines included, from a model cache.

The test builds a Hugging Face cache (`models--Org--Name/snapshots/<rev>/`, `HF_HUB_OFFLINE=1`)
holding tiny real-architecture models under the hub ids `math-pair.toml` names. Built here on
the CPU: vLLM engines start on first use, so building one costs nothing, and the head size is
checked for the device the runtime gets. A model whose head size vLLM's CPU kernels cannot
serve is refused when the spec is parsed, naming the policy, unless the placement puts it on
GPU slots only.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mrl_actors.errors import ConfigError
from mrl_actors.models.load import build_tiny
from mrl_actors.rollout.hf import HFEngine
from mrl_actors.rollout.vllm_engine import VLLMEngine
from mrl_actors.spec import parse_spec
from mrl_actors.tasks import ArithmeticConfig, ArithmeticTask

ROOT = Path(__file__).resolve().parents[2]
REV = "0123456789abcdef0123456789abcdef01234567"
QWEN, LLAMA = "Qwen/Qwen2.5-1.5B-Instruct", "meta-llama/Llama-3.2-1B-Instruct"


def _cache(hub: Path, repo: str, family_dir: Path, hidden: int, heads: int) -> None:
    entry = hub / f"models--{repo.replace('/', '--')}"
    model, tok = build_tiny(family_dir, hidden_size=hidden, layers=1, heads=heads, seed=0)
    model.save_pretrained(str(entry / "snapshots" / REV), safe_serialization=True)
    tok.save_pretrained(str(entry / "snapshots" / REV))
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(REV)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, models_dir: Path) -> Path:
    """Qwen of head size 64 (vLLM's CPU kernels take it), Llama of head size 16 (they do not)."""
    path = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _cache(path, QWEN, models_dir / "qwen1.5-1.8b", hidden=128, heads=2)
    _cache(path, LLAMA, models_dir / "llama2-7b", hidden=32, heads=2)
    torch.set_num_threads(1)
    return path


def _math_pair() -> str:
    return (ROOT / "runtime" / "experiments" / "math-pair.toml").read_text()


def _build(spec: object, name: str, tmp_path: Path) -> object:
    from mrl_actors.actors.runtime import build_runtime, engine_dir

    task = ArithmeticTask(ArithmeticConfig(size=16))
    p = next(p for p in spec.policies if p.name == name)  # type: ignore[attr-defined]
    return build_runtime(spec, p, task, engine_dir=engine_dir(tmp_path, name))  # type: ignore[arg-type]


def test_math_pair_builds_vllm_engines_where_the_head_size_allows(
    hub: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"policies\[1\]\.engine: .*this model's is 16"):
        parse_spec(_math_pair(), source="math-pair.toml")
    spec = parse_spec(_llama_on_hf(_math_pair()), source="math-pair.toml")
    qwen = _build(spec, "qwen", tmp_path)
    assert isinstance(qwen.engine, VLLMEngine)  # type: ignore[attr-defined]
    assert qwen.engine.cfg.gpu_memory_utilization == 0.3  # type: ignore[attr-defined]
    assert isinstance(_build(spec, "llama", tmp_path).engine, HFEngine)  # type: ignore[attr-defined]
    assert not list((tmp_path / "engines" / "qwen").glob("*"))  # nothing started, nothing written


def _llama_on_hf(text: str) -> str:
    """math-pair.toml with the Llama policy's engine kind set to hf."""
    head, llama = text.split('name = "llama"', 1)
    return head + 'name = "llama"' + llama.replace('kind = "vllm"', 'kind = "hf"', 1)


def _placed_async(text: str) -> str:
    """math-pair.toml as an asynchronous run placed on two GPU nodes' slots (on the synthetic
    arithmetic task: the MATH files are not here)."""
    text = text.replace('mode = "lockstep"', 'mode = "async"\nrollout_replicas = 1', 1)
    task = text[text.index("[task]") : text.index("[probes.sharing]")]
    text = text.replace(task, '[task]\nkind = "arithmetic"\n\n')
    return (
        text
        + """
[placement]
slots = [
  { node = "g1", slot = "cuda:0", policy = "qwen", role = "learner" },
  { node = "g1", slot = "cuda:1", policy = "qwen", role = "rollout" },
  { node = "g2", slot = "cuda:0", policy = "llama", role = "learner" },
  { node = "g2", slot = "cuda:1", policy = "llama", role = "rollout" },
]
"""
    )


def test_an_async_placed_gpu_spec_parses_and_builds(hub: Path, tmp_path: Path) -> None:
    """On GPU slots only, a head size of 16 is not refused (vLLM falls back to FlexAttention);
    built on a CPU, the same engine is refused before it starts; the learner evaluates with
    an HF engine over its own weights and starts no vLLM engine."""
    from mrl_actors.actors.roles import learner_runtime, rollout_runtime

    spec = parse_spec(_placed_async(_math_pair()), source="placed.toml")
    assert spec.run.mode == "async" and len(spec.placement.slots) == 4
    rollout = rollout_runtime(spec, "qwen", tmp_path)
    assert isinstance(rollout.engine, VLLMEngine)
    assert rollout.engine.root == tmp_path / "engines" / "qwen"
    learner = learner_runtime(spec, "qwen", tmp_path)
    assert isinstance(learner.engine, HFEngine) and learner.engine.model is learner.model
    with pytest.raises(ConfigError, match=r"on a CPU slot .* this model's is 16"):
        rollout_runtime(spec, "llama", tmp_path)
    with pytest.raises(ConfigError, match=r"policies\[1\]\.engine"):
        on_cpu = 'slot = "cpu:1", policy = "llama"'
        text = _placed_async(_math_pair()).replace('slot = "cuda:1", policy = "llama"', on_cpu)
        parse_spec(text, source="placed.toml")  # a rollout slot on a CPU: refused at parse
