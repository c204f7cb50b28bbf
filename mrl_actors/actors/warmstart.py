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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrl_actors.grpo.batch import Sample, collate
from mrl_actors.grpo.logprobs import completion_logps, position_ids_from_mask
from mrl_actors.logs import get_logger
from mrl_actors.models.hub import local_model_dir
from mrl_actors.models.load import build_tiny, is_complete, load_model, save_model
from mrl_actors.rollout.prompts import encode_prompt
from mrl_actors.tasks.parts import PartView

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


@dataclass(frozen=True)
class StopRule:
    """When a warm start stops: at `max_steps`, or earlier on a target or a plateau.

    Train accuracy is measured every `check_every` steps. `target`: stop once it reaches
    this. `patience` > 0: stop on a plateau, once for `patience` checks in a row the accuracy
    has not risen more than `min_delta` above the best of the checks before *and* the loss has
    not fallen more than a `min_delta` share below its best before (a small model's accuracy
    can sit near zero for a while as its loss falls: that is learning, not a plateau).
    Neither: exactly `max_steps` steps.
    """

    max_steps: int
    target: float | None = None
    patience: int = 0
    min_delta: float = 0.01
    check_every: int = 50
    check_size: int = 128

    @property
    def checks(self) -> bool:
        return self.target is not None or self.patience > 0


def should_stop(
    accuracy: Sequence[float], rule: StopRule, loss: Sequence[float] | None = None
) -> str | None:
    """Why to stop ("target", "plateau") or None (go on), from the checks so far: the train
    accuracy at each and, when given, the loss (the same length).

    A pure function of the curve, so the rule is tested on constructed curves and a warm start
    stops at the same step wherever its measurements are the same.
    """
    if not accuracy:
        return None
    if rule.target is not None and accuracy[-1] >= rule.target:
        return "target"
    p = rule.patience
    if p <= 0 or len(accuracy) <= p:
        return None
    if max(accuracy[-p:]) > max(accuracy[:-p]) + rule.min_delta:
        return None  # accuracy still rising
    if loss is not None and min(loss[-p:]) < min(loss[:-p]) * (1.0 - rule.min_delta):
        return None  # loss still falling
    return "plateau"


@dataclass(frozen=True)
class WarmStarted:
    """Where a warm start stopped, and why; the run logs it (`warm_start_*` metrics of step 1)."""

    steps: int  # supervised steps taken
    stop: str  # "target", "plateau", "cap" (max_steps reached while checking) or "steps"
    loss: float  # the last step's loss
    train_accuracy: float | None  # the last check's (None: the rule had no checks)
    curve: tuple[tuple[int, float, float], ...] = ()  # (step, train accuracy, loss) per check

    def metrics(self) -> dict[str, float]:
        out = {
            "warm_start_steps": float(self.steps),
            "warm_start_loss": self.loss,
            "warm_start_reached_target": float(self.stop == "target"),
            "warm_start_plateaued": float(self.stop == "plateau"),
        }
        if self.train_accuracy is not None:
            out["warm_start_train_accuracy"] = self.train_accuracy
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "stop": self.stop,
            "loss": self.loss,
            "train_accuracy": self.train_accuracy,
            "curve": [list(c) for c in self.curve],
        }


def _samples(tokenizer: Any, task: Any, items: Sequence[Any]) -> tuple[list[Sample], list[int]]:
    """One supervised sample per item (target + eos), and each target's length without eos."""
    eos = tokenizer.eos_token_id
    samples, lengths = [], []
    for item in items:
        prompt = task.prompt_text(item)
        p = encode_prompt(tokenizer, prompt)  # int32 [P]
        target = target_ids(tokenizer, prompt, task.target_text(item), p)
        c = np.asarray([*target, eos], dtype=np.int32)  # [C]
        samples.append(Sample(p, c, np.zeros(len(c), np.float32), 0.0))
        lengths.append(len(target))
    return samples, lengths


def train_accuracy(model: Any, tokenizer: Any, task: Any, items: Sequence[Any]) -> float:
    """Share of `items` whose target the model predicts token by token under teacher forcing.

    Every target token the argmax: what greedy decoding then writes, up to the target's end
    (the stop string ends the line), so it is greedy train accuracy without generating.
    """
    samples, lengths = _samples(tokenizer, task, items)
    b = collate(samples, tokenizer.pad_token_id or 0)
    t = b.completion_ids.size(1)
    with torch.no_grad():
        logits = model(
            input_ids=b.input_ids,
            attention_mask=b.attention_mask,
            position_ids=position_ids_from_mask(b.attention_mask),
            use_cache=False,
        ).logits[:, -t - 1 : -1]  # [B, T, V]: the positions that predict the completion
    hit = logits.argmax(-1) == b.completion_ids  # [B, T]
    right = [bool(hit[i, :n].all()) for i, n in enumerate(lengths)]
    return float(np.mean(right))


