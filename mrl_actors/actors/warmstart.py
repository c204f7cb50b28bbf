"""The supervised warm start that turns a tiny random model into a policy worth training.

GRPO learns nothing from a policy whose reward is always zero, so a tiny model first takes a short
supervised run on the task's target texts. `tiny_policy` builds that model once per recipe and
keeps it in a cache directory (keyed by everything that changes its weights), so a run, its
resume and its replay all start from the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrl_actors.grpo.batch import Sample, collate
from mrl_actors.grpo.logprobs import completion_logps
from mrl_actors.logs import get_logger
from mrl_actors.models.hub import local_model_dir
from mrl_actors.models.load import build_tiny, is_complete, load_model, save_model
from mrl_actors.rollout.prompts import encode_prompt

log = get_logger(__name__)

RECIPE_VERSION = 3  # 2: targets cut from the joint encoding; 3: consistent tiny configs (GQA kept)


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
    label: str = "",
) -> float:
    """Supervised fine-tuning on `task.target_text` for `steps` AdamW steps; returns the last loss.

    Loss on the completion tokens only (prompt tokens are context), eos appended so the model
    learns to stop. Deterministic: batches come from `task.sample(seed, step, batch_size)`.
    """
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    eos = tokenizer.eos_token_id
    loss_v = float("nan")
    for step in range(steps):
        samples = []
        for item in task.sample(seed, step, batch_size):
            prompt = task.prompt_text(item)
            p = encode_prompt(tokenizer, prompt)  # int32 [P]
            ids = [*target_ids(tokenizer, prompt, task.target_text(item), p), eos]
            c = np.asarray(ids, dtype=np.int32)  # [C]
            samples.append(Sample(p, c, np.zeros(len(c), np.float32), 0.0))
        b = collate(samples, tokenizer.pad_token_id or 0)
        logps, _ = completion_logps(  # [B, C]
            model, b.input_ids, b.attention_mask, b.completion_ids.size(1), 1.0
        )
        loss = -(logps * b.mask).sum() / b.mask.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_v = float(loss.detach())
        if (step + 1) % max(1, steps // 10) == 0 or step + 1 == steps:  # progress, 10 lines
            log.info("warm_start.progress", model=label, step=step + 1, steps=steps, loss=loss_v)
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
    lr: float = 3e-3,
) -> tuple[Any, Any]:
    """A warm-started tiny model, built once, then loaded from `cache_dir` (keyed by recipe)."""
    import transformers

    source = local_model_dir(family_dir)
    recipe = {
        "family": Path(family_dir).name,
        "config": json.loads((source / "config.json").read_text()),
        "hidden": hidden_size,
        "layers": layers,
        "heads": heads,
        "seed": seed,
        "warm_steps": warm_steps,
        "task": task.name,
        "task_cfg": repr(getattr(task, "cfg", None)),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "lr": lr,
        "recipe_version": RECIPE_VERSION,
    }
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    d = Path(cache_dir) / f"{recipe['family']}-h{hidden_size}-l{layers}-{key}"
    if is_complete(d):
        log.info("tiny_policy.cached", path=str(d))
        return load_model(d)
    t0 = time.perf_counter()
    log.info("tiny_policy.building", model=recipe["family"], steps=warm_steps, path=str(d))
    model, tok = build_tiny(
        family_dir, hidden_size=hidden_size, layers=layers, heads=heads, seed=seed
    )
    label = str(recipe["family"])
    loss = warm_start(model, tok, task, steps=warm_steps, seed=seed, lr=lr, label=label)
    # replace=False: a concurrent builder of the same recipe that finished first keeps its copy
    extra = {"recipe.json": json.dumps(recipe, sort_keys=True, indent=1)}
    save_model(model, d, tok, extra_files=extra, replace=False)
    seconds = time.perf_counter() - t0
    log.info("tiny_policy.built", model=label, path=str(d), loss=loss, seconds=seconds)
    return load_model(d)
