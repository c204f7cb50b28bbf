"""One GRPO learner step, top to bottom: gather -> advantages in -> loss -> optimizer step.

The learner owns a model and its AdamW state, nothing else: rollouts, rewards and advantages come
in as `Sample`s (the policy actor computes advantages, so XGRPO can pool baselines across
policies), and the step returns plain metrics that the actor publishes as a `LearnerStepped` event.

Semantics match TRL 1.16's `GRPOTrainer` with `num_iterations=1` (one optimizer step per batch):
the PPO "old" policy is the current policy at the start of the step, so the clipped ratio is 1 at
the first micro-batch, and the correction for a policy that moved since generation is TRL's
truncated importance ratio against the behaviour log-probs (`GRPOConfig.is_cap`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch

from mrl_actors.errors import ConfigError
from mrl_actors.grpo.batch import Batch, Sample, collate
from mrl_actors.grpo.config import GRPOConfig, OffPolicyLoss
from mrl_actors.grpo.logprobs import completion_logps
from mrl_actors.grpo.loss import (
    grpo_policy_loss,
    importance_stats,
    off_policy_token_loss,
    off_policy_weight,
    truncated_is_ratio,
)
from mrl_actors.logs import get_logger
from mrl_actors.models.load import save_model, weights_sha256

log = get_logger(__name__)


T = TypeVar("T")  # a micro-batch (its pieces), as the data-parallel hooks deal them


def disable_dropout(model: Any) -> None:
    """Set every dropout probability to 0: RL ratios assume the policy is a fixed function."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0


def _split(samples: Sequence[Sample], parts: int) -> list[Sequence[Sample]]:
    """`samples` in `parts` contiguous chunks of near-equal size (TRL's accumulation split)."""
    n = len(samples)
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [samples[bounds[i] : bounds[i + 1]] for i in range(parts) if bounds[i + 1] > bounds[i]]


def split_by_tokens(samples: Sequence[Sample], budget: int) -> list[Sequence[Sample]]:
    """`samples` in contiguous pieces of at most `budget` padded positions each.

    A piece of n samples pads to n x (longest prompt + longest completion) positions, which is
    what its forward pass holds; a sample alone over the budget is its own piece (a sequence is
    never cut). `budget` 0: one piece.
    """
    if budget <= 0 or not samples:
        return [samples]
    out: list[Sequence[Sample]] = []
    start, p_max, c_max = 0, 0, 0
    for i, s in enumerate(samples):
        p, c = len(s.prompt_ids), max(len(s.completion_ids), 1)
        p2, c2 = max(p_max, p), max(c_max, c)
        if i > start and (i - start + 1) * (p2 + c2) > budget:
            out.append(samples[start:i])
            start, p2, c2 = i, p, c
        p_max, c_max = p2, c2
    out.append(samples[start:])
    return out


def _set_checkpointing(model: Any, on: bool) -> None:
    """transformers' activation checkpointing on or off (the names moved in transformers 5)."""
    name = (
        "activation_checkpointing_"
        if hasattr(model, "activation_checkpointing_enable")
        else ("gradient_checkpointing_")
    )
    if on:
        getattr(model, name + "enable")()
    else:
        getattr(model, name + "disable")()


