"""What every probe takes and returns, and the arithmetic they share.

A probe is a pure function `(inputs, context) -> ProbeBatch`. Its inputs are events with their
stream sequences, so the learner step that follows can record exactly what it consumed, and a
replay that feeds the same events to the same function gets the same batch. The context carries
the one thing a probe needs from outside: the THL (peer text into the receiver's tokens). Importance
ratios against the receiver's current policy are the learner's job (`OffPolicyLoss`), which also
reports their statistics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from mrl_actors.events import (
    Completion,
    RewardSummary,
    RolloutGroupCompleted,
    SuccessVerified,
)
from mrl_actors.grpo import OffPolicyLoss, Sample
from mrl_actors.grpo.advantages import reward_std
from mrl_actors.see.record import Record as Seen  # an event with its stream sequence


@dataclass(frozen=True)
class Transferred:
    """One peer completion in the receiver's tokens, as the THL returned it."""

    ids: np.ndarray  # int32 [m], receiver ids of the completion
    logprobs: np.ndarray  # float64 [m], the peer's behaviour log-probs aligned onto them
    loss_mask: np.ndarray  # bool [m]
    exact: bool  # the receiver's tokens reproduce the peer's bytes exactly
    rejected: bool  # over the THL residual budget: not to be used
    reason: str = ""
    one_to_one_share: float = 1.0  # receiver tokens in 1:1 spans (per-token ratios exact)
    nm_byte_share: float = 0.0  # bytes in spans that are not 1:1 (only span sums exact)


@dataclass(frozen=True)
class PromptInputs:
    """Everything one prompt of one step brings to the probe."""

    own: Seen[RolloutGroupCompleted]
    peer_rollouts: Sequence[Seen[RolloutGroupCompleted]] = ()
    peer_rewards: Sequence[Seen[RewardSummary]] = ()
    peer_successes: Sequence[Seen[SuccessVerified]] = ()


@dataclass(frozen=True)
class ProbeContext:
    """The receiver's side of a step: its version, reward scaling and THL."""

    version: int  # the receiver's policy version (learner steps taken)
    scale_rewards: Literal["group", "batch", "none"]
    max_staleness: int
    # (peer policy, peer completion) -> the completion in the receiver's tokens
    transfer: Callable[[str, Completion], Transferred]
    # (prompt id, peer completion) -> whether the receiver's own verifier gives it the verdict
    # the peer logged (trust, but verify: a peer whose verifier is wrong, or a user that lies,
    # teaches nothing); None: not checked (unit tests of a probe's arithmetic)
    verify: Callable[[str, Completion], bool] | None = None


@dataclass
class ProbeMetrics:
    """Support and stability counters of one step; summed or averaged by the report."""

    peer_events_offered: int = 0
    peer_events_used: int = 0
    dropped_stale: int = 0
    dropped_budget: int = 0
    dropped_unverified: int = 0  # peer completions the receiver's own verifier judged otherwise
    prompts: int = 0
    prompts_rescued: int = 0
    thl_exact: int = 0  # transfers whose receiver tokens reproduce the peer's bytes exactly
    thl_transfers: int = 0
    thl_one_to_one: float = 0.0  # sum over transfers of their 1:1 token share
    thl_nm_bytes: float = 0.0  # sum over transfers of their n:m byte share

    def as_dict(self) -> dict[str, float]:
        out = {
            "peer_events_offered": float(self.peer_events_offered),
            "peer_events_used": float(self.peer_events_used),
            "dropped_stale": float(self.dropped_stale),
            "dropped_budget": float(self.dropped_budget),
            "dropped_unverified": float(self.dropped_unverified),
            "prompts_rescued_share": self.prompts_rescued / self.prompts if self.prompts else 0.0,
        }
        if self.thl_transfers:
            out["thl_exact_share"] = self.thl_exact / self.thl_transfers
            out["thl_one_to_one_share"] = self.thl_one_to_one / self.thl_transfers
            out["thl_nm_byte_share"] = self.thl_nm_bytes / self.thl_transfers
        return out


def is_fresh(version: int, peer_version: int, max_staleness: int) -> bool:
    """A peer event is usable when its policy version lags (or leads) by at most the bound."""
    return abs(version - peer_version) <= max_staleness


def own_rewards(inputs: PromptInputs) -> np.ndarray:
    return np.array([c.reward for c in inputs.own.event.completions], dtype=np.float64)


def batch_std(prompts: Sequence[PromptInputs]) -> float:
    """TRL's scale_rewards = "batch": one std over every own reward of the step."""
    return reward_std(np.concatenate([own_rewards(p) for p in prompts]))


@dataclass(frozen=True)
class ProbeBatch:
    """What a probe hands the learner: on-policy samples, peer samples and the loss for them."""

    on_policy: list[Sample]
    off_policy: list[Sample]
    off_policy_loss: OffPolicyLoss | None
    metrics: ProbeMetrics


def own_samples(inputs: PromptInputs, advantages: np.ndarray) -> list[Sample]:
    """The receiver's own completions of one prompt as on-policy samples. advantages [G]."""
    group = inputs.own.event
    prompt_ids = np.frombuffer(group.prompt_token_ids, dtype="<i4")
    return [
        Sample(
            prompt_ids=prompt_ids,
            completion_ids=c.token_ids_array(),
            behaviour_logprobs=c.logprobs_array(),
            advantage=float(a),
        )
        for c, a in zip(group.completions, advantages, strict=True)
    ]


def peer_sample(
    inputs: PromptInputs, t: Transferred, advantage: float, weight: float = 1.0
) -> Sample:
    """A transferred peer completion as an off-policy sample on the receiver's prompt."""
    return Sample(
        prompt_ids=np.frombuffer(inputs.own.event.prompt_token_ids, dtype="<i4"),
        completion_ids=t.ids,
        behaviour_logprobs=t.logprobs,
        advantage=advantage,
        loss_mask=t.loss_mask,
        weight=weight,
    )


def verified(
    ctx: ProbeContext, metrics: ProbeMetrics, prompt_id: str, completion: Completion
) -> bool:
    """The receiver's verifier agrees with the peer's verdict; a disagreement is counted."""
    if ctx.verify is None or ctx.verify(prompt_id, completion):
        return True
    metrics.dropped_unverified += 1
    return False


def transfer_counted(
    ctx: ProbeContext, metrics: ProbeMetrics, policy: str, completion: Completion
) -> Transferred | None:
    """THL transfer that keeps the budget and exactness counters; None when rejected."""
    t = ctx.transfer(policy, completion)
    metrics.thl_transfers += 1
    metrics.thl_exact += int(t.exact)
    metrics.thl_one_to_one += t.one_to_one_share
    metrics.thl_nm_bytes += t.nm_byte_share
    if t.rejected or t.ids.size == 0:
        metrics.dropped_budget += 1
        return None
    return t
