"""Models: tiny random-weight versions of real architectures, warm starts, load/save, hashes.

Tiny models keep the real config (architecture, vocabulary, tokenizer) of a directory such as
`../shared/models/gpt2` and shrink only width and depth, so CPU tests exercise the same code paths
as
real checkpoints (DESIGN.md decision 2). The vocabulary then dominates the parameter count (GPT-2:
50,257 x 64), which is fine. A short supervised warm start on the synthetic task gives GRPO a policy
with non-zero reward to improve, and `tiny_policy` caches the result on disk so a run builds it
once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrl_actors.errors import ConfigError
from mrl_actors.logs import get_logger

log = get_logger(__name__)

# Config attribute names differ by family: (hidden, layers, heads, intermediate)
_SIZE_KEYS = {
    "gpt2": ("n_embd", "n_layer", "n_head", "n_inner"),
}
_DEFAULT_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
_DROPOUT_KEYS = (
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
    "attention_dropout",
    "hidden_dropout",
    "summary_first_dropout",
)


def load_tokenizer(path: str | Path) -> Any:
    """The tokenizer in `path`, with a pad token (the eos token when it has none)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def build_tiny(
    family_dir: str | Path,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    seed: int = 0,
) -> tuple[Any, Any]:
    """A random-weight float32 model of `family_dir`'s architecture, shrunk, and its real tokenizer.

    Weights are drawn inside `torch.random.fork_rng` from `seed`: same seed, same weights, and the
    caller's global RNG is left as it was.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    family_dir = Path(family_dir)
    if not (family_dir / "config.json").exists():
        raise ConfigError(f"{family_dir}: no config.json (expected a model directory)")
    cfg = AutoConfig.from_pretrained(str(family_dir))
    h, n_layer, n_head, inter = _SIZE_KEYS.get(cfg.model_type, _DEFAULT_KEYS)
    setattr(cfg, h, hidden_size)
    setattr(cfg, n_layer, layers)
    setattr(cfg, n_head, heads)
    setattr(cfg, inter, 4 * hidden_size)
    if hasattr(cfg, "num_key_value_heads"):
        cfg.num_key_value_heads = heads
    if hasattr(cfg, "head_dim"):
        cfg.head_dim = hidden_size // heads
    for k in _DROPOUT_KEYS:
        if hasattr(cfg, k):
            setattr(cfg, k, 0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.eval()
    return model, load_tokenizer(family_dir)


def load_model(path_or_hub_id: str | Path, *, dtype: Any = torch.float32) -> tuple[Any, Any]:
    """A real checkpoint and its tokenizer from a local directory (or, with network, the hub)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path_or_hub_id), dtype=dtype)
    model.eval()
    return model, load_tokenizer(path_or_hub_id)


def save_model(model: Any, directory: str | Path, tokenizer: Any | None = None) -> Path:
    """Save as safetensors + config (+ tokenizer): `from_pretrained(directory)` loads it back."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(d), safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(d))
    return d


def weights_sha256(model: Any) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        a = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{a.dtype}|{tuple(a.shape)}\n".encode())
        h.update(a.view(torch.uint8).numpy().tobytes() if a.numel() else b"")
    return h.hexdigest()


def target_ids(tokenizer: Any, prompt: str, target: str, prompt_ids: Any) -> list[int]:
    """Token ids of `target` as the model would produce them right after `prompt`.

    Encoding `target` on its own is wrong for SentencePiece tokenizers that add a dummy prefix
    space (Mistral: `" 12"` alone becomes `['▁▁', '1', '2']`, after the prompt it is `['▁', '1',
    '2']`), so the target is cut from the joint encoding of prompt + target. When the prompt's ids
    are not a prefix of the joint ids (a merge across the boundary) that cut is ill-defined and the
    target is encoded on its own, as before.
    """
    p = [int(i) for i in prompt_ids]
    joint = [int(i) for i in tokenizer(prompt + target)["input_ids"]]
    if len(joint) > len(p) and joint[: len(p)] == p:
        return joint[len(p) :]
    return [int(i) for i in tokenizer(target, add_special_tokens=False)["input_ids"]]


def warm_start(
    model: Any,
    tokenizer: Any,
    task: Any,
    *,
    steps: int = 200,
    seed: int = 0,
    batch_size: int = 32,
    lr: float = 3e-3,
) -> float:
    """Supervised fine-tuning on `task.target_text` for `steps` AdamW steps; returns the last loss.

    Loss on the completion tokens only (prompt tokens are context), eos appended so the model
    learns to stop. Deterministic: batches come from `task.sample(seed, step, batch_size)`.
    """
    from mrl_actors.grpo.batch import Sample, collate
    from mrl_actors.grpo.logprobs import completion_logps
    from mrl_actors.rollout.prompts import encode_prompt

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    eos = tokenizer.eos_token_id
    loss_v = float("nan")
    for step in range(steps):
        samples = []
        for item in task.sample(seed, step, batch_size):
            prompt = task.prompt_text(item)
            p = encode_prompt(tokenizer, prompt)
            ids = [*target_ids(tokenizer, prompt, task.target_text(item), p), eos]
            c = np.asarray(ids, dtype=np.int32)
            samples.append(Sample(p, c, np.zeros(len(c), np.float32), 0.0))
        b = collate(samples, tokenizer.pad_token_id or 0)
        logps, _ = completion_logps(
            model, b.input_ids, b.attention_mask, b.completion_ids.size(1), 1.0
        )
        loss = -(logps * b.mask).sum() / b.mask.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_v = float(loss.detach())
    model.eval()
    return loss_v


def tiny_policy(
    family_dir: str | Path,
    cache_dir: str | Path,
    task: Any,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    seed: int = 0,
    warm_steps: int = 200,
) -> tuple[Any, Any]:
    """A warm-started tiny model, built once, then loaded from `cache_dir` (keyed by recipe)."""
    import transformers

    recipe = {
        "family": Path(family_dir).name,
        "config": json.loads((Path(family_dir) / "config.json").read_text()),
        "hidden": hidden_size,
        "layers": layers,
        "heads": heads,
        "seed": seed,
        "warm_steps": warm_steps,
        "task": task.name,
        "task_cfg": repr(getattr(task, "cfg", None)),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "recipe_version": 2,  # 2: targets cut from the joint encoding
    }
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    d = Path(cache_dir) / f"{recipe['family']}-h{hidden_size}-l{layers}-{key}"
    if (d / "model.safetensors").exists():
        log.info("tiny_policy.cached", path=str(d))
        return load_model(d)
    t0 = time.perf_counter()
    model, tok = build_tiny(
        family_dir, hidden_size=hidden_size, layers=layers, heads=heads, seed=seed
    )
    loss = warm_start(model, tok, task, steps=warm_steps, seed=seed)
    tmp = d.with_name(f"{d.name}.tmp{os.getpid()}-{id(model)}")
    save_model(model, tmp, tok)
    (tmp / "recipe.json").write_text(json.dumps(recipe, sort_keys=True, indent=1))
    try:
        tmp.rename(d)  # atomic on one filesystem: concurrent builders cannot leave half a cache
    except OSError:  # another process finished first: its copy is the same recipe, keep it
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("tiny_policy.built", path=str(d), loss=loss, seconds=time.perf_counter() - t0)
    return load_model(d)
