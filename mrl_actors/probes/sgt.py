"""SGT: verified peer successes rescue the prompts on which the receiver found none.

Outcome-level sharing: only completions a verifier accepted cross (`SuccessVerified`). A prompt
passes the gate (`SGTConfig.gate`, by default: the receiver's whole group failed) or nothing
changes for it. Where it passes, up to `k` fresh peer successes enter through the THL as an
off-policy positive term with weight λ:

- `loss = "nll"` (default, as GRAFT describes SGT): a fixed-weight auxiliary negative
  log-likelihood of the retokenized success, whose gradient is λ times the gradient of its mean
  token log-likelihood; the receiver's own group keeps its plain GRPO advantages.
  With `own_k`, up to that many of the receiver's own successes of each prompt that was not
  rescued join the same term: imitation of the peer alone pulls the receiver toward the part of
  the task the peer solves (docs/results.md, complementary skills).
- `loss = "luffy"`: LUFFY's shaped objective f(p) = p / (p + γ), which keeps gradients alive on
  tokens the receiver finds unlikely. With `advantage = "pooled"` the rescue samples and the
  failed group share one baseline (LUFFY's mixed group), so failures are pushed down as the
  success is pulled up; with "unit" (default) the own group is left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

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
from mrl_actors.probes.config import SGTConfig


def build(prompts: Sequence[PromptInputs], ctx: ProbeContext, cfg: SGTConfig) -> ProbeBatch:
    metrics = ProbeMetrics(prompts=len(prompts))
    std = batch_std(prompts)
    on_policy: list[Sample] = []
    off_policy: list[Sample] = []
    for p in prompts:
        r = own_rewards(p)  # [G]
        metrics.peer_events_offered += len(p.peer_successes)
        needs_rescue = passes_gate([c.success for c in p.own.event.completions], cfg)
        rescue: list[tuple[Transferred, float]] = []
        for seen in p.peer_successes if needs_rescue else ():
            ev = seen.event
            if len(rescue) >= cfg.k:
                break
            if not is_fresh(ctx.version, ev.policy_version, ctx.max_staleness):
                metrics.dropped_stale += 1
                continue
            if not verified(ctx, metrics, p.own.event.prompt_id, ev.completion):
                continue
            t = transfer_counted(ctx, metrics, ev.policy, ev.completion)
            if t is not None:
                rescue.append((t, ev.completion.reward))
                metrics.peer_events_used += 1
        if not rescue:
            own = own_samples(p, pooled_advantages(r, r, None, ctx.scale_rewards, std))
            on_policy += own
            wins = [s for s, c in zip(own, p.own.event.completions, strict=True) if c.success]
            off_policy += [replace(s, advantage=1.0) for s in wins[: cfg.own_k]]
            continue
        metrics.prompts_rescued += 1
        if cfg.loss == "luffy" and cfg.advantage == "pooled":
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
    loss = OffPolicyLoss(kind=cfg.loss, gamma=cfg.gamma, coef=cfg.coef) if off_policy else None
    return ProbeBatch(on_policy, off_policy, loss, metrics)


def passes_gate(successes: Sequence[bool], cfg: SGTConfig) -> bool:
    """Whether a prompt whose own group had these successes gets rescue samples."""
    if not successes:
        return False
    if cfg.gate == "all_failed":
        return not any(successes)
    if cfg.gate == "any_failed":
        return not all(successes)
    return sum(successes) / len(successes) < cfg.max_success_rate
