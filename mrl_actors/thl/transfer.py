"""`Transfer`: one peer completion in the receiver's tokens, what every THL path returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mrl_actors.thl.residual import Residual


@dataclass(frozen=True, eq=False)
class Transfer:
    """One peer completion as the receiver sees it; m receiver tokens, a mapped EOS included."""

    ids: np.ndarray  # int32 [m]: receiver ids of the completion (EOS mapped by role)
    logprobs: np.ndarray | None  # float64 [m]: peer log-probs, span sums conserved
    loss_mask: np.ndarray  # bool [m]: in the loss only if the whole span was
    advantages: float | np.ndarray | None  # scalar passthrough, or float64 [m] span means
    token_rewards: np.ndarray | None  # float64 [m]: span sums on each span's last token
    residual: Residual
    rejected: bool
    reason: str  # why it was rejected; "" when accepted