def warm_start(
    model: Any,
    tokenizer: Any,
    task: Any,
    *,
    steps: int = 200,
    seed: int = 0,
    batch_size: int = 32,
    lr: float = 3e-3,
    rule: StopRule | None = None,
    label: str = "",
) -> WarmStarted:
    """Supervised fine-tuning on `task.target_text`: `steps` AdamW steps, or fewer by `rule`.

    Loss on the completion tokens only (prompt tokens are context), eos appended so the model
    learns to stop. Deterministic: batches come from `task.sample(seed, step, batch_size)` and
    train accuracy is measured on the first `rule.check_size` items of `task.items(seed)`.
    """
    rule = rule or StopRule(max_steps=steps)
    check = task.items(seed)[: rule.check_size] if rule.checks else []
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    loss_v, acc = float("nan"), None
    curve: list[tuple[int, float, float]] = []
    stop = "cap" if rule.checks else "steps"
    done = 0
    for step in range(rule.max_steps):
        samples, _ = _samples(tokenizer, task, task.sample(seed, step, batch_size))
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
        done = step + 1
        if done % max(1, rule.max_steps // 10) == 0 or done == rule.max_steps:  # progress
            log.info(
                "warm_start.progress", model=label, step=done, steps=rule.max_steps, loss=loss_v
            )
        if check and done % rule.check_every == 0:
            model.eval()
            acc = train_accuracy(model, tokenizer, task, check)
            model.train()
            curve.append((done, acc, loss_v))
            why = should_stop([a for _, a, _ in curve], rule, [v for _, _, v in curve])
            if why is not None:
                stop = why
                break
    model.eval()
    return WarmStarted(done, stop, loss_v, acc, tuple(curve))


WARM_START_CONFIG_KEY = "mrl_warm_start"  # where a tiny model's config keeps its warm start


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
    rule: StopRule | None = None,
    parts: Sequence[str] = (),
) -> tuple[Any, Any]:
    """A warm-started tiny model, built once, then loaded from `cache_dir` (keyed by recipe).

    `rule` (at most `warm_steps` steps) and `parts` (warm-start on those parts of the task
    only) enter the recipe only when set, so recipes from before they existed keep their key.
    Where the warm start stopped is kept in the model's config (`mrl_warm_start`): it travels
    with the `step-0` checkpoint, and a run logs it with its first learner step.
    """
    import transformers

    source = local_model_dir(family_dir)
    rule = rule if rule is not None and rule.checks else None
    recipe: dict[str, Any] = {
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
    if rule is not None:
        recipe["stop_rule"] = {**rule.__dict__, "max_steps": warm_steps}
    if parts:
        recipe["parts"] = list(parts)
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
    data = PartView(task, parts) if parts else task
    if rule is not None:
        rule = StopRule(**{**rule.__dict__, "max_steps": warm_steps})
    label = str(recipe["family"])
    done = warm_start(model, tok, data, steps=warm_steps, seed=seed, lr=lr, rule=rule, label=label)
    setattr(model.config, WARM_START_CONFIG_KEY, done.as_dict())
    # replace=False: a concurrent builder of the same recipe that finished first keeps its copy
    extra = {"recipe.json": json.dumps(recipe, sort_keys=True, indent=1)}
    save_model(model, d, tok, extra_files=extra, replace=False)
    log.info(
        "tiny_policy.built",
        model=label,
        path=str(d),
        loss=done.loss,
        steps=done.steps,
        stop=done.stop,
        train_accuracy=done.train_accuracy,
        seconds=time.perf_counter() - t0,
    )
    return load_model(d)


def warm_start_metrics(model: Any) -> dict[str, float]:
    """The `warm_start_*` metrics of a model built by `tiny_policy` (empty for other models)."""
    rec = getattr(getattr(model, "config", None), WARM_START_CONFIG_KEY, None)
    if not isinstance(rec, dict):
        return {}
    try:
        return WarmStarted(
            steps=int(rec["steps"]),
            stop=str(rec["stop"]),
            loss=float(rec["loss"]),
            train_accuracy=None if rec["train_accuracy"] is None else float(rec["train_accuracy"]),
        ).metrics()
    except (KeyError, TypeError, ValueError):
        return {}
