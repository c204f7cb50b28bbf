"""A completion's text, decoded the same way by every engine: as it reads after its prompt.

Decoded alone, a completion loses what its first token means in context: SentencePiece decoders
(Llama) strip the leading "▁" of a sequence, so "▁The" alone reads "The" but after a prompt
reads " The". vLLM's incremental detokenizer keeps the space, a plain `decode` of the completion
drops it; verifiers and the logged text must not depend on which engine sampled. So the text is
the decoding of (last prompt token + completion) less the decoding of that one token, which is
what the completion adds to the prompt's text, and what vLLM shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def completion_text(
    tokenizer: Any, prompt: Sequence[int] | np.ndarray, completion: Sequence[int]
) -> str:
    """The text `completion` adds after `prompt` (special tokens skipped), as both engines say it.

    Falls back to decoding the completion alone when the prompt is empty, or when the decoding
    with one token of context does not begin with that token's own text (a byte-level merge
    across the boundary), where no split of the text is exact.
    """
    ids = [int(t) for t in completion]
    if len(prompt):
        ctx = int(prompt[-1])
        head = tokenizer.decode([ctx], skip_special_tokens=True)
        full = tokenizer.decode([ctx, *ids], skip_special_tokens=True)
        if full.startswith(head):
            return str(full[len(head) :])
    return str(tokenizer.decode(ids, skip_special_tokens=True))
