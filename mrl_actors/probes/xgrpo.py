"""XGRPO: the receiver's baseline (and scale) come from every policy's rewards on the prompt.

Value-level sharing: only scalar rewards cross (`RewardSummary`), and gradients stay on the
receiver's own on-policy samples. With no fresh peer rewards it is exactly plain GRPO. Optional
capability weighting (HACPO-style) counts a peer's rewards by its success rate on this step's
prompts relative to the receiver's, so a much weaker or stronger peer does not swamp the baseline.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mrl_actors.grpo.advantages import pooled_advantages
from mrl_actors.probes.common import (
    ProbeBatch,
    ProbeContext,
    ProbeMetrics,
    PromptInputs,
    batch_std,
    is_fresh,
    own_rewards,
    own_samples,
)
from mrl_actors.probes.config import XGRPOConfig


def build(prompts: Sequence[PromptInputs], ctx: ProbeContext, cfg: XGRPOConfig) -> ProbeBatch:
    metrics = ProbeMetrics(prompts=len(prompts))
    std = batch_std(prompts)
    weights = _policy_weights(prompts, ctx, cfg)
    on_policy = []
    for p in prompts:
        r = own_rewards(p)  # [G]
        pool, pool_w = [r], [np.ones_like(r)]
        for seen in p.peer_rewards:
            metrics.peer_events_offered += 1
            ev = seen.event
            if not is_fresh(ctx.version, ev.policy_version, ctx.max_staleness):
                metrics.dropped_stale += 1
                continue
            metrics.peer_events_used += 1
            peer_r = ev.rewards_array().astype(np.float64)  # [G_peer]
            pool.append(peer_r)
            pool_w.append(np.full_like(peer_r, weights.get(ev.policy, 1.0)))
        adv = pooled_advantages(
            r, np.concatenate(pool), np.concatenate(pool_w), ctx.scale_rewards, std
        )
        on_policy += own_samples(p, adv)
    return ProbeBatch(on_policy, [], None, metrics)


def _policy_weights(
    prompts: Sequence[PromptInputs], ctx: ProbeContext, cfg: XGRPOConfig
) -> dict[str, float]:
    """Per-peer reward weight from success rates on this step's prompts (so replay is exact)."""
    if cfg.weighting == "uniform":
        return {}
    own = np.mean([c.success for p in prompts for c in p.own.event.completions])
    rates: dict[str, list[float]] = {}
    for p in prompts:
        for seen in p.peer_rewards:
            if is_fresh(ctx.version, seen.event.policy_version, ctx.max_staleness):
                rates.setdefault(seen.event.policy, []).append(seen.event.success_rate)
    return {
        policy: float(
            np.clip(
                (np.mean(r) + cfg.smoothing) / (own + cfg.smoothing), cfg.min_weight, cfg.max_weight
            )
        )
        for policy, r in rates.items()
    }
