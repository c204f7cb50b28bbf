"""Tiny real-architecture models: built from real configs, seeded, cached, saved, loaded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from mrl_actors.actors.warmstart import target_ids, tiny_policy
from mrl_actors.errors import ConfigError
from mrl_actors.models.load import (
    SAVED_MARKER,
    build_tiny,
    discard,
    discard_partial_saves,
    is_complete,
    load_model,
    load_tokenizer,
    save_model,
    weights_sha256,
)
from mrl_actors.rollout.prompts import encode_prompt
from mrl_actors.tasks import ArithmeticConfig, ArithmeticTask, CountdownTask


@pytest.mark.parametrize("family", ["gpt2", "llama2-7b", "mistral-7b", "qwen1.5-1.8b"])
def test_build_tiny_keeps_the_real_architecture_and_vocab(
    model_dir: Callable[[str], Path], family: str
) -> None:
    torch.set_num_threads(1)
    model, tok = build_tiny(model_dir(family), hidden_size=16, layers=1, heads=2, seed=0)
    arch = model.config.architectures or [type(model).__name__]
    assert type(model).__name__ in arch  # the real config's class (GPT2LMHeadModel, ...)
    assert model.get_output_embeddings().weight.shape[0] >= len(tok) - 1000
    assert tok.pad_token_id is not None
    ids = torch.tensor([tok("Q: 1+2=")["input_ids"]])
    assert model(ids).logits.shape[-1] == model.config.vocab_size


def test_build_tiny_is_seeded_and_leaves_global_rng_alone(models_dir: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a, _ = build_tiny(models_dir / "gpt2", hidden_size=16, layers=1, heads=2, seed=4)
    after = torch.rand(3)
    b, _ = build_tiny(models_dir / "gpt2", hidden_size=16, layers=1, heads=2, seed=4)
    c, _ = build_tiny(models_dir / "gpt2", hidden_size=16, layers=1, heads=2, seed=5)
    assert torch.equal(expected, after)
    assert weights_sha256(a) == weights_sha256(b) != weights_sha256(c)


def test_tiny_policy_is_built_once_then_loaded(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mrl_actors.actors.warmstart as warmstart

    task = ArithmeticTask(ArithmeticConfig(size=16))
    kw = {"hidden_size": 16, "layers": 1, "heads": 2, "warm_steps": 3}
    m1, _ = tiny_policy(models_dir / "gpt2", tmp_path, task, **kw)

    def no_second_warm_start(*args: object, **kwargs: object) -> float:
        raise AssertionError("the cached model was warm-started again")

    monkeypatch.setattr(warmstart, "warm_start", no_second_warm_start)
    m2, _ = tiny_policy(models_dir / "gpt2", tmp_path, task, **kw)
    assert weights_sha256(m1) == weights_sha256(m2)
    assert len(list(tmp_path.iterdir())) == 1
    monkeypatch.undo()  # a different recipe below must warm-start
    fresh, _ = build_tiny(models_dir / "gpt2", hidden_size=16, layers=1, heads=2)
    assert weights_sha256(fresh) != weights_sha256(m1)  # the warm start changed the weights
    m3, _ = tiny_policy(models_dir / "gpt2", tmp_path, task, **{**kw, "warm_steps": 4})
    assert len(list(tmp_path.iterdir())) == 2 and weights_sha256(m3) != weights_sha256(m1)


def test_save_and_load_a_local_checkpoint(model_dir: Callable[[str], Path], tmp_path: Path) -> None:
    model, tok = build_tiny(model_dir("mistral-7b"), hidden_size=16, layers=1, heads=2)
    d = save_model(model, tmp_path / "ckpt", tok)
    loaded, ltok = load_model(d)
    assert weights_sha256(loaded) == weights_sha256(model)
    assert ltok("hi")["input_ids"] == tok("hi")["input_ids"]
    with pytest.raises(ConfigError, match=r"no config\.json"):
        build_tiny(tmp_path / "nothing")


@pytest.mark.parametrize("family", ["gpt2", "llama2-7b", "mistral-7b", "qwen1.5-1.8b"])
def test_warm_start_targets_are_what_follows_the_prompt(
    model_dir: Callable[[str], Path], family: str
) -> None:
    """The supervised target is the prompt's continuation in the joint encoding.

    SentencePiece tokenizers add a dummy prefix space to text encoded alone: Mistral's `" 12\\n"`
    was `['▁▁', '1', '2', '<0x0A>']` (the warm start taught a double space), and Llama-2's and
    Mistral's countdown target `<answer>` began with a stray `▁<`. Arithmetic targets of GPT-2 and
    Llama-2 (and all of GPT-2's and Qwen's) come out the same as before.
    """
    tok = load_tokenizer(model_dir(family))
    arith = ArithmeticTask(ArithmeticConfig(ops=("+", "-", "*")))
    countdown = CountdownTask()
    for task in (arith, countdown):
        for item in task.items(0)[:20]:
            prompt, target = task.prompt_text(item), task.target_text(item)
            p = encode_prompt(tok, prompt)
            ids = target_ids(tok, prompt, target, p)
            assert list(p) + ids == tok(prompt + target)["input_ids"]
            alone = tok(target, add_special_tokens=False)["input_ids"]
            if family in ("gpt2", "qwen1.5-1.8b") or (family == "llama2-7b" and task is arith):
                assert ids == alone, (family, target)
            assert not tok.convert_ids_to_tokens(ids)[0].startswith("▁▁"), (family, target)
            if task is countdown:
                assert tok.convert_ids_to_tokens(ids)[0] == "<", (family, target)
    p = encode_prompt(tok, "Q: 7+5=\nA:")
    got = tok.convert_ids_to_tokens(target_ids(tok, "Q: 7+5=\nA:", " 12\n", p))
    if family == "mistral-7b":
        assert got == ["▁", "1", "2", "<0x0A>"]


def test_target_ids_fall_back_when_the_prompt_merges_into_the_target(models_dir: Path) -> None:
    """When the prompt's ids are not a prefix of the joint ids, the target is encoded alone."""
    tok = load_tokenizer(models_dir / "gpt2")
    p = encode_prompt(tok, "hello wor")
    assert list(p) != tok("hello world")["input_ids"][: len(p)]  # "Ġwor" + "ld" -> "Ġworld"
    assert target_ids(tok, "hello wor", "ld", p) == tok("ld", add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("family", ["gpt2", "llama2-7b", "mistral-7b", "qwen1.5-1.8b"])
def test_every_family_warm_starts_learns_and_round_trips_a_checkpoint(
    model_dir: Callable[[str], Path], tmp_path: Path, family: str
) -> None:
    """Each real architecture works as a tiny policy, end to end.

    Regression: the Qwen2 config kept 24 `layer_types` for 2 layers and failed to save step 0.
    """
    from mrl_actors.grpo import GRPOConfig, GRPOLearner, Sample

    torch.set_num_threads(1)
    task = ArithmeticTask(ArithmeticConfig(size=16))
    kw = {"hidden_size": 16, "layers": 2, "heads": 4, "warm_steps": 2}
    model, tok = tiny_policy(model_dir(family), tmp_path / "cache", task, **kw)
    cfg = model.config
    assert cfg.num_hidden_layers == 2
    assert len(getattr(cfg, "layer_types", None) or [0, 0]) == 2
    kv = getattr(cfg, "num_key_value_heads", None)
    assert kv is None or cfg.num_attention_heads % kv == 0
    if family == "mistral-7b":
        assert kv == 1  # 32 heads over 8 KV heads, shrunk to 4 over 1: GQA is kept

    samples = []
    for i, item in enumerate(task.sample(0, 0, 4)):
        prompt = task.prompt_text(item)
        p = encode_prompt(tok, prompt)
        c = np.asarray([*target_ids(tok, prompt, task.target_text(item), p)], np.int32)
        samples.append(Sample(p, c, np.full(len(c), -5.0, np.float32), 1.0 if i % 2 else -1.0))
    learner = GRPOLearner(model, GRPOConfig(lr=1e-3), pad_id=tok.pad_token_id or 0)
    before = learner.state_dict_sha256()
    metrics = learner.step(samples)
    assert np.isfinite(metrics["loss"]) and learner.state_dict_sha256() != before

    d = learner.save_checkpoint(tmp_path / "ckpt" / "step-1", tok)
    assert is_complete(d)
    loaded, ltok = load_model(d)
    assert weights_sha256(loaded) == learner.state_dict_sha256()
    assert ltok("Q: 1+2=")["input_ids"] == tok("Q: 1+2=")["input_ids"]


def test_a_failed_save_leaves_the_old_checkpoint_or_nothing(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save that dies after writing the weights leaves no directory under the target name."""
    model, tok = build_tiny(models_dir / "gpt2", hidden_size=16, layers=1, heads=2, seed=0)
    target = tmp_path / "ckpt" / "step-2"

    def dies(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(type(tok), "save_pretrained", dies)
    with pytest.raises(OSError, match="disk full"):
        save_model(model, target, tok)
    assert list(target.parent.iterdir()) == []  # no step-2, and the temp dir is cleaned up
    monkeypatch.undo()

    save_model(model, target, tok)
    assert is_complete(target) and (target / SAVED_MARKER).exists()
    other, _ = build_tiny(models_dir / "gpt2", hidden_size=16, layers=1, heads=2, seed=1)
    save_model(other, target, tok)  # replaces the old one whole
    assert weights_sha256(load_model(target)[0]) == weights_sha256(other)
    assert save_model(model, target, tok, replace=False) == target  # kept: it is complete
    assert weights_sha256(load_model(target)[0]) == weights_sha256(other)
    assert sorted(p.name for p in target.parent.iterdir()) == ["step-2"]


def test_a_truncated_or_unmarked_checkpoint_is_incomplete(models_dir: Path, tmp_path: Path) -> None:
    model, tok = build_tiny(models_dir / "gpt2", hidden_size=16, layers=1, heads=2, seed=0)
    d = save_model(model, tmp_path / "step-0", tok)
    weights = d / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    assert not is_complete(d)
    (d / SAVED_MARKER).unlink()
    model.save_pretrained(str(d))  # whole again, but not through save_model: no marker
    assert not is_complete(d)
    (tmp_path / ".step-1.tmp-99-1").mkdir()  # what a killed save leaves behind
    assert discard_partial_saves(tmp_path) == [tmp_path / ".step-1.tmp-99-1"]
    discard(d)
    assert list(tmp_path.iterdir()) == []
