"""The GRPO loss on per-token log-probs: TRL 1.16's `_compute_loss`, plus an off-policy term.

Everything here is a pure function of tensors, so the parity test can feed TRL and us the same
inputs. Shapes: B sequences, T completion positions (right-padded), `mask` [B, T] marks real tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mrl_actors.errors import ConfigError
from mrl_actors.grpo.config import GRPOConfig, OffPolicyLoss


@dataclass
class LossParts:
    """A micro-batch's loss (already divided for accumulation) and detached statistics."""

    loss: torch.Tensor  # scalar, carries the graph
    kl_sum: float  # sum over masked tokens of the k3 KL (0 when beta == 0)
    clip_low: float  # masked token count clipped at 1 - epsilon with A < 0
    clip_high: float  # masked token count clipped at 1 + epsilon_high with A > 0
    tokens: float  # masked token count


def _as_token_advantages(advantages: torch.Tensor) -> torch.Tensor:
    """[B] -> [B, 1] (broadcast over tokens); [B, T] is kept (token-level advantages)."""
    return advantages.unsqueeze(1) if advantages.dim() == 1 else advantages


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(pi || ref) per token: exp(r - p) - (r - p) - 1, >= 0."""
    d = ref_logps - logps
    return torch.exp(d) - d - 1


def truncated_is_ratio(
    old_logps: torch.Tensor, behaviour_logps: torch.Tensor, mask: torch.Tensor, cap: float
) -> torch.Tensor:
    """min(exp(old - behaviour), cap) per token [B, T]; 1 on padding (TRL's token_truncate mode)."""
    diff = torch.nan_to_num((old_logps - behaviour_logps) * mask, nan=0.0)
    return torch.clamp(torch.exp(diff), max=cap)


def grpo_policy_loss(
    logps: torch.Tensor,  # [B, T] current policy, carries grad
    old_logps: torch.Tensor,  # [B, T] policy at the start of the step (detached)
    advantages: torch.Tensor,  # [B] or [B, T]
    mask: torch.Tensor,  # [B, T] float 0/1
    cfg: GRPOConfig,
    *,
    num_items_in_batch: float,  # masked tokens in the whole optimizer step (dapo's normaliser)
    ref_logps: torch.Tensor | None = None,  # [B, T] frozen reference, needed when beta > 0
    is_ratio: torch.Tensor | None = None,  # [B, T] truncated IS ratio against behaviour (detached)
    weights: torch.Tensor | None = None,  # [B] per-sample weights (1 = TRL)
    micro_batch_sequences: float | None = None,  # sequences in the whole micro-batch (None: B)
    micro_batch_tokens: float | None = None,  # its masked tokens (None: mask.sum())
) -> LossParts:
    """The clipped GRPO surrogate with TRL's normalisation for `cfg.loss_type`.

    When a micro-batch is cut into pieces to bound memory (`max_tokens_per_micro_batch`), each
    piece passes the whole micro-batch's sequence and token counts, so that the pieces' losses
    (and gradients) add up to the micro-batch's.
    """
    adv = _as_token_advantages(advantages)  # [B, 1] or [B, T]
    coef_1 = torch.exp(logps - old_logps)  # [B, T] PPO ratio
    coef_2 = torch.clamp(coef_1, 1 - cfg.epsilon_low, 1 + cfg.eps_high)
    per_token_loss = -torch.min(coef_1 * adv, coef_2 * adv)  # [B, T]
    if is_ratio is not None:
        per_token_loss = per_token_loss * is_ratio
    kl_sum = 0.0
    if cfg.beta != 0.0:
        if ref_logps is None:
            raise ConfigError("GRPOConfig.beta > 0 needs a reference model (ref_model=...)")
        per_token_kl = k3_kl(logps, ref_logps)  # [B, T]
        if cfg.kl_bias_correction:
            per_token_kl = per_token_kl * coef_1
        per_token_loss = per_token_loss + cfg.beta * per_token_kl
        kl_sum = float((per_token_kl.detach() * mask).sum())
    if weights is not None:
        per_token_loss = per_token_loss * weights.unsqueeze(1)

    accum = cfg.grad_accum
    if cfg.loss_type == "grpo":
        seq_means = (per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)  # [B]
        if micro_batch_sequences is None:
            loss = seq_means.mean() / accum
        else:
            loss = seq_means.sum() / micro_batch_sequences / accum
    elif cfg.loss_type == "bnpo":
        if micro_batch_tokens is None:
            loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0) / accum
        else:
            loss = (per_token_loss * mask).sum() / max(micro_batch_tokens, 1.0) / accum
    elif cfg.loss_type == "dr_grpo":
        n_seq = per_token_loss.size(0) if micro_batch_sequences is None else micro_batch_sequences
        denom = n_seq * cfg.max_completion_length
        loss = (per_token_loss * mask).sum() / denom / accum
    elif cfg.loss_type == "dapo":
        loss = (per_token_loss * mask).sum() / max(num_items_in_batch, 1.0)
    else:
        raise ConfigError(f"unknown loss_type {cfg.loss_type!r}")

    with torch.no_grad():
        low = ((coef_1 < 1 - cfg.epsilon_low) & (adv < 0)).float() * mask
        high = ((coef_1 > 1 + cfg.eps_high) & (adv > 0)).float() * mask
    return LossParts(loss, kl_sum, float(low.sum()), float(high.sum()), float(mask.sum()))


