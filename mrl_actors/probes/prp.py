"""PRP: peers' whole rollouts on the same prompt join the receiver's group (data level).

Each fresh peer completion is retokenized through the THL (over-budget transfers are dropped and
counted) and added as an off-policy sample. Its loss term is weighted by the importance ratio of the
receiver's policy on the retokenized text against the peer's behaviour log-probs, at sequence level
and truncated at `cap` (`weighting = "truncated"`), or shaped per token as in LUFFY (`"shaped"`).
Advantages come from the pooled group (receiver and peers on one baseline) or are carried over
from the peer's own group. The paper found PRP the least stable probe; the weight statistics the
learner reports (ESS, variance, max) are how a run shows why.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mrl_actors.grpo import OffPolicyLoss, Sample
from mrl_actors.grpo.advantages import pooled_advantages
from mrl_actors.probes.common import (
    ProbeBatch,
    ProbeContext,
    ProbeMetrics,
    PromptInputs,
    Transferred,
    batch_std,
    is_fresh,
    own_rewards,
    own_samples,
    peer_sample,
    transfer_counted,
    verified,
)
from mrl_actors.probes.config import PRPConfig


def off_policy_loss(cfg: PRPConfig) -> OffPolicyLoss:
    if cfg.weighting == "truncated":
        return OffPolicyLoss(kind="truncated_is", level="sequence", cap=cfg.cap, coef=cfg.coef)
    return OffPolicyLoss(kind="luffy", gamma=cfg.gamma, coef=cfg.coef)


def build(prompts: Sequence[PromptInputs], ctx: ProbeContext, cfg: PRPConfig) -> ProbeBatch:
    metrics = ProbeMetrics(prompts=len(prompts))
    std = batch_std(prompts)
    on_policy: list[Sample] = []
    off_policy: list[Sample] = []
    for p in prompts:
        r = own_rewards(p)  # [G]
        # (transfer, reward, advantage in the peer's own group) for each accepted peer completion
        accepted: list[tuple[Transferred, float, float]] = []
        for seen in p.peer_rollouts:
            metrics.peer_events_offered += 1
            group = seen.event
            if not is_fresh(ctx.version, group.policy_version, ctx.max_staleness):
                metrics.dropped_stale += 1
                continue
            peer_r = group.rewards_array().astype(np.float64)  # [G_peer]
            carried = pooled_advantages(peer_r, peer_r, None, ctx.scale_rewards, std)
            used = False
            for c, a in zip(group.completions, carried, strict=True):
                if len(accepted) >= cfg.max_per_prompt:
                    break
                if not verified(ctx, metrics, p.own.event.prompt_id, c):
                    continue
                t = transfer_counted(ctx, metrics, group.policy, c)
                if t is not None:
                    accepted.append((t, c.reward, float(a)))
                    used = True
            metrics.peer_events_used += int(used)
        pool = np.concatenate([r, np.array([x[1] for x in accepted], dtype=np.float64)])
        adv = pooled_advantages(pool, pool, None, ctx.scale_rewards, std)  # [G + K]
        on_policy += own_samples(p, adv[: r.size])
        for (t, _, carried_adv), pooled_adv in zip(accepted, adv[r.size :], strict=True):
            a = pooled_adv if cfg.advantage == "pooled" else carried_adv
            off_policy.append(peer_sample(p, t, float(a)))
    return ProbeBatch(on_policy, off_policy, off_policy_loss(cfg) if off_policy else None, metrics)
