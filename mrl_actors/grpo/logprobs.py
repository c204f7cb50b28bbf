"""Per-token log-probs and entropies of completion tokens, computing logits only where needed.

With a real vocabulary (32k-150k) and a tiny hidden size, the LM head dominates the cost: running it
on the T completion positions only, instead of all P + T, is what keeps a step fast (TRL's fused LM
head does the same). Position ids follow the attention mask so left padding does not shift
positions, exactly as the rollout engine sees them: on-policy ratios start at 1.
"""

from __future__ import annotations

from typing import Any

import torch


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, L] positions counting only real tokens (0 on left padding)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def completion_logps(
    model: Any,
    input_ids: torch.Tensor,  # [B, P + T]
    attention_mask: torch.Tensor,  # [B, P + T]
    n_completion: int,  # T
    temperature: float,
    *,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log pi(token | prefix) at `temperature` of the last T tokens [B, T], and entropy if asked.

    The entropy is detached (a metric), so computing it adds no backward cost.
    """
    t = n_completion
    hidden = model.base_model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    ).last_hidden_state  # [B, P + T, H]
    h = hidden[:, -t - 1 : -1]  # [B, T, H]: the positions that predict the completion tokens
    logits = model.get_output_embeddings()(h).float() / temperature  # [B, T, V]
    logp_all = torch.log_softmax(logits, dim=-1)  # [B, T, V]
    targets = input_ids[:, -t:].unsqueeze(-1)  # [B, T, 1]
    logps = logp_all.gather(-1, targets).squeeze(-1)  # [B, T]
    entropy = None
    if with_entropy:
        with torch.no_grad():
            la = logp_all.detach()
            entropy = -(la.exp() * la).sum(-1)  # [B, T]
    return logps, entropy
