"""The sharing probes: how a receiver turns its own groups and its peers' events into a batch.

| probe       | what it reads from peers | module           |
|-------------|--------------------------|------------------|
| independent | nothing                  | `independent.py` |
| prp         | RolloutGroupCompleted    | `prp.py`         |
| xgrpo       | RewardSummary            | `xgrpo.py`       |
| sgt         | SuccessVerified          | `sgt.py`         |

`registry.py` declares each probe once (a new probe is its module plus one entry there);
`build_batch` (in `dispatch.py`) is the one entry point the actors and replay call. Only the
registry and the options are imported eagerly, so specs load without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mrl_actors.probes.config import ProbeName
from mrl_actors.probes.registry import PEER_KIND, PROBE_NAMES, PROBES, ProbesConfig
from mrl_actors.see.record import Record as Seen  # what a probe's inputs are: stored events

if TYPE_CHECKING:
    from mrl_actors.probes.common import (
        ProbeBatch,
        ProbeContext,
        PromptInputs,
        Transferred,
    )
    from mrl_actors.probes.dispatch import build_batch

_LAZY = {
    "ProbeBatch": "mrl_actors.probes.common",
    "ProbeContext": "mrl_actors.probes.common",
    "PromptInputs": "mrl_actors.probes.common",
    "Transferred": "mrl_actors.probes.common",
    "build_batch": "mrl_actors.probes.dispatch",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "PEER_KIND",
    "PROBES",
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
