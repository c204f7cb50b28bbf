"""Samples the learner consumes, and their collation into padded tensors.

A `Sample` is one completion with everything the loss needs; the caller (a policy actor) computes
advantages, so that XGRPO's pooled baselines and SGT's rescue sets stay outside the learner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Sample:
    """One completion to learn from."""

    prompt_ids: np.ndarray  # int32 [P]
    completion_ids: np.ndarray  # int32 [C]
    # [C] log-probs of completion_ids under the sampling policy at the sampling temperature; for
    # peer samples, the peer's log-probs aligned onto these ids by the THL.
    behaviour_logprobs: np.ndarray
    advantage: float  # sequence-level advantage
    loss_mask: np.ndarray | None = None  # bool [C]; None = every token
    token_advantages: np.ndarray | None = None  # [C]; overrides `advantage` when given
    weight: float = 1.0  # multiplies this sample's loss terms (PRP importance weight, SGT lambda)


@dataclass
class Batch:
    """Padded tensors for B samples: prompts left-padded to P, completions right-padded to T."""

    input_ids: torch.Tensor  # [B, P + T] int64
    attention_mask: torch.Tensor  # [B, P + T] int64
    completion_ids: torch.Tensor  # [B, T] int64
    mask: torch.Tensor  # [B, T] float32: real, unmasked completion tokens
    behaviour_logps: torch.Tensor  # [B, T] float32
    advantages: torch.Tensor  # [B] or [B, T] float32
    weights: torch.Tensor  # [B] float32


def collate(samples: Sequence[Sample], pad_id: int = 0) -> Batch:
    """Pad `samples` into one `Batch`; token advantages win if any sample carries them."""
    b = len(samples)
    p = max(len(s.prompt_ids) for s in samples)
    t = max(max(len(s.completion_ids) for s in samples), 1)
    input_ids = np.full((b, p + t), pad_id, dtype=np.int64)
    attn = np.zeros((b, p + t), dtype=np.int64)
    mask = np.zeros((b, t), dtype=np.float32)
    beh = np.zeros((b, t), dtype=np.float32)
    token_level = any(s.token_advantages is not None for s in samples)
    adv = np.zeros((b, t) if token_level else (b,), dtype=np.float32)
    for i, s in enumerate(samples):
        lp, lc = len(s.prompt_ids), len(s.completion_ids)
        input_ids[i, p - lp : p] = s.prompt_ids
        attn[i, p - lp : p] = 1
        input_ids[i, p : p + lc] = s.completion_ids
        attn[i, p : p + lc] = 1
        mask[i, :lc] = 1.0 if s.loss_mask is None else np.asarray(s.loss_mask, dtype=np.float32)
        beh[i, :lc] = s.behaviour_logprobs
        if token_level:
            adv[i, :lc] = s.advantage if s.token_advantages is None else s.token_advantages
        else:
            adv[i] = s.advantage
    return Batch(
        input_ids=torch.from_numpy(input_ids),
        attention_mask=torch.from_numpy(attn),
        completion_ids=torch.from_numpy(input_ids[:, p:].copy()),
        mask=torch.from_numpy(mask),
        behaviour_logps=torch.from_numpy(beh),
        advantages=torch.from_numpy(adv),
        weights=torch.tensor([s.weight for s in samples], dtype=torch.float32),
    )
