"""Hub ids in a spec resolve from the local Hugging Face cache, with no network.

The cache is built by the test in the hub's layout (`models--Org--Name/snapshots/<rev>/`, with
`refs/main` naming the revision), holding tiny real-architecture models, and `HF_HUB_CACHE` points
at it with `HF_HUB_OFFLINE=1`: what a GPU host with cached weights and no network sees.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
import torch

from mrl_actors.errors import ConfigError
from mrl_actors.models.hub import is_hub_id, local_model_dir
from mrl_actors.models.load import build_tiny, load_model, weights_sha256

ROOT = Path(__file__).resolve().parents[2]
REV = "0123456789abcdef0123456789abcdef01234567"


def _cache_model(hub: Path, repo: str, family_dir: Path, seed: int) -> str:
    """Save a tiny model of `family_dir`'s architecture as the cached snapshot of `repo`."""
    entry = hub / f"models--{repo.replace('/', '--')}"
    snap = entry / "snapshots" / REV
    model, tok = build_tiny(family_dir, hidden_size=16, layers=2, heads=4, seed=seed)
    model.save_pretrained(str(snap), safe_serialization=True)
    tok.save_pretrained(str(snap))
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(REV)
    return weights_sha256(model)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "hub"
    path.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return path


def test_hub_ids_and_paths_are_told_apart(tmp_path: Path) -> None:
    assert is_hub_id("Qwen/Qwen2.5-0.5B-Instruct") and is_hub_id("gpt2")
    assert not is_hub_id("./models/gpt2") and not is_hub_id("/abs/gpt2")
    assert not is_hub_id("a/b/c") and not is_hub_id("has space/x")
    (tmp_path / "Org").mkdir()
    assert not is_hub_id(tmp_path / "Org")  # an existing path is a path


def test_a_cached_hub_id_loads_offline(hub: Path, model_dir: Callable[[str], Path]) -> None:
    from mrl_actors.thl import load_vocab

    torch.set_num_threads(1)
    sha = _cache_model(hub, "Qwen/Qwen2.5-0.5B-Instruct", model_dir("qwen1.5-1.8b"), seed=1)
    snap = hub / "models--Qwen--Qwen2.5-0.5B-Instruct" / "snapshots" / REV
    assert local_model_dir("Qwen/Qwen2.5-0.5B-Instruct") == snap
    model, tok = load_model("Qwen/Qwen2.5-0.5B-Instruct")
    assert weights_sha256(model) == sha
    vocab = load_vocab("Qwen/Qwen2.5-0.5B-Instruct")
    assert vocab.fingerprint == load_vocab(model_dir("qwen1.5-1.8b")).fingerprint
    assert tok("Q: 1+2=")["input_ids"] == vocab.tokenizer.encode("Q: 1+2=").ids


def test_a_tiny_policy_of_a_cached_hub_id(
    hub: Path, tmp_path: Path, model_dir: Callable[[str], Path]
) -> None:
    """`tiny = {...}` with a hub id: the architecture comes from the cached snapshot's config."""
    from mrl_actors.actors.warmstart import tiny_policy
    from mrl_actors.tasks import ArithmeticConfig, ArithmeticTask

    torch.set_num_threads(1)
    _cache_model(hub, "meta-llama/Llama-3.2-1B-Instruct", model_dir("llama2-7b"), seed=0)
    task = ArithmeticTask(ArithmeticConfig(size=8))
    kw = {"hidden_size": 16, "layers": 1, "heads": 2, "warm_steps": 1}
    model, _ = tiny_policy("meta-llama/Llama-3.2-1B-Instruct", tmp_path / "cache", task, **kw)
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.hidden_size == 16
    assert [p.name.split("-h16")[0] for p in (tmp_path / "cache").iterdir()] == [
        "Llama-3.2-1B-Instruct"
    ]


def test_an_uncached_hub_id_names_the_field(hub: Path) -> None:
    missing = r"policies\[1\]\.model = 'Org/Missing' is a hub id that is not in the local"
    with pytest.raises(ConfigError, match=missing):
        local_model_dir("Org/Missing", field="policies[1].model")
    with pytest.raises(ConfigError, match="no such directory"):
        local_model_dir(hub / "nothing-here")


def test_math_pair_builds_its_runtimes_from_the_cache(
    hub: Path, model_dir: Callable[[str], Path]
) -> None:
    """`runtime/experiments/math-pair.toml` names two hub ids; with them cached it starts.

    Its engines are vLLM (GPU only): here they are swapped for the HF engine; everything else
    (models, tokenizers, THL vocabularies, learners) is built from the spec as written.
    """
    from mrl_actors.actors.runtime import build_runtime
    from mrl_actors.spec import load_spec
    from mrl_actors.tasks import ArithmeticConfig, ArithmeticTask

    torch.set_num_threads(1)
    spec, _ = load_spec(ROOT / "runtime" / "experiments" / "math-pair.toml")
    families = {"qwen": "qwen1.5-1.8b", "llama": "llama2-7b"}
    task = ArithmeticTask(ArithmeticConfig(size=16))

    with pytest.raises(ConfigError, match=r"policies\[0\]\.model = 'Qwen/"):
        build_runtime(spec, spec.policies[0], task)  # nothing cached yet

    shas = {}
    for i, p in enumerate(spec.policies):
        assert is_hub_id(p.model)
        shas[p.name] = _cache_model(hub, p.model, model_dir(families[p.name]), seed=i)
    hf = [
        msgspec.structs.replace(p, engine=msgspec.structs.replace(p.engine, kind="hf"))
        for p in spec.policies
    ]
    spec = msgspec.structs.replace(spec, policies=hf)
    for p in spec.policies:
        rt = build_runtime(spec, p, task)
        assert rt.learner.state_dict_sha256() == shas[p.name]
        assert set(rt.peer_vocabs) == {"qwen", "llama"}
        assert rt.render(task.items(0)[0]).size > 0
