"""Stop-string handling shared by the engines: where a completion ends, and why."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def stop_index(token_ids: Sequence[int], tokenizer: Any, stops: Sequence[str]) -> int | None:
    """Length of the shortest prefix of `token_ids` whose text contains a stop string, or None.

    Decoding prefixes is O(C^2) in the worst case; it runs once per finished sequence on short
    completions, and only when stop strings are configured.
    """
    if not stops:
        return None
    full = tokenizer.decode(list(token_ids), skip_special_tokens=False)
    if not any(s in full for s in stops):
        return None
    for k in range(1, len(token_ids) + 1):
        text = tokenizer.decode(list(token_ids[:k]), skip_special_tokens=False)
        if any(s in text for s in stops):
            return k
    return None
