"""The one entry point to the probes: the registry's `build` of the run's probe."""

from __future__ import annotations

from collections.abc import Sequence

from mrl_actors.probes.common import ProbeBatch, ProbeContext, PromptInputs
from mrl_actors.probes.registry import PEER_KIND, PROBES, ProbesConfig, builder

__all__ = ["PEER_KIND", "build_batch"]


def build_batch(
    probe: str, cfg: ProbesConfig, prompts: Sequence[PromptInputs], ctx: ProbeContext
) -> ProbeBatch:
    build = builder(probe)
    if PROBES[probe].options is None:
        batch: ProbeBatch = build(prompts, ctx)
    else:
        batch = build(prompts, ctx, getattr(cfg, probe))
    return batch
