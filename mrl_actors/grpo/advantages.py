"""Group-relative advantages, exactly as TRL 1.16's `GRPOTrainer` computes them.

TRL centres each reward by its group's mean and, unless `scale_rewards="none"`, divides by a std
(unbiased, Bessel-corrected, the group's or the whole batch's) plus 1e-4. NaN rewards (unscorable
completions) are left out of the mean and std and get advantage 0. The parity test calls TRL's own
code on the same rewards.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mrl_actors.errors import ConfigError

STD_EPS = 1e-4  # TRL's `advantages / (std_rewards + 1e-4)`


def _nanstd(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Unbiased std ignoring NaNs (TRL's `nanstd`): NaN where fewer than two values are present."""
    mean = torch.nanmean(x, dim=dim, keepdim=True)
    var = torch.nanmean((x - mean) ** 2, dim=dim, keepdim=True)
    count = torch.sum(~torch.isnan(x), dim=dim, keepdim=True)
    corr = torch.where(count > 1, count / (count - 1), torch.full_like(var, float("nan")))
    std = torch.sqrt(var * corr)
    return std.squeeze() if dim is None else std.squeeze(dim)


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
    grouped = rewards.view(-1, group_size)  # [G, K]
    mean = torch.nanmean(grouped, dim=1).repeat_interleave(group_size)  # [N]
    if scale_rewards in ("group", "none"):
        if group_size > 1:
            std = _nanstd(grouped, dim=1).repeat_interleave(group_size)  # [N]
        else:
            std = torch.zeros_like(rewards)
    elif scale_rewards == "batch":
        std = (
            _nanstd(rewards).expand_as(rewards)
            if rewards.numel() > 1
            else torch.zeros_like(rewards)
        )
    else:
        raise ConfigError(
            f"scale_rewards must be 'group', 'batch' or 'none', got {scale_rewards!r}"
        )
    adv = rewards - mean
    if scale_rewards != "none":
        adv = adv / (std + STD_EPS)
    return torch.nan_to_num(adv, nan=0.0)
