"""SGT: verified peer successes rescue the prompts on which the receiver found none.

Outcome-level sharing: only completions a verifier accepted cross (`SuccessVerified`). For a prompt
where the receiver's own group has at least one success, nothing changes. Where it has none, up to
`k` fresh peer successes enter through the THL as an off-policy positive term with weight λ and
LUFFY's shaped ratio f(p) = p / (p + γ), which keeps gradients alive on tokens the receiver finds
unlikely without the variance of a raw importance ratio. With `advantage = "pooled"` the rescue
samples and the failed group share one baseline (LUFFY's mixed group), so the failures are pushed
down as the success is pulled up.
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
)
from mrl_actors.probes.config import SGTConfig


def build(prompts: Sequence[PromptInputs], ctx: ProbeContext, cfg: SGTConfig) -> ProbeBatch:
    metrics = ProbeMetrics(prompts=len(prompts))
    std = batch_std(prompts)
    on_policy: list[Sample] = []
    off_policy: list[Sample] = []
    for p in prompts:
        r = own_rewards(p)  # [G]
        metrics.peer_events_offered += len(p.peer_successes)
        needs_rescue = not any(c.success for c in p.own.event.completions)
        rescue: list[tuple[Transferred, float]] = []
        for seen in p.peer_successes if needs_rescue else ():
            ev = seen.event
            if len(rescue) >= cfg.k:
                break
            if not is_fresh(ctx.version, ev.policy_version, ctx.max_staleness):
                metrics.dropped_stale += 1
                continue
            t = transfer_counted(ctx, metrics, ev.policy, ev.completion)
            if t is not None:
                rescue.append((t, ev.completion.reward))
                metrics.peer_events_used += 1
        if not rescue:
            on_policy += own_samples(p, pooled_advantages(r, r, None, ctx.scale_rewards, std))
            continue
        metrics.prompts_rescued += 1
        if cfg.advantage == "pooled":
            pool = np.concatenate([r, np.array([x[1] for x in rescue], dtype=np.float64)])
            adv = pooled_advantages(pool, pool, None, ctx.scale_rewards, std)  # [G + k]
            own_adv, rescue_adv = adv[: r.size], adv[r.size :]
        else:
            own_adv = pooled_advantages(r, r, None, ctx.scale_rewards, std)
            rescue_adv = np.ones(len(rescue))
        on_policy += own_samples(p, own_adv)
        off_policy += [
            peer_sample(p, t, float(a)) for (t, _), a in zip(rescue, rescue_adv, strict=True)
        ]
    loss = OffPolicyLoss(kind="luffy", gamma=cfg.gamma, coef=cfg.coef) if off_policy else None
    return ProbeBatch(on_policy, off_policy, loss, metrics)
