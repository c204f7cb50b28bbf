"""Small tokenizers trained in-process, of kinds the real families lack (WordPiece, Unigram)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from mrl_actors.thl import Vocab, load_vocab

TRAIN = [
    "The quick brown fox jumps over the lazy dog.",
    "hello world, hello there! numbers 123 and 456.",
    "def f(x): return x + 1  # comment",
] * 10


def wordpiece() -> Tokenizer:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    special = ["[UNK]", "[CLS]", "[SEP]", "[PAD]"]
    tok.train_from_iterator(
        TRAIN, trainers.WordPieceTrainer(vocab_size=200, special_tokens=special)
    )
    return tok


def unigram() -> Tokenizer:
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=150, special_tokens=["<unk>", "<s>", "</s>"], unk_token="<unk>"
    )
    tok.train_from_iterator(TRAIN, trainer)
    return tok


class Available(dict[str, Vocab]):
    """The real vocabularies found (tests/data/models, then `$MRL_MODELS_DIR`): asking for one
    that is missing skips the test instead of failing it."""

    def __missing__(self, name: str) -> Vocab:
        pytest.skip(f"{name} tokenizer not bundled and not in $MRL_MODELS_DIR or ../shared/models")


# the four real tokenizers' folders (Llama-2 and Qwen only where ../shared/models has them)
REAL = ("gpt2", "llama2-7b", "mistral-7b", "qwen1.5-1.8b")
# one text with what tokenizers split differently: prose, math, code, emoji with joiners, CJK,
# Cyrillic, accents, runs of spaces and tabs
MIXED_TEXT = (
    " The answer is 42.\n\nLet $f(x) = x^2$; then f'(3) = 6 ✓\n"
    "def f(x):\n    return x  # 🙂 emoji 👩‍💻\n北京是首都。Москва, café naïve   spaced\t\ttabs\n"
)


def real_vocabs(models_dir: Path, names: Iterable[str]) -> Available:
    """The vocabularies of `names` that exist under `models_dir` (the others skip when asked)."""
    return Available({n: load_vocab(models_dir / n) for n in names if (models_dir / n).exists()})
