"""The no-sharing baseline: plain GRPO on the receiver's own groups (what TRL computes)."""

from __future__ import annotations

from collections.abc import Sequence

from mrl_actors.grpo.advantages import pooled_advantages
from mrl_actors.probes.common import (
    ProbeBatch,
    ProbeContext,
    ProbeMetrics,
    PromptInputs,
    batch_std,
    own_rewards,
    own_samples,
)


def build(prompts: Sequence[PromptInputs], ctx: ProbeContext) -> ProbeBatch:
    metrics = ProbeMetrics(prompts=len(prompts))
    std = batch_std(prompts)
    on_policy = []
    for p in prompts:
        r = own_rewards(p)  # [G]
        on_policy += own_samples(p, pooled_advantages(r, r, None, ctx.scale_rewards, std))
    return ProbeBatch(on_policy, [], None, metrics)
