"""The THL fast path's own code against references: the cut-character split against trying each
cut, back-to-back alignment against the phantom-byte layout, and whole batches through the fast
path against the general path (which the same input as Python lists takes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.tokenizers import MIXED_TEXT, REAL, real_vocabs, unigram, wordpiece
from hypothesis import given, settings
from hypothesis import strategies as st

from mrl_actors.thl import Vocab, load_vocab, transfer_many
from mrl_actors.thl.align import align
from mrl_actors.thl.flat import decode_cut


def _try_cuts(data: bytes, byte_ids: list[int]) -> tuple[str | None, list[int]]:
    """The reference: the shortest cut of 1 to 3 bytes whose prefix decodes, if the receiver has
    byte tokens for the cut bytes."""
    for cut in (1, 2, 3):
        try:
            text = data[:-cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        tail = [byte_ids[b] for b in data[-cut:]]
        return (text, tail) if min(tail) >= 0 else (None, [])
    return None, []


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(max_size=12),
    cut=st.integers(0, 4),
    junk=st.lists(st.integers(0, 255), max_size=4),
    junk_at_end=st.booleans(),
    missing=st.sets(st.integers(0x80, 0xFF), max_size=8),
)
def test_decode_cut_equals_trying_each_cut(
    text: str, cut: int, junk: list[int], junk_at_end: bool, missing: set[int]
) -> None:
    """Text cut inside a multibyte character, stray bytes at the end or in the middle, and a
    receiver without byte tokens for some byte values."""
    data = text.encode("utf-8")
    data = data[: max(0, len(data) - cut)]
    data = data + bytes(junk) if junk_at_end else bytes(junk) + data
    byte_ids = [-1 if b in missing else 1000 + b for b in range(256)]
    try:
        data.decode("utf-8")
        return  # valid UTF-8 never reaches decode_cut
    except UnicodeDecodeError as exc:
        bad = exc.start
    assert decode_cut(data, bad, byte_ids) == _try_cuts(data, byte_ids)


@st.composite
def positive_tilings(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    """Two tokenizations of the same bytes, every token at least one byte, not empty."""
    total = draw(st.integers(1, 60))
    cuts_a = (
        sorted(set(draw(st.lists(st.integers(1, total - 1), max_size=25)))) if total > 1 else []
    )
    cuts_b = (
        sorted(set(draw(st.lists(st.integers(1, total - 1), max_size=25)))) if total > 1 else []
    )
    return np.diff([0, *cuts_a, total]).tolist(), np.diff([0, *cuts_b, total]).tolist()


@settings(max_examples=200, deadline=None)
@given(batch=st.lists(positive_tilings(), min_size=1, max_size=6))
def test_back_to_back_alignment_equals_the_phantom_byte_layout(
    batch: list[tuple[list[int], list[int]]],
) -> None:
    totals = np.asarray([sum(a) for a, _ in batch])
    src = np.concatenate([np.asarray(a, dtype=np.int64) for a, _ in batch])
    dst = np.concatenate([np.asarray(b, dtype=np.int64) for _, b in batch])
    n_src = np.asarray([len(a) for a, _ in batch])
    n_dst = np.asarray([len(b) for _, b in batch])
    off = np.concatenate([[0], np.cumsum(totals)])
    tight = align(np.cumsum(src), np.cumsum(dst), off[:-1], off[1:])
    k = np.arange(len(batch))
    base = off[:-1] + k
    loose = align(
        np.cumsum(src) + np.repeat(k, n_src),
        np.cumsum(dst) + np.repeat(k, n_dst),
        base,
        base + totals,
    )
    for name in ("src_span", "dst_span", "src_count", "dst_count", "seq", "seq_off", "nbytes"):
        np.testing.assert_array_equal(getattr(tight, name), getattr(loose, name), err_msg=name)
    np.testing.assert_array_equal(
        np.bincount(tight.seq, minlength=len(batch)), np.diff(tight.seq_off)
    )


TEXT = MIXED_TEXT


@pytest.fixture(scope="module")
def vocabs(models_dir: Path) -> dict[str, Vocab]:
    found = dict(real_vocabs(models_dir, REAL))
    found["wordpiece"] = load_vocab(wordpiece())
    found["unigram"] = load_vocab(unigram())
    return found


def _peer_batch(v: Vocab, rng: np.random.Generator) -> list[np.ndarray]:
    """Sequences a peer could send: its own encoding cut anywhere (often inside a character),
    with or without EOS, byte-fallback splits, random ids (specials and [UNK] included), empty."""
    ids = v.continuation.encode(TEXT, add_special_tokens=False).ids
    out: list[np.ndarray] = []
    for i in range(24):
        kind = i % 6
        if kind == 0:
            x = np.zeros(0, dtype=np.int64)
        elif kind == 1:
            x = rng.integers(0, v.size, size=int(rng.integers(1, 40)))
        elif kind == 2:
            bi = v.byte_ids[v.byte_ids >= 0]
            x = bi[rng.integers(0, len(bi), size=20)] if len(bi) else np.asarray([0])
        else:
            x = np.asarray(ids[: int(rng.integers(1, len(ids) + 1))])
        if v.eos_id is not None and i % 4 == 1:
            x = np.concatenate([x, [v.eos_id]])
        out.append(x.astype(np.int32))
    return out


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("gpt2", "llama2-7b"),
        ("mistral-7b", "llama2-7b"),
        ("qwen1.5-1.8b", "gpt2"),
        ("llama2-7b", "wordpiece"),
        ("gpt2", "unigram"),
        ("unigram", "mistral-7b"),
    ],
)
def test_the_fast_path_gives_the_general_paths_transfers(
    vocabs: dict[str, Vocab], a: str, b: str
) -> None:
    """Exact and lossy receivers, cut characters, EOS, token-level traces: arrays take the fast
    path, the same values as Python lists take the general one; every Transfer is the same."""
    if a not in vocabs or b not in vocabs:
        pytest.skip(f"{a} or {b} not available")
    src, dst = vocabs[a], vocabs[b]
    rng = np.random.default_rng(7)
    ids = _peer_batch(src, rng)
    lps = [-rng.exponential(size=x.shape[0]) for x in ids]
    masks = [rng.random(x.shape[0]) > 0.2 for x in ids]
    advs = [rng.normal(size=x.shape[0]) for x in ids]
    rws = [rng.normal(size=x.shape[0]) for x in ids]
    kw = {"logprobs": lps, "loss_mask": masks, "advantages": advs, "token_rewards": rws}
    fast = transfer_many(src, dst, ids, **kw)  # type: ignore[arg-type]
    general = transfer_many(src, dst, [x.tolist() for x in ids], **kw)  # type: ignore[arg-type]
    assert type(fast).__name__ == "TransferBatch" and isinstance(general, list)
    if b in ("wordpiece", "unigram"):  # some sequences take the slow path inside the fast one
        assert any(t.residual.lossy_bytes for t in general)
    for f, g in zip(fast, general, strict=True):
        np.testing.assert_array_equal(f.ids, g.ids)
        assert f.ids.dtype == g.ids.dtype
        np.testing.assert_array_equal(f.loss_mask, g.loss_mask)
        pairs = ((f.logprobs, g.logprobs), (f.advantages, g.advantages))
        for x, y in (*pairs, (f.token_rewards, g.token_rewards)):
            np.testing.assert_allclose(x, y, rtol=0, atol=1e-12)  # type: ignore[arg-type]
        assert f.residual == g.residual
        assert (f.rejected, f.reason) == (g.rejected, g.reason)