class GRPOLearner:
    """A policy's parameters, optimizer and GRPO step.

    `seed` is recorded for the run's provenance; the step itself makes no random choice (dropout is
    disabled), so the same inputs give bitwise the same weights on CPU.
    """

    def __init__(
        self,
        model: Any,
        cfg: GRPOConfig,
        *,
        ref_model: Any | None = None,
        seed: int = 0,
        pad_id: int = 0,
    ) -> None:
        if cfg.beta > 0 and ref_model is None:
            raise ConfigError(
                "GRPOConfig.beta > 0 needs ref_model (a frozen copy of the start policy)"
            )
        self.model = model
        self.cfg = cfg
        self.ref_model = ref_model
        self.seed = seed
        self.pad_id = pad_id
        self.version = 0
        disable_dropout(model)
        model.train()
        if ref_model is not None:
            ref_model.eval()
            ref_model.requires_grad_(False)
        if cfg.gradient_checkpointing and not getattr(model, "supports_gradient_checkpointing", 0):
            raise ConfigError(
                f"GRPOConfig.gradient_checkpointing: {type(model).__name__} does not support "
                "activation checkpointing"
            )
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.params,
            lr=cfg.lr,
            betas=(cfg.adam_beta1, cfg.adam_beta2),
            eps=cfg.adam_eps,
            weight_decay=cfg.weight_decay,
        )

    @contextmanager
    def _memory_mode(self) -> Iterator[None]:
        """Activation checkpointing for the learner's own passes only.

        Off again on exit: a rollout engine that shares this model object samples with its KV
        cache, which transformers drops inside checkpointed layers of a model in train mode.
        """
        if not self.cfg.gradient_checkpointing:
            yield
            return
        _set_checkpointing(self.model, True)
        try:
            yield
        finally:
            _set_checkpointing(self.model, False)

    def _autocast(self) -> Any:
        """bf16 autocast around forward passes when configured (backward runs outside it)."""
        st = ExitStack()
        if self.cfg.bf16_autocast:
            st.enter_context(torch.autocast(self.params[0].device.type, dtype=torch.bfloat16))
        return st

    def _logps(
        self, model: Any, b: Batch, *, with_entropy: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[B, T] log-probs of `b`'s completions under `model`, chunked over the LM head."""
        dev = self.params[0].device
        with self._autocast():
            return completion_logps(
                model,
                b.input_ids.to(dev),
                b.attention_mask.to(dev),
                b.completion_ids.size(1),
                self.cfg.temperature,
                with_entropy=with_entropy,
                chunk_tokens=self.cfg.logit_chunk_tokens,
            )

    def step(
        self,
        on_policy: Sequence[Sample],
        off_policy: Sequence[Sample] = (),
        off_policy_loss: OffPolicyLoss | None = None,
    ) -> dict[str, float]:
        """One optimizer step on `on_policy` (clipped GRPO) plus `off_policy` (its own term)."""
        t0 = time.perf_counter()
        m = self.accumulate_gradients(on_policy, off_policy, off_policy_loss)
        m.update(self.apply_gradients())
        m["step_time_s"] = time.perf_counter() - t0
        log.debug("grpo.stepped", version=self.version, loss=m["loss"], grad_norm=m["grad_norm"])
        return m

    def accumulate_gradients(
        self,
        on_policy: Sequence[Sample],
        off_policy: Sequence[Sample] = (),
        off_policy_loss: OffPolicyLoss | None = None,
    ) -> dict[str, float]:
        """gather -> loss -> backward for every micro-batch; leaves the summed grads in `.grad`."""
        if not on_policy and not off_policy:
            raise ConfigError("GRPOLearner.step needs at least one sample")
        if self.cfg.loss_type != "dapo" and len(on_policy) % self.cfg.grad_accum:
            # grpo/bnpo/dr_grpo normalise per micro-batch, so uneven micro-batches would weigh
            # samples unequally (TRL requires the same divisibility)
            raise ConfigError(
                f"{len(on_policy)} on-policy samples do not split into grad_accum="
                f"{self.cfg.grad_accum} equal micro-batches (loss_type {self.cfg.loss_type!r})"
            )
        if off_policy and off_policy_loss is None:
            raise ConfigError("off-policy samples given without an OffPolicyLoss")
        cfg = self.cfg
        dev = self.params[0].device
        m: dict[str, float] = {}

        # gather: the dapo normaliser is the token count of the whole step (all micro-batches);
        # each micro-batch is cut into pieces that fit the token budget (memory only)
        budget = cfg.max_tokens_per_micro_batch
        micro = _split(on_policy, cfg.grad_accum) if on_policy else []
        pieces = [[collate(p, self.pad_id) for p in split_by_tokens(mb, budget)] for mb in micro]
        num_items = float(sum(b.mask.sum() for mb in pieces for b in mb))
        loss_total = kl_sum = clip_low = clip_high = tokens = ent_sum = 0.0
        ratios, ratio_masks = [], []
        full_entropy = cfg.entropy == "full"

        with self._memory_mode():
            # loss, micro-batch by micro-batch (piece by piece), gradients accumulating; a
            # data-parallel rank runs its share of the micro-batches (`share`), and a pass with
            # factor 0 only keeps the ranks' collectives in step
            for mb, factor in self.share(pieces):
                cut = len(mb) > 1  # pieces share the micro-batch's normalisers
                mb_seqs = float(sum(b.mask.size(0) for b in mb)) if cut else None
                mb_tokens = float(sum(b.mask.sum() for b in mb)) if cut else None
                for b in mb:
                    mask = b.mask.to(dev)  # [B, T]
                    logps, entropy = self._logps(self.model, b, with_entropy=full_entropy)
                    old = logps.detach()  # num_iterations == 1: the start-of-step policy
                    if entropy is None:  # "sampled": -log pi of the tokens drawn
                        entropy = -old
                    beh = b.behaviour_logps.to(dev)  # [B, T]
                    is_ratio = None
                    if cfg.is_cap is not None:
                        is_ratio = truncated_is_ratio(old, beh, mask, cfg.is_cap)  # [B, T]
                    ref = None
                    if cfg.beta > 0:
                        with torch.no_grad():
                            ref, _ = self._logps(self.ref_model, b, with_entropy=False)
                    parts = grpo_policy_loss(
                        logps,
                        old,
                        b.advantages.to(dev),
                        mask,
                        cfg,
                        num_items_in_batch=num_items,
                        ref_logps=ref,
                        is_ratio=is_ratio,
                        weights=b.weights.to(dev),
                        micro_batch_sequences=mb_seqs,
                        micro_batch_tokens=mb_tokens,
                    )
                    (parts.loss if factor == 1.0 else parts.loss * factor).backward()
                    if not factor:
                        continue
                    loss_total += float(parts.loss.detach())
                    kl_sum += parts.kl_sum
                    clip_low, clip_high = clip_low + parts.clip_low, clip_high + parts.clip_high
                    tokens += parts.tokens
                    ent_sum += float((entropy * mask).sum())
                    ratios.append(torch.exp(torch.nan_to_num((old - beh) * mask)).flatten())
                    ratio_masks.append(mask.flatten())

            if pieces:
                sums = [loss_total, kl_sum, clip_low, clip_high, tokens, ent_sum]
                loss_total, kl_sum, clip_low, clip_high, tokens, ent_sum = self.reduce_sums(sums)
                n = max(tokens, 1.0)
                m.update(kl=kl_sum / n, clip_low=clip_low / n, clip_high=clip_high / n)
                m["clip_region"] = m["clip_low"] + m["clip_high"]
                m["entropy"] = ent_sum / n
                ratio_all = self.gather(torch.cat(ratios) if ratios else torch.zeros(0))
                mask_all = self.gather(torch.cat(ratio_masks) if ratio_masks else torch.zeros(0))
                m.update(importance_stats(ratio_all, mask_all, "is_on"))
            m["loss_on"] = loss_total
            m["tokens"] = tokens
            m["completion_length"] = tokens / len(on_policy) if on_policy else 0.0  # mean, own

            if off_policy:
                assert off_policy_loss is not None
                m.update(self._off_policy_gradients(off_policy, off_policy_loss))
                loss_total += m["loss_off"]
        m["loss"] = loss_total
        return m

    def _off_policy_gradients(
        self, off_policy: Sequence[Sample], spec: OffPolicyLoss
    ) -> dict[str, float]:
        """The off-policy term: its own token mean over all off-policy samples, times coef and
        per-sample weights; backpropagated piece by piece under the token budget."""
        dev = self.params[0].device
        obs = [
            collate(p, self.pad_id)
            for p in split_by_tokens(off_policy, self.cfg.max_tokens_per_micro_batch)
        ]
        total = float(sum(ob.mask.sum() for ob in obs))
        loss_off = 0.0
        ratios, applieds, masks = [], [], []
        for ob in obs:
            mask = ob.mask.to(dev)  # [B, T]
            beh = ob.behaviour_logps.to(dev)  # [B, T]
            w = ob.weights.to(dev).unsqueeze(1)  # [B, 1]
            logps, _ = self._logps(self.model, ob, with_entropy=False)  # [B, T]
            tok, ratio = off_policy_token_loss(logps, beh, ob.advantages.to(dev), mask, spec)
            tok = tok * w
            denom = mask.sum().clamp(min=1.0) if len(obs) == 1 else max(total, 1.0)
            off = spec.coef * (tok * mask).sum() / denom
            (off if self.off_policy_factor == 1.0 else off * self.off_policy_factor).backward()
            loss_off += float(off.detach())
            # what each token's grad log pi was actually multiplied by (truncation, shaping, weight)
            applied, _ = off_policy_weight(logps.detach(), beh, mask, spec)
            applieds.append((applied.expand_as(mask) * w).flatten())
            ratios.append(ratio.flatten())
            masks.append(mask.flatten())
        m = {"loss_off": loss_off}
        mask_all = torch.cat(masks)
        m.update(importance_stats(torch.cat(ratios), mask_all, "is_off"))
        m.update(importance_stats(torch.cat(applieds), mask_all, "is_off_applied"))
        return m

    # ------------------------------------------------------------------ data-parallel hooks
    # One process runs every micro-batch; `grpo.distributed.ShardedGRPOLearner` overrides these
    # so that N ranks split them and still report the metrics of the whole step.

    def share(self, batches: list[T]) -> list[tuple[T, float]]:
        """The micro-batches this process runs, each with its loss factor (1: its own)."""
        return [(b, 1.0) for b in batches]

    def reduce_sums(self, values: list[float]) -> list[float]:
        """Per-process metric sums -> the step's sums."""
        return values

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """A per-process 1-D tensor -> the concatenation over processes."""
        return t

    # the off-policy term's loss factor here (every rank runs it; one rank's gradient counts)
    off_policy_factor = 1.0

    def apply_gradients(self) -> dict[str, float]:
        """Clip the global grad norm, take the AdamW step, bump the policy version."""
        cfg = self.cfg
        max_norm = cfg.max_grad_norm if cfg.max_grad_norm else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.version += 1
        return {"grad_norm": grad_norm, "version": float(self.version)}

    def state_dict_sha256(self) -> str:
        """sha256 over the model's tensors (name, dtype, shape, bytes): equal iff equal weights."""
        return weights_sha256(self.model)

    def save_checkpoint(self, directory: str | Path, tokenizer: Any | None = None) -> Path:
        """Save the policy as safetensors + config (and tokenizer) that `from_pretrained` loads."""
        return save_model(self.model, directory, tokenizer)
