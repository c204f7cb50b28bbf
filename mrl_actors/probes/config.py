"""Options of the sharing probes: one frozen Struct each, every field with its documented default.

Imports without torch. The run records the resolved options in `PolicyRegistered.options`, so a
report always says which variant of a probe produced its numbers.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from mrl_actors.checks import check_float, check_int, fail

ProbeName = str  # a key of `mrl_actors.probes.registry.PROBES` (checked where a spec names one)


class SharingConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What every probe obeys when it reads peers' events."""

    # Drop a peer event whose policy version differs from the receiver's by more than this many
    # learner steps (both directions). 0 accepts only events sampled at the receiver's version.
    max_staleness: int = 2
    # How long a policy waits, each step, for peers' events on its own prompts before going on
    # without them. Waiting keeps sharing effective when policies run at different speeds.
    wait_for_peers_s: float = 30.0
    # Whom an asynchronous learner waits for (lockstep waits for every peer): "sampling", a peer
    # whose rollouts may be sampling its batch (within run.max_staleness of it), so that it learns
    # from that peer on the same prompts, at the price of a faster policy being paced by a slower
    # one for as long as it stays within that window; "none", no one: each step takes the peers'
    # events that have arrived, and a faster policy runs at its own pace.
    async_peer_wait: Literal["sampling", "none"] = "sampling"

    def __post_init__(self) -> None:
        check_int(self, "max_staleness", 0, 1_000_000)
        check_float(self, "wait_for_peers_s", ge=0, le=86_400)


class PRPConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Peer Rollout Pooling: whole peer rollouts join the receiver's group (data level)."""

    # How peer samples are weighted: "truncated" uses the sequence-level importance weight
    # exp(log p_receiver(retokenized) - log p_peer(sampled)) truncated at `cap`; "shaped" uses
    # LUFFY's token-level shaping f(p) = p / (p + gamma) of the receiver's probability instead.
    weighting: Literal["truncated", "shaped"] = "truncated"
    cap: float = 1.0  # truncation of the sequence-level importance weight (truncated IS)
    gamma: float = 0.1  # LUFFY shaping constant (used when weighting = "shaped")
    # "pooled": advantages over the receiver's and the peers' rewards together (one baseline);
    # "carried": each peer sample keeps the advantage it had in its own policy's group.
    advantage: Literal["pooled", "carried"] = "pooled"
    coef: float = 1.0  # weight of the peer-sample loss term relative to the on-policy term
    max_per_prompt: int = 8  # at most this many peer completions join one prompt's group

    def __post_init__(self) -> None:
        check_float(self, "cap", gt=0)
        check_float(self, "gamma", gt=0)
        check_float(self, "coef", ge=0)
        check_int(self, "max_per_prompt", 1, 10_000)


class XGRPOConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Cross-policy advantage sharing: peers' rewards set the receiver's baseline (value level)."""

    # "uniform": every pooled reward counts once; "success_rate": each policy's rewards are
    # weighted by its success rate on this step's prompts relative to the receiver's (as HACPO's
    # capability weighting), clipped to [min_weight, max_weight].
    weighting: Literal["uniform", "success_rate"] = "uniform"
    smoothing: float = 0.1  # added to both success rates before the ratio, so 0/0 is 1
    min_weight: float = 0.25
    max_weight: float = 4.0

    def __post_init__(self) -> None:
        check_float(self, "smoothing", ge=0)
        check_float(self, "min_weight", gt=0)
        check_float(self, "max_weight", gt=0)
        if self.max_weight < self.min_weight:
            fail("max_weight", f">= min_weight ({self.min_weight})", self.max_weight)


class SGTConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Success-Gated Transfer: verified peer successes rescue prompts the receiver failed.

    The defaults follow GRAFT's reading of the MRL paper: only where the receiver's whole group
    failed, a fixed-weight auxiliary log-likelihood (λ) of a peer's verified success. The MRL blog's
    "a score direction toward those successes" is the same gradient. `loss = "luffy"` is the
    earlier LUFFY-style variant (shaped importance weight), kept for comparison.
    """

    # When a prompt is rescued: "all_failed" (GRAFT: the receiver's whole group failed),
    # "any_failed" (at least one own completion failed), or "rate_below" (own success rate below
    # `max_success_rate`).
    gate: Literal["all_failed", "any_failed", "rate_below"] = "all_failed"
    max_success_rate: float = 0.25  # threshold of gate = "rate_below"
    # "nll": -λ times the mean token log-likelihood of the retokenized peer success (GRAFT's fixed-
    # weight auxiliary NLL; advantages play no part). "luffy": -λ · A · f(π) with LUFFY's shaping
    # f(p) = p / (p + gamma) (the MRL design table's "shaped ratio as in LUFFY").
    loss: Literal["nll", "luffy"] = "nll"
    coef: float = 0.5  # λ, the weight of the off-policy positive term
    gamma: float = 0.1  # LUFFY shaping constant (loss = "luffy")
    k: int = 2  # at most this many rescue completions per prompt
    # At most this many of the receiver's own successes per prompt that was not rescued join the
    # imitation term beside the rescue samples (0: none, GRAFT's SGT), so that the term does not
    # imitate only the part of the task the peer solves.
    own_k: int = 0
    # loss = "luffy" only. "unit": rescue samples get advantage 1 and the receiver's own group is
    # unchanged; "pooled": advantages over the failed group plus the rescue samples (LUFFY's mixed
    # group, which also re-baselines the receiver's own failures).
    advantage: Literal["pooled", "unit"] = "unit"

    def __post_init__(self) -> None:
        check_float(self, "coef", ge=0)
        check_float(self, "gamma", gt=0)
        check_int(self, "k", 1, 10_000)
        check_int(self, "own_k", 0, 10_000)


class SharingOnly(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The `[probes]` table's common part; `ProbesConfig` adds one table per probe with options."""

    sharing: SharingConfig = SharingConfig()
