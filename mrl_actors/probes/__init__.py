"""The sharing probes: how a receiver turns its own groups and its peers' events into a batch.

| probe       | what it reads from peers | module           |
|-------------|--------------------------|------------------|
| independent | nothing                  | `independent.py` |
| prp         | RolloutGroupCompleted    | `prp.py`         |
| xgrpo       | RewardSummary            | `xgrpo.py`       |
| sgt         | SuccessVerified          | `sgt.py`         |

`build_batch` is the one entry point the policy actor and the replayer call.
"""

from __future__ import annotations

from collections.abc import Sequence

from mrl_actors.probes import independent, prp, sgt, xgrpo
from mrl_actors.probes.common import ProbeBatch, ProbeContext, PromptInputs, Seen, Transferred
from mrl_actors.probes.config import PROBE_NAMES, ProbeName, ProbesConfig

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


__all__ = [
    "PEER_KIND",
    "PROBE_NAMES",
    "ProbeBatch",
    "ProbeContext",
    "ProbeName",
    "ProbesConfig",
    "PromptInputs",
    "Seen",
    "Transferred",
    "build_batch",
]
