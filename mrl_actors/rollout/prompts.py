"""Prompt text to token ids, the same way for every engine and the learner."""

from __future__ import annotations

from typing import Any

import numpy as np


def encode_prompt(tokenizer: Any, text: str) -> np.ndarray:
    """int32 [P] ids of `text`, with BOS where the tokenizer adds one (Llama; not GPT-2)."""
    return np.asarray(tokenizer(text)["input_ids"], dtype=np.int32)
