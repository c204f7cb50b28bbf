"""THL transfer on every ordered pair of the real tokenizers, the trained ones, and odd input."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from helpers.tokenizers import MIXED_TEXT, REAL, real_vocabs, unigram, wordpiece

from mrl_actors.thl import (
    ResidualBudget,
    Vocab,
    load_vocab,
    render_prompt,
    transfer,
    transfer_many,
    with_roles,
)
from mrl_actors.thl.baselines import two_pointer_spans
from mrl_actors.thl.bytes_table import pair_warnings

TEXT = MIXED_TEXT


@pytest.fixture(scope="session")
def real(models_dir: Path) -> dict[str, Vocab]:
    return real_vocabs(models_dir, REAL)


@pytest.fixture(scope="session")
def trained() -> dict[str, Vocab]:
    return {"wordpiece": load_vocab(wordpiece()), "unigram": load_vocab(unigram())}


def _ids(v: Vocab, text: str, eos: bool = True) -> np.ndarray:
    ids = v.continuation.encode(text, add_special_tokens=False).ids
    return np.asarray([*ids, v.eos_id] if eos else ids, dtype=np.int32)


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(1.0, abs(b))


@pytest.mark.parametrize(("a", "b"), list(itertools.product(REAL, REAL)))
def test_every_real_pair_is_exact_and_conserves_log_prob_sums(
    real: dict[str, Vocab], a: str, b: str
) -> None:
    src, dst = real[a], real[b]
    ids = _ids(src, TEXT)
    lp = -np.asarray(np.random.default_rng(0).exponential(size=ids.shape[0]))
    t = transfer(src, dst, ids, logprobs=lp)
    assert not t.rejected, t.reason
    assert t.residual.exact and t.residual.lossy_bytes == 0
    assert dst.ids_to_bytes(t.ids[:-1]) == TEXT.encode()
    assert t.ids[-1] == dst.eos_id and t.ids.dtype == np.int32
    assert t.logprobs is not None and t.logprobs.dtype == np.float64
    assert _rel(float(t.logprobs.sum()), float(lp.sum())) < 1e-9
    assert t.logprobs[-1] == lp[-1]  # EOS maps 1:1 by role
    if a == b:
        np.testing.assert_array_equal(t.ids, ids)
        np.testing.assert_array_equal(t.logprobs, lp)
        assert t.residual.one_to_one_share == 1.0 and t.residual.nm_byte_share == 0.0
    else:
        assert 0.0 < t.residual.one_to_one_share < 1.0


def test_last_rule_puts_each_span_sum_on_its_last_token(real: dict[str, Vocab]) -> None:
    src, dst = real["gpt2"], real["llama2-7b"]
    ids = _ids(src, TEXT, eos=False)
    lp = -np.asarray(np.random.default_rng(1).exponential(size=ids.shape[0]))
    t = transfer(src, dst, ids, logprobs=lp, logprob_rule="last")
    src_span, dst_span = two_pointer_spans(src.lengths[ids].tolist(), dst.lengths[t.ids].tolist())
    sums = np.bincount(src_span, weights=lp)
    last = [
        j for j in range(len(dst_span)) if j + 1 == len(dst_span) or dst_span[j + 1] != dst_span[j]
    ]
    assert t.logprobs is not None
    np.testing.assert_allclose(t.logprobs[last], sums, rtol=0, atol=0)
    assert np.count_nonzero(t.logprobs) == len(last)


def test_masks_advantages_and_rewards_follow_the_spans(real: dict[str, Vocab]) -> None:
    src, dst = real["qwen1.5-1.8b"], real["mistral-7b"]
    ids = _ids(src, TEXT, eos=False)
    n = ids.shape[0]
    rng = np.random.default_rng(2)
    mask = np.ones(n, dtype=bool)
    mask[5:9] = False
    adv = np.asarray(rng.normal(size=n))
    rew = np.zeros(n)
    rew[[3, n - 1]] = [0.5, 1.0]
    t = transfer(src, dst, ids, loss_mask=mask, advantages=adv, token_rewards=rew)
    src_span, dst_span = two_pointer_spans(src.lengths[ids].tolist(), dst.lengths[t.ids].tolist())
    ss, ds = np.asarray(src_span), np.asarray(dst_span)
    assert isinstance(t.advantages, np.ndarray) and t.token_rewards is not None
    for j, s in enumerate(ds):
        assert t.loss_mask[j] == bool(mask[ss == s].all())
        assert t.advantages[j] == pytest.approx(adv[ss == s].mean(), abs=1e-12)
    assert t.token_rewards.sum() == pytest.approx(1.5)
    assert t.token_rewards[-1] == 1.0  # the last span's reward lands on its last token
    assert not t.loss_mask.all() and t.loss_mask.any()
    scalar = transfer(src, dst, ids, advantages=0.25)
    assert scalar.advantages == 0.25 and scalar.loss_mask.all()


def test_non_canonical_ids_give_the_same_receiver_tokens(real: dict[str, Vocab]) -> None:
    """Split every peer token into its single-byte tokens: same bytes, same transfer."""
    for name in ("gpt2", "llama2-7b"):
        src, dst = real[name], real["qwen1.5-1.8b"]
        canonical = _ids(src, TEXT, eos=False)
        split = np.asarray(
            [src.byte_ids[b] for b in TEXT.encode()], dtype=np.int32
        )  # one id per byte
        assert (split >= 0).all() and split.shape[0] > canonical.shape[0]
        lp = np.full(split.shape[0], -0.5)
        t1 = transfer(src, dst, canonical)
        t2 = transfer(src, dst, split, logprobs=lp)
        np.testing.assert_array_equal(t1.ids, t2.ids)
        assert t2.residual.exact and t2.logprobs is not None
        assert _rel(float(t2.logprobs.sum()), float(lp.sum())) < 1e-9


def test_a_character_cut_at_the_end_is_kept_as_byte_tokens(real: dict[str, Vocab]) -> None:
    src, dst = real["gpt2"], real["llama2-7b"]
    ids = np.asarray([*_ids(src, "ok ", eos=False), src.byte_ids[0xF0], src.byte_ids[0x9F]])
    t = transfer(src, dst, ids, logprobs=np.full(ids.shape[0], -1.0))
    assert not t.rejected and t.residual.invalid_utf8_bytes == 2 and t.residual.exact
    assert dst.ids_to_bytes(t.ids) == b"ok \xf0\x9f"
    strict = transfer(src, dst, ids, budget=ResidualBudget(allow_invalid_utf8=False))
    assert strict.rejected and "UTF-8" in strict.reason


def test_specials_are_mapped_by_role_never_as_text(real: dict[str, Vocab]) -> None:
    qwen, llama = real["qwen1.5-1.8b"], real["llama2-7b"]
    im_start, im_end = 151644, 151645
    ids = np.asarray([*_ids(qwen, "Hi", eos=False), im_start, *_ids(qwen, " there", eos=False)])
    ids = np.asarray([*ids, im_end])
    lp = np.linspace(-1, -0.1, ids.shape[0])
    t = transfer(qwen, llama, ids, logprobs=lp)
    assert t.ids[-1] == llama.eos_id  # <|im_end|> has the EOS role
    assert llama.ids_to_bytes(t.ids) == b"Hi there"  # the marker is not text
    assert t.residual.dropped_special == 1 and t.logprobs is not None
    assert _rel(float(t.logprobs.sum()), float(lp.sum())) < 1e-9


def test_a_chat_format_receiver_can_take_its_turn_end_as_eos(real: dict[str, Vocab]) -> None:
    qwen_chat = with_roles(real["qwen1.5-1.8b"], eos_id=151645)  # <|im_end|>
    llama = real["llama2-7b"]
    ids = _ids(llama, " Four.")
    t = transfer(llama, qwen_chat, ids, logprobs=np.full(ids.shape[0], -0.5))
    assert t.ids[-1] == 151645 and t.logprobs is not None and t.logprobs[-1] == -0.5
    assert real["qwen1.5-1.8b"].eos_id == 151643  # the cached vocab is unchanged


def test_a_lossy_normalizer_is_detected_and_rejected(real: dict[str, Vocab]) -> None:
    src, dst = real["gpt2"], real["qwen1.5-1.8b"]  # Qwen normalizes to NFC
    text = "cafe\u0301 and more"  # decomposed é
    ids = _ids(src, text, eos=False)
    lp = np.full(ids.shape[0], -0.3)
    t = transfer(src, dst, ids, logprobs=lp)
    assert t.rejected and "lossy" in t.reason
    assert t.residual.lossy_bytes > 0 and not t.residual.exact
    ok = transfer(src, dst, ids, logprobs=lp, budget=ResidualBudget(allow_lossy=True))
    assert not ok.rejected and ok.logprobs is not None
    assert _rel(float(ok.logprobs.sum()), float(lp.sum())) < 1e-9


@pytest.mark.parametrize("trained_name", ["wordpiece", "unigram"])
def test_trained_tokenizers_with_every_real_one(
    real: dict[str, Vocab], trained: dict[str, Vocab], trained_name: str
) -> None:
    tv = trained[trained_name]
    clean = " hello world"
    for rv in real.values():
        for src, dst in ((rv, tv), (tv, rv)):
            ids = _ids(src, clean, eos=False)
            lp = np.full(ids.shape[0], -0.7)
            t = transfer(src, dst, ids, logprobs=lp)
            assert not t.rejected, (src.name, dst.name, t.reason)
            assert t.logprobs is not None
            assert _rel(float(t.logprobs.sum()), float(lp.sum())) < 1e-9
        # Text the trained tokenizer cannot write (CJK never seen; WordPiece also lowercases).
        t = transfer(rv, tv, _ids(rv, " Hello 北京", eos=False))
        assert t.rejected and "lossy" in t.reason
        assert t.residual.lossy_bytes > 0 or t.residual.unk_tokens > 0
        assert pair_warnings(rv, tv)  # known lossy before any text: no byte fallback
    assert transfer(tv, tv, _ids(tv, clean)).residual.one_to_one_share == 1.0


def test_odd_input_never_raises_and_is_rejected(real: dict[str, Vocab]) -> None:
    src, dst = real["llama2-7b"], real["gpt2"]
    good = _ids(src, "fine text", eos=False)
    cases: list[dict[str, object]] = [
        {"src_ids": np.asarray([5, -3, 10**9])},
        {"src_ids": np.asarray([[1.5, 2.7]])},
        {"src_ids": np.asarray([src.bos_id])},  # a lone zero-byte special: no receiver token
        {"src_ids": ["a", "b"]},
        {"src_ids": good, "logprobs": np.zeros(good.shape[0] + 2)},
        {"src_ids": good, "logprobs": np.full(good.shape[0], np.nan)},
        {"src_ids": good, "loss_mask": "yes"},
        {"src_ids": good, "advantages": np.zeros(1)},
    ]
    for kw in cases:
        ids = kw.pop("src_ids")
        t = transfer(src, dst, ids, **kw)  # type: ignore[arg-type]
        assert t.rejected and t.residual.problems, kw
        assert t.reason.startswith("bad input"), kw
    empty = transfer(src, dst, np.zeros(0, dtype=np.int32), logprobs=np.zeros(0))
    assert not empty.rejected and empty.ids.shape == (0,)
    only_eos = transfer(src, dst, np.asarray([src.eos_id]), logprobs=np.asarray([-2.0]))
    assert only_eos.ids.tolist() == [dst.eos_id] and only_eos.logprobs is not None
    assert only_eos.logprobs.tolist() == [-2.0]


def test_the_budget_rejects_with_the_reason(real: dict[str, Vocab]) -> None:
    src, dst = real["gpt2"], real["mistral-7b"]
    ids = _ids(src, TEXT)
    assert not transfer(src, dst, ids).rejected
    t = transfer(src, dst, ids, budget=ResidualBudget(max_span_bytes=2))
    assert t.rejected and "longest span" in t.reason
    t = transfer(src, dst, ids, budget=ResidualBudget(max_nm_byte_share=0.01))
    assert t.rejected and "n:m" in t.reason


def test_transfer_many_equals_one_at_a_time(real: dict[str, Vocab]) -> None:
    src, dst = real["mistral-7b"], real["qwen1.5-1.8b"]
    texts = [TEXT, "", " short", "x" * 300, TEXT[::-1]]
    ids = [_ids(src, x) for x in texts]
    lps = [np.linspace(-2, 0, x.shape[0]) for x in ids]
    many = transfer_many(src, dst, ids, logprobs=lps, advantages=[1.0] * len(ids))
    for x, lp, m in zip(ids, lps, many, strict=True):
        one = transfer(src, dst, x, logprobs=lp, advantages=1.0)
        np.testing.assert_array_equal(one.ids, m.ids)
        assert one.logprobs is not None and m.logprobs is not None
        np.testing.assert_allclose(one.logprobs, m.logprobs, rtol=0, atol=1e-12)
        assert one.residual == m.residual


def test_render_prompt_uses_the_receivers_own_format(real: dict[str, Vocab]) -> None:
    q = render_prompt(real["qwen1.5-1.8b"], "What is 2+2?", chat_template=True)
    assert q[0] == 151644 and q.dtype == np.int32  # <|im_start|>
    assert real["qwen1.5-1.8b"].ids_to_bytes(q[-3:]) == b"assistant\n"
    llama = render_prompt(real["llama2-7b"], "What is 2+2?", chat_template=True)  # no template
    assert llama[0] == real["llama2-7b"].bos_id
    gpt2 = render_prompt(real["gpt2"], "What is 2+2?")
    assert real["gpt2"].ids_to_bytes(gpt2) == b"What is 2+2?"


def test_bad_ids_next_to_good_ones_keep_the_good_bytes(real: dict[str, Vocab]) -> None:
    """Regression: a bad id used to be read as id 0 when gathering bytes, and broke the batch."""
    src, dst = real["gpt2"], real["llama2-7b"]
    ids = np.asarray([0, 10**9, 0])  # "!", out of range, "!"
    t = transfer(src, dst, ids, logprobs=np.full(3, -1.0))
    assert t.rejected and "outside the peer vocabulary" in t.reason
    assert dst.ids_to_bytes(t.ids) == b"!!"
    assert t.logprobs is not None and t.logprobs.sum() == pytest.approx(-3.0)


def test_special_token_text_in_a_completion_stays_text(real: dict[str, Vocab]) -> None:
    """Regression (found by hypothesis): the receiver read the literal text "<s>" as its BOS."""
    gpt2, llama = real["gpt2"], real["llama2-7b"]
    text = "say <s> or <|im_end|>"
    t = transfer(gpt2, llama, _ids(gpt2, text, eos=False))
    assert llama.ids_to_bytes(t.ids) == text.encode() and t.residual.exact
    assert not llama.special[t.ids].any()


def test_a_trace_list_of_the_wrong_batch_length_rejects_not_raises(
    real: dict[str, Vocab],
) -> None:
    src, dst = real["gpt2"], real["mistral-7b"]
    ids = [_ids(src, "one"), _ids(src, "two")]
    out = transfer_many(src, dst, ids, logprobs=[np.zeros(2)], advantages=[0.1, 0.2, 0.3])
    assert len(out) == 2
    for t in out:
        assert t.rejected and "batch of 2 sequences" in t.reason
        assert t.logprobs is None and t.advantages is None
