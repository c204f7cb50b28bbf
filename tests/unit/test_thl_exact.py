"""The token-hash exactness check: equal bytes hash equal across tokenizations, others do not."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mrl_actors.thl import Vocab, load_vocab
from mrl_actors.thl.exact import seq_hashes


@pytest.fixture(scope="module")
def pair(model_dir: Callable[[str], Path]) -> tuple[Vocab, Vocab]:
    return load_vocab(model_dir("gpt2")), load_vocab(model_dir("llama2-7b"))


def _hash(v: Vocab, seqs: list[np.ndarray]) -> np.ndarray:
    ids = np.concatenate(seqs).astype(np.int64)
    ends = np.cumsum(v.lengths[ids])
    tok_off = np.concatenate([[0], np.cumsum([s.shape[0] for s in seqs])])
    return seq_hashes(v, ids, int(ends[-1]) - ends, tok_off)


def _ids(v: Vocab, text: str) -> np.ndarray:
    return np.asarray(v.continuation.encode(text, add_special_tokens=False).ids)


def test_the_same_bytes_hash_the_same_in_two_tokenizers(pair: tuple[Vocab, Vocab]) -> None:
    gpt2, llama = pair
    texts = ["Hello, world!", " 北京 🙂 x**2\n\n", "\x00tab\tand\r\n"]
    a = _hash(gpt2, [_ids(gpt2, t) for t in texts])
    b = _hash(llama, [_ids(llama, t) for t in texts])
    assert (a == b).all()
    # A non-canonical split (every byte its own token) spells the same bytes: the same hash.
    split = [gpt2.byte_ids[np.frombuffer(t.encode(), dtype=np.uint8)] for t in texts]
    assert (_hash(gpt2, split) == a).all()


def test_other_bytes_of_the_same_length_hash_differently(pair: tuple[Vocab, Vocab]) -> None:
    gpt2, _ = pair
    a = _hash(gpt2, [_ids(gpt2, "abc def"), _ids(gpt2, "same")])
    b = _hash(gpt2, [_ids(gpt2, "abd cef"), _ids(gpt2, "same")])
    assert (a[:, 0] != b[:, 0]).all()  # both hashes differ for the changed sequence
    assert (a[:, 1] == b[:, 1]).all()  # and the untouched one is unchanged
