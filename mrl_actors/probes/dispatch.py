"""The one entry point to the probes, and which peer events each reads."""

from __future__ import annotations

from collections.abc import Sequence

from mrl_actors.probes import independent, prp, sgt, xgrpo
from mrl_actors.probes.common import ProbeBatch, ProbeContext, PromptInputs
from mrl_actors.probes.config import ProbeName, ProbesConfig

# The event KIND each probe consumes from peers (None: no sharing).
PEER_KIND: dict[ProbeName, str | None] = {
    "independent": None,
    "prp": "rollout",
    "xgrpo": "reward",
    "sgt": "success",
}


def build_batch(
    probe: ProbeName, cfg: ProbesConfig, prompts: Sequence[PromptInputs], ctx: ProbeContext
) -> ProbeBatch:
    if probe == "independent":
        return independent.build(prompts, ctx)
    if probe == "prp":
        return prp.build(prompts, ctx, cfg.prp)
    if probe == "xgrpo":
        return xgrpo.build(prompts, ctx, cfg.xgrpo)
    return sgt.build(prompts, ctx, cfg.sgt)
