"""Group-relative advantages, exactly as TRL 1.16's `GRPOTrainer` computes them, and their pooled
and weighted forms, which the sharing probes use: one implementation for the learner, the probes
and the TRL parity test.

TRL centres each reward by its group's mean and, unless `scale_rewards="none"`, divides by a std
(unbiased, Bessel-corrected, the group's or the whole batch's) plus 1e-4. NaN rewards (unscorable
completions) are left out of the mean and std and get advantage 0. The parity test calls TRL's own
code on the same rewards.

A probe's baseline may come from a larger pool than the group (PRP's peer rollouts, XGRPO's peer
rewards), with a weight per pooled reward (XGRPO's capability weighting). Weighted pools use the
unbiased weighted variance with reliability weights, V = sum w (r - mu)^2 / (sum w - sum w^2 /
sum w), which for unit weights is the Bessel-corrected variance TRL uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from mrl_actors.errors import ConfigError

STD_EPS = 1e-4  # TRL's `advantages / (std_rewards + 1e-4)`
Scale = Literal["group", "batch", "none"]


def _moments(pool: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean and unbiased std over the last dim of `pool` [..., K]; NaNs weigh nothing.

    Returns mean [..., 1] (NaN when nothing is left) and std [..., 1] (0 for fewer than two).
    """
    valid = ~torch.isnan(pool)
    w = torch.where(valid, weights, torch.zeros_like(weights))  # [..., K]
    x = torch.where(valid, pool, torch.zeros_like(pool))
    w_sum = w.sum(-1, keepdim=True)
    mean = (w * x).sum(-1, keepdim=True) / w_sum  # NaN when w_sum == 0
    denom = w_sum - (w * w).sum(-1, keepdim=True) / w_sum
    var = (w * (x - mean) ** 2).sum(-1, keepdim=True) / denom
    var = torch.where(denom > 0, var, torch.zeros_like(var))
    return mean, torch.sqrt(var)


def _advantages(
    rewards: torch.Tensor,  # [..., G]
    pool: torch.Tensor,  # [..., K]
    weights: torch.Tensor | None,  # [..., K]
    scale: str,
    batch_std: float | torch.Tensor,
) -> torch.Tensor:
    """(rewards - pool mean) / (scale + eps), NaN -> 0: the one advantage formula. -> [..., G]."""
    if scale not in ("group", "batch", "none"):
        raise ConfigError(f"scale_rewards must be 'group', 'batch' or 'none', got {scale!r}")
    mean, std = _moments(pool, torch.ones_like(pool) if weights is None else weights)
    adv = rewards - mean
    if scale == "group":
        adv = adv / (std + STD_EPS)
    elif scale == "batch":
        adv = adv / (batch_std + STD_EPS)
    return torch.nan_to_num(adv, nan=0.0)


def reward_std(rewards: torch.Tensor | np.ndarray) -> float:
    """The unbiased std of all `rewards` (NaNs left out; 0 for fewer than two): TRL's "batch"."""
    r = torch.as_tensor(rewards).flatten()
    return float(_moments(r, torch.ones_like(r))[1])


def group_advantages(
    rewards: torch.Tensor | np.ndarray | Sequence[float],
    group_size: int,
    scale_rewards: str = "group",
) -> torch.Tensor:
    """Advantages for `rewards` [N] laid out as N / group_size consecutive groups -> [N].

    `scale_rewards`: "group" (per-group std), "batch" (one std over all N) or "none". Arrays and
    lists are taken as float32, TRL's reward dtype; the result is a float tensor.
    """
    if not isinstance(rewards, torch.Tensor):
        rewards = torch.as_tensor(np.asarray(rewards, dtype=np.float32))
    if rewards.dim() != 1 or group_size < 1 or rewards.numel() % group_size != 0:
        raise ConfigError(
            f"group_advantages: {rewards.numel()} rewards do not split into groups of {group_size}"
        )
    grouped = rewards.view(-1, group_size)  # [N / G, G]
    std = _moments(rewards, torch.ones_like(rewards))[1] if scale_rewards == "batch" else 0.0
    return _advantages(grouped, grouped, None, scale_rewards, std).view(-1)


def pooled_advantages(
    rewards: np.ndarray,
    pool: np.ndarray,
    pool_weights: np.ndarray | None,
    scale: Scale,
    batch_std: float,
) -> np.ndarray:
    """Advantages of one prompt's `rewards` [G] against the baseline (and scale) of a pool [K].

    The pool holds the receiver's own rewards and any peers' (float64 arrays), `pool_weights` [K]
    one weight each (None: uniform). With `pool == rewards` and no weights this is exactly
    `group_advantages` of one group. `batch_std` is the std for scale = "batch" (`reward_std` of
    the whole step's own rewards). Returns float64 [G].
    """
    w = None if pool_weights is None else torch.from_numpy(np.asarray(pool_weights, np.float64))
    adv = _advantages(
        torch.from_numpy(np.asarray(rewards, np.float64)),
        torch.from_numpy(np.asarray(pool, np.float64)),
        w,
        scale,
        batch_std,
    )
    return adv.numpy()
