"""LM heads that force what a model generates, so a test sets up the text it checks."""

from __future__ import annotations

from typing import Any

import torch


class Boost(torch.nn.Module):
    """An LM head that makes one token overwhelmingly likely: logits [..., V] + 100 at `token`."""

    def __init__(self, head: Any, token: int) -> None:
        super().__init__()
        self.head, self.token = head, token

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.head(h)
        out[..., self.token] += 100.0
        return out