def off_policy_weight(
    logps: torch.Tensor,  # [B, T] current policy on the off-policy tokens (detached)
    behaviour_logps: torch.Tensor,  # [B, T] the generating policy's log-probs (aligned by the THL)
    mask: torch.Tensor,  # [B, T]
    spec: OffPolicyLoss,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight each token's grad log pi gets ([B, T] or [B, 1]), and the raw ratio pi/mu [B, T].

    `truncated_is`: min(pi/mu, cap) per token, or min(exp(sum log pi/mu), cap) per sequence.
    `luffy`: d f(p) / d log p = p * gamma / (p + gamma)^2 for f(p) = p / (p + gamma), which peaks at
    1 / (4 gamma) where p = gamma: the shaping lifts unlikely tokens and damps near-certain ones.
    `nll`: 1 on every token ([B, 1]), the fixed weight of a log-likelihood term.
    """
    log_ratio = torch.nan_to_num((logps - behaviour_logps) * mask, nan=0.0)  # [B, T]
    ratio = torch.exp(log_ratio)
    if spec.kind == "truncated_is":
        if spec.level == "sequence":
            return torch.clamp(torch.exp(log_ratio.sum(-1, keepdim=True)), max=spec.cap), ratio
        return torch.clamp(ratio, max=spec.cap), ratio
    if spec.kind == "luffy":
        p = torch.exp(logps)
        return p * spec.gamma / (p + spec.gamma) ** 2, ratio
    if spec.kind == "nll":
        return torch.ones_like(logps[:, :1]), ratio
    raise ConfigError(f"unknown OffPolicyLoss.kind {spec.kind!r}")


def off_policy_token_loss(
    logps: torch.Tensor,  # [B, T] current policy on the off-policy tokens, carries grad
    behaviour_logps: torch.Tensor,  # [B, T] the generating policy's log-probs (aligned by the THL)
    advantages: torch.Tensor,  # [B] or [B, T]
    mask: torch.Tensor,  # [B, T]
    spec: OffPolicyLoss,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token loss [B, T] for off-policy samples, and the raw ratio pi/mu [B, T] (detached).

    `truncated_is`: -A * min(pi/mu, cap) * log pi, the ratio detached (a truncated-IS policy
    gradient; unbiased up to the truncation). `luffy`: -A * pi / (pi + gamma), LUFFY's shaped
    objective, which boosts gradients on low-probability tokens and needs no clipping. `nll`:
    -log pi, so the learner's term coef * token-mean has gradient -coef * grad(mean log pi) (SGT as
    GRAFT describes it: supervised imitation of a verified peer success, at a fixed weight).
    """
    adv = _as_token_advantages(advantages)
    w, ratio = off_policy_weight(logps.detach(), behaviour_logps, mask, spec)
    if spec.kind == "nll":
        return -logps, ratio
    if spec.kind == "truncated_is":
        return -adv * w * logps, ratio
    p = torch.exp(logps)
    return -adv * p / (p + spec.gamma), ratio


def importance_stats(ratio: torch.Tensor, mask: torch.Tensor, prefix: str) -> dict[str, float]:
    """Mean, max, variance and normalised effective sample size of masked ratios.

    ESS = (sum w)^2 / (n * sum w^2), in (0, 1]: 1 when every weight is equal, small when a few
    tokens carry all the weight (the signal that truncation or shaping is doing real work).
    """
    w = ratio[mask.bool()].double()
    if w.numel() == 0:
        return {}
    ess = float(w.sum() ** 2 / (w.numel() * (w**2).sum())) if float((w**2).sum()) > 0 else 0.0
    return {
        f"{prefix}_mean": float(w.mean()),
        f"{prefix}_max": float(w.max()),
        f"{prefix}_var": float(w.var(unbiased=False)),
        f"{prefix}_ess": ess,
    }
