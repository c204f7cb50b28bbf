"""GRPO at parity with TRL 1.16: config, advantages, loss, and the learner step.

`config` imports without torch; the rest import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mrl_actors.grpo.config import GRPOConfig, OffPolicyLoss

if TYPE_CHECKING:
    from mrl_actors.grpo.advantages import group_advantages
    from mrl_actors.grpo.batch import Sample
    from mrl_actors.grpo.learner import GRPOLearner

__all__ = ["GRPOConfig", "GRPOLearner", "OffPolicyLoss", "Sample", "group_advantages"]

_LAZY = {
    "group_advantages": "mrl_actors.grpo.advantages",
    "Sample": "mrl_actors.grpo.batch",
    "GRPOLearner": "mrl_actors.grpo.learner",
}


def __getattr__(name: str) -> Any:
    """Import torch-heavy parts on first use: importing `GRPOConfig` stays light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
