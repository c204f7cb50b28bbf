"""Property tests of the THL over arbitrary Unicode, including text cut inside a character.

Invariants: log-prob sums conserved to 1e-9 relative (float64); the identity pair all 1:1 and
exact; loss masks never let a byte in that was out; advantages stay span means; no exception
escapes, whatever the ids.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.tokenizers import Available, real_vocabs, unigram, wordpiece
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mrl_actors.thl import Vocab, load_vocab, transfer
from mrl_actors.thl.baselines import two_pointer_spans

PAIRS = [
    ("gpt2", "llama2-7b"),
    ("llama2-7b", "qwen1.5-1.8b"),
    ("qwen1.5-1.8b", "mistral-7b"),
    ("mistral-7b", "gpt2"),
]
SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Pieces that stress tokenizers: emoji (ZWJ sequences, flags), CJK, combining marks, runs of
# spaces and newlines, control characters, right-to-left text.
PIECES = [
    "🙂",
    "👩‍💻",
    "🇯🇵",
    "北京",
    "東京タワー",
    "e\u0301",
    "a\u0308\u0323",
    "   ",
    "\n\n\n",
    "\t",
    "\x00",
    "\x1b[0m",
    "\r\n",
    "مرحبا",
    "Ω≈ç√",
    " the",
    "x**2",
    "42",
    "\u200b",
    "\ufeff",
]
texts = st.lists(
    st.one_of(st.sampled_from(PIECES), st.text(min_size=0, max_size=12)), max_size=20
).map("".join)


@st.composite
def cut_bytes(draw: st.DrawFn) -> bytes:
    """UTF-8 of an arbitrary text, cut anywhere (often inside a character)."""
    data = draw(texts).encode("utf-8")
    return data[: draw(st.integers(0, len(data)))]


@pytest.fixture(scope="session")
def vocabs(models_dir: Path) -> dict[str, Vocab]:
    return real_vocabs(models_dir, {n for pair in PAIRS for n in pair})


def peer_ids(v: Vocab, data: bytes) -> np.ndarray:
    """What a peer could have sampled for `data`: its encoding of the valid UTF-8 prefix, then
    its byte tokens for a cut character at the end (every real tokenizer here has them)."""
    text = data.decode("utf-8", errors="ignore")
    prefix = text.encode("utf-8")
    if not data.startswith(prefix):  # invalid bytes before the end: all bytes as byte tokens
        return v.byte_ids[np.frombuffer(data, dtype=np.uint8)].astype(np.int32)
    ids = v.continuation.encode(text, add_special_tokens=False).ids
    tail = v.byte_ids[np.frombuffer(data[len(prefix) :], dtype=np.uint8)]
    return np.asarray([*ids, *tail.tolist()], dtype=np.int32)


@pytest.mark.parametrize(("a", "b"), PAIRS)
@SETTINGS
@given(data=cut_bytes(), seed=st.integers(0, 2**32 - 1))
def test_log_prob_sums_are_conserved(
    vocabs: dict[str, Vocab], a: str, b: str, data: bytes, seed: int
) -> None:
    src, dst = vocabs[a], vocabs[b]
    ids = peer_ids(src, data)
    lp = -np.asarray(np.random.default_rng(seed).exponential(3.0, size=ids.shape[0]))
    for rule in ("uniform", "last"):
        t = transfer(src, dst, ids, logprobs=lp, logprob_rule=rule)
        assert t.logprobs is not None and t.logprobs.dtype == np.float64
        assert t.logprobs.shape == t.ids.shape
        total = float(lp.sum())
        assert abs(float(t.logprobs.sum()) - total) <= 1e-9 * max(1.0, abs(total))
        assert not t.residual.problems
        if t.residual.lossy_bytes == 0 and t.residual.unk_tokens == 0:
            assert dst.ids_to_bytes(t.ids) == src.ids_to_bytes(ids)


@pytest.mark.parametrize("name", ["gpt2", "llama2-7b", "qwen1.5-1.8b"])
@SETTINGS
@given(data=cut_bytes())
def test_the_identity_pair_is_all_one_to_one_and_exact(
    vocabs: dict[str, Vocab], name: str, data: bytes
) -> None:
    v = vocabs[name]
    ids = peer_ids(v, data)
    lp = np.linspace(-3.0, -0.1, ids.shape[0])
    t = transfer(v, v, ids, logprobs=lp)
    assert t.residual.exact and not t.rejected, t.reason
    np.testing.assert_array_equal(t.ids, ids)
    assert t.logprobs is not None
    np.testing.assert_array_equal(t.logprobs, lp)
    assert t.residual.one_to_one_share == 1.0 and t.residual.nm_byte_share == 0.0


@pytest.mark.parametrize(("a", "b"), PAIRS[:2])
@SETTINGS
@given(text=texts, seed=st.integers(0, 2**32 - 1))
def test_masks_and_advantages_keep_their_invariants(
    vocabs: dict[str, Vocab], a: str, b: str, text: str, seed: int
) -> None:
    src, dst = vocabs[a], vocabs[b]
    ids = peer_ids(src, text.encode("utf-8"))
    n = ids.shape[0]
    rng = np.random.default_rng(seed)
    mask = np.asarray(rng.random(n)) < 0.8
    adv = np.asarray(rng.normal(size=n))
    t = transfer(src, dst, ids, loss_mask=mask, advantages=adv)
    assert t.loss_mask.dtype == bool and t.loss_mask.shape == t.ids.shape
    if t.residual.lossy_bytes:
        return
    # A receiver token is in the loss only if every byte it covers was.
    src_byte_in = np.repeat(mask, src.lengths[ids])
    dst_ends = np.cumsum(dst.lengths[t.ids])
    for j in np.flatnonzero(t.loss_mask).tolist():
        lo = dst_ends[j] - dst.lengths[t.ids[j]]
        assert src_byte_in[lo : dst_ends[j]].all()
    # Token-level advantages are span means: bounded by the span, equal to it when constant.
    assert isinstance(t.advantages, np.ndarray)
    s_span, d_span = two_pointer_spans(src.lengths[ids].tolist(), dst.lengths[t.ids].tolist())
    for j, span in enumerate(d_span):
        vals = adv[np.asarray(s_span) == span]
        assert vals.min() - 1e-12 <= t.advantages[j] <= vals.max() + 1e-12
    const = transfer(src, dst, ids, advantages=np.full(n, 0.3), loss_mask=np.ones(n, bool))
    assert isinstance(const.advantages, np.ndarray)
    np.testing.assert_allclose(const.advantages, 0.3, rtol=1e-12)
    assert const.loss_mask.all()


@SETTINGS
@given(
    ids=st.lists(st.integers(-(2**40), 2**40), max_size=30)
    | st.lists(st.integers(0, 200_000), max_size=60),
    n_lp=st.integers(0, 70),
)
def test_no_exception_escapes_for_any_ids(
    vocabs: dict[str, Vocab], ids: list[int], n_lp: int
) -> None:
    src, dst = vocabs["qwen1.5-1.8b"], vocabs["llama2-7b"]
    arr = np.asarray(ids, dtype=np.int64)
    t = transfer(src, dst, arr, logprobs=np.full(n_lp, -1.0), loss_mask=np.ones(len(ids), bool))
    assert t.ids.dtype == np.int32 and t.loss_mask.shape == t.ids.shape
    if n_lp != len(ids):
        assert t.rejected and t.residual.problems


@pytest.fixture(scope="session")
def trained_vocabs() -> dict[str, Vocab]:
    return {"wordpiece": load_vocab(wordpiece()), "unigram": load_vocab(unigram())}


@pytest.mark.parametrize(
    ("a", "b"), [("gpt2", "wordpiece"), ("unigram", "llama2-7b"), ("llama2-7b", "unigram")]
)
@SETTINGS
@given(data=cut_bytes(), seed=st.integers(0, 2**32 - 1))
def test_lossy_pairs_are_reported_never_silently_wrong(
    vocabs: dict[str, Vocab],
    trained_vocabs: dict[str, Vocab],
    a: str,
    b: str,
    data: bytes,
    seed: int,
) -> None:
    """Trained WordPiece/Unigram tokenizers cannot write every byte: whatever they lose is
    counted, the transfer is rejected by the default budget, and the log-prob sum still holds."""
    pool = Available({**vocabs, **trained_vocabs})
    src, dst = pool[a], pool[b]
    if src.kind == "byte-level" or (src.byte_ids >= 0).all():
        ids = peer_ids(src, data)
    else:  # no byte tokens: the peer can only have sampled its encoding of valid text
        ids = np.asarray(
            src.continuation.encode(data.decode("utf-8", "ignore"), add_special_tokens=False).ids
        )
    lp = -np.asarray(np.random.default_rng(seed).exponential(size=ids.shape[0]))
    t = transfer(src, dst, ids, logprobs=lp)
    r = t.residual
    want, written = src.ids_to_bytes(ids), dst.ids_to_bytes(t.ids)
    if dst.kind == "wordpiece" and written[:1] == b" " and want[:1] != b" ":
        written = written[1:]  # no space is implied before the first word of a completion
    same = written == want
    if not same or r.unk_tokens:
        assert not r.exact and t.rejected  # reported, never silently wrong
    if r.exact:
        assert same and not t.rejected
    if not r.problems:
        assert t.logprobs is not None
        assert abs(float(t.logprobs.sum() - lp.sum())) <= 1e-9 * max(1.0, abs(float(lp.sum())))
