"""GRPO learner configuration: plain data, importable without torch.

Defaults follow TRL 1.16's `GRPOConfig` wherever TRL has the same knob, so that "our GRPO" and
"TRL's GRPO" mean the same thing unless a field says otherwise (DESIGN.md section 4, decision 5).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from mrl_actors.checks import check_float, check_int

LossType = Literal["grpo", "bnpo", "dr_grpo", "dapo"]
ScaleRewards = Literal["group", "batch", "none"]


class GRPOConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything one GRPO learner step depends on, besides the batch and the model."""

    # Loss normalisation, as TRL: grpo = mean over sequences of per-sequence token means; bnpo =
    # token
    # mean over the micro-batch; dr_grpo = token sum / (B * max_completion_length); dapo = token sum
    # /
    # tokens in the whole optimizer-step batch (all accumulation micro-batches). TRL's default:
    # dapo.
    loss_type: LossType = "dapo"
    # Advantage scaling: "group" divides by each group's std, "batch" by the whole batch's std,
    # "none"
    # only centres by the group mean (Dr. GRPO). Std is unbiased (Bessel), plus TRL's eps 1e-4.
    scale_rewards: ScaleRewards = "group"
    # Lower clipping range of the PPO ratio: clip(r, 1 - epsilon, 1 + epsilon_high).
    epsilon: float = 0.2
    # Upper clipping range (DAPO's clip-higher); None = same as `epsilon`.
    epsilon_high: float | None = None
    # KL coefficient to the frozen reference policy (k3 estimator); 0 = no reference model needed.
    beta: float = 0.0
    # Multiply the k3 KL by the (differentiable) PPO ratio, making its gradient the unbiased
    # reverse-KL gradient (DeepSeek-V3.2); TRL 1.16's `use_bias_correction_kl`, default True.
    kl_bias_correction: bool = True
    # AdamW learning rate (TRL's default 1e-6 suits 1B+ models; tiny CPU models want ~1e-4..1e-3).
    lr: float = 1e-6
    # AdamW betas, eps and decoupled weight decay (transformers' Trainer defaults).
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    # Global gradient-norm clip applied before each optimizer step; None or 0 = no clipping.
    max_grad_norm: float | None = 1.0
    # Micro-batches per optimizer step (the memory bound: one forward/backward per micro-batch);
    # each micro-batch's loss is divided so the grads add up as TRL's.
    grad_accum: int = 1
    # Temperature the logits are divided by when computing log-probs: must equal the sampling one.
    temperature: float = 1.0
    # Completion length budget: dr_grpo's constant normaliser, and the rollout engine's cap.
    max_completion_length: int = 256
    # Truncated importance sampling against the behaviour log-probs (TRL's vLLM IS correction in
    # "token_truncate" mode): each on-policy token's loss is multiplied by min(exp(logp_now -
    # logp_behaviour), is_cap). Corrects for the policy having moved since generation (async actors,
    # vLLM numerics). None disables the correction.
    is_cap: float | None = 3.0
    # --- memory and precision of the learner step (none of these changes the loss's value beyond
    # float rounding; docs/grpo.md, "Learner memory") ---
    # Completion positions per chunk of the LM head + log-softmax: the head's peak memory is a few
    # [chunk, vocabulary] float32 buffers (512 x 151,936 x 4 B = 311 MB), whatever the batch.
    logit_chunk_tokens: int = 512
    # The entropy metric: "full" = over the whole vocabulary, from the same chunked pass (a few
    # percent of the head's time); "sampled" = the mean of -log pi(token) over the completion
    # tokens themselves, a Monte-Carlo estimate that is unbiased when the tokens were sampled from
    # the current policy at `temperature` (on-policy, no truncation), and costs nothing.
    entropy: Literal["full", "sampled"] = "full"
    # Token budget of one forward/backward: each of the `grad_accum` micro-batches is cut further
    # into contiguous pieces of at most this many padded positions (sequences x (prompt +
    # completion) length), with the loss's normalisers kept those of the whole micro-batch, so the
    # gradient is the same. A sequence longer than the budget goes alone. 0 = no budget.
    max_tokens_per_micro_batch: int = 0
    # Recompute each decoder layer's activations in backward (transformers' activation
    # checkpointing) instead of keeping them: the backbone keeps one [tokens, hidden] tensor per
    # layer, at the cost of a second forward pass. On for the learner's forward/backward only.
    gradient_checkpointing: bool = False
    # Run the learner's forward and backward under torch.autocast to bfloat16 (the LM head's
    # matrix products included; softmax, log-probs and the loss stay float32). Weights, gradients
    # and optimizer state keep the policy's dtype. Off = bitwise CPU replay in float32.
    bf16_autocast: bool = False

    def __post_init__(self) -> None:
        check_float(self, "epsilon", ge=0, lt=1)  # 1 - epsilon is the lower clip bound
        check_float(self, "epsilon_high", ge=0, optional=True)
        check_float(self, "beta", ge=0)
        check_float(self, "lr", gt=0, le=1)
        check_float(self, "adam_beta1", ge=0, lt=1)
        check_float(self, "adam_beta2", ge=0, lt=1)
        check_float(self, "adam_eps", gt=0)
        check_float(self, "weight_decay", ge=0)
        check_float(self, "max_grad_norm", ge=0, optional=True)
        check_int(self, "grad_accum", 1, 4096)
        check_float(self, "temperature", gt=0, le=100)
        check_int(self, "max_completion_length", 1, 1_000_000)
        check_float(self, "is_cap", gt=0, optional=True)
        check_int(self, "logit_chunk_tokens", 1, 1_000_000)
        check_int(self, "max_tokens_per_micro_batch", 0, 1_000_000_000)

    @property
    def epsilon_low(self) -> float:
        """The lower clip range (TRL's name)."""
        return self.epsilon

    @property
    def eps_high(self) -> float:
        """The upper clip range with the `None` default resolved."""
        return self.epsilon if self.epsilon_high is None else self.epsilon_high


class OffPolicyLoss(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The loss term for extra off-policy samples (PRP peer rollouts, SGT rescued successes).

    Off-policy samples come from another policy (retokenized through the THL), so the PPO ratio
    against them is not near 1 and clipping it would zero most gradients. Two public choices:
    `truncated_is` (policy gradient weighted by a truncated ratio, as in IMPALA/verl's TIS) and
    `luffy`
    (LUFFY's regularised importance sampling: f(p) = p / (p + gamma) of the current token
    probability,     gradient only through f, no clipping).
    """

    # "truncated_is": -A * min(pi/mu, cap) * log pi per token (ratio detached); "luffy": -A * f(pi);
    # "nll": -log pi, a fixed-weight auxiliary log-likelihood (advantages and mu play no part).
    kind: Literal["truncated_is", "luffy", "nll"] = "luffy"
    # Truncation of the importance ratio pi/mu (truncated_is), per token or per sequence by `level`.
    cap: float = 1.0
    # "token": one ratio per token; "sequence": exp(sum of the token log-ratios), one per sequence.
    level: Literal["token", "sequence"] = "token"
    # LUFFY shaping constant gamma in f(p) = p / (p + gamma); LUFFY uses 0.1.
    gamma: float = 0.1
    # Coefficient lambda of the whole off-policy term relative to the on-policy loss.
    coef: float = 1.0

    def __post_init__(self) -> None:
        check_float(self, "cap", gt=0)
        check_float(self, "gamma", gt=0)
        check_float(self, "coef", ge=0)
