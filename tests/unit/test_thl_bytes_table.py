"""Byte tables of the real tokenizers: Ġ/Ċ, ▁, <0xNN>, specials, roles, fingerprint cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers.tokenizers import REAL, real_vocabs
from tokenizers import Tokenizer

from mrl_actors.errors import TokenizerError
from mrl_actors.thl import Vocab, load_vocab
from mrl_actors.thl.bytes_table import pair_warnings


@pytest.fixture(scope="session")
def real(models_dir: Path) -> dict[str, Vocab]:
    return real_vocabs(models_dir, REAL)


def _id(v: Vocab, piece: str) -> int:
    idx = v.tokenizer.token_to_id(piece)
    assert idx is not None, piece
    return int(idx)


@pytest.mark.parametrize(
    ("name", "kind", "the", "newline"),
    [
        ("gpt2", "byte-level", "Ġthe", "Ċ"),
        ("qwen1.5-1.8b", "byte-level", "Ġthe", "Ċ"),
        ("llama2-7b", "sentencepiece", "▁the", "<0x0A>"),
        ("mistral-7b", "sentencepiece", "▁the", "<0x0A>"),
    ],
)
def test_pieces_and_every_byte(
    real: dict[str, Vocab], name: str, kind: str, the: str, newline: str
) -> None:
    v = real[name]
    assert v.kind == kind
    assert v.token_bytes(_id(v, the)) == b" the"
    assert v.token_bytes(_id(v, newline)) == b"\n"
    assert (v.byte_ids >= 0).all()  # every byte has a token
    if kind == "byte-level":  # ... that is the byte itself
        assert [v.token_bytes(int(v.byte_ids[b])) for b in range(256)] == [
            bytes([b]) for b in range(256)
        ]
    else:  # byte fallback
        assert v.token_bytes(_id(v, "<0xF0>")) == b"\xf0"


def test_specials_have_no_bytes_and_roles_are_found(real: dict[str, Vocab]) -> None:
    g, ll, q = real["gpt2"], real["llama2-7b"], real["qwen1.5-1.8b"]
    assert (g.bos_id, g.eos_id) == (50256, 50256) and g.token_bytes(50256) == b""
    assert (ll.bos_id, ll.eos_id, ll.unk_id) == (1, 2, 0)
    assert ll.token_bytes(1) == b"" and ll.special[[0, 1, 2]].all()
    assert q.bos_id is None and q.eos_id == 151643 and q.pad_id == 151643
    assert 151645 in q.end_ids  # <|im_end|> ends a completion like EOS
    assert q.lossy_normalizer == ("NFC",) and ll.lossy_normalizer == ()  # NFC rewrites bytes


def test_tables_match_the_tokenizers_own_decode(real: dict[str, Vocab]) -> None:
    """Where decode is lossless (valid UTF-8, not special), it agrees with the table."""
    rng = np.random.default_rng(0)
    for v in real.values():
        for idx in rng.choice(v.size, size=300, replace=False).tolist():
            data = v.token_bytes(idx)
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                continue
            if v.special[idx] or not text.strip():
                continue
            # A leading space is stripped by SentencePiece decoders: compare stripped.
            assert v.tokenizer.decode([idx]).strip() == text.strip(), (v.name, idx)


def test_pair_warnings_name_what_can_be_lossy(real: dict[str, Vocab]) -> None:
    assert pair_warnings(real["gpt2"], real["llama2-7b"]) == []
    (warning,) = pair_warnings(real["gpt2"], real["qwen1.5-1.8b"])
    assert "NFC" in warning


def test_vocabs_are_cached_by_fingerprint(real: dict[str, Vocab], models_dir: Path) -> None:
    assert load_vocab(models_dir / "gpt2") is real["gpt2"]
    assert len({v.fingerprint for v in real.values()}) == len(real)
    again = load_vocab(Tokenizer.from_str(real["llama2-7b"].tokenizer.to_str()))
    assert again.fingerprint == real["llama2-7b"].fingerprint
    assert np.array_equal(again.lengths, real["llama2-7b"].lengths)


def _qwen_copy(models_dir: Path, dest: Path, **config: object) -> Path:
    """A writable copy of the Qwen tokenizer with `config` merged into tokenizer_config.json."""
    dest.mkdir()
    for f in (models_dir / "qwen1.5-1.8b").iterdir():
        shutil.copyfile(f, dest / f.name)  # copyfile: the shared files are read-only
    cfg_path = dest / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(config)
    cfg_path.write_text(json.dumps(cfg))
    return dest


def test_the_cache_tells_apart_tokenizer_configs(
    real: dict[str, Vocab], models_dir: Path, tmp_path: Path
) -> None:
    """Same tokenizer.json, other roles or chat template: another table, same fingerprint."""
    base = real["qwen1.5-1.8b"]
    chat = load_vocab(_qwen_copy(models_dir, tmp_path / "chat", eos_token="<|im_end|>"))
    assert chat is not base and chat.hf is not base.hf
    assert (chat.eos_id, base.eos_id) == (151645, 151643)
    assert chat.fingerprint == base.fingerprint  # the byte-level tokenization is the same
    templ = load_vocab(_qwen_copy(models_dir, tmp_path / "templ", chat_template="{{ messages }}"))
    assert templ is not base and templ.hf.chat_template == "{{ messages }}"
    assert load_vocab(base.hf) is base  # the same roles and template still hit the cache


def test_an_unloadable_directory_is_a_tokenizer_error(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="no fast tokenizer"):
        load_vocab(tmp_path)
    with pytest.raises(TokenizerError, match="cannot be read"):
        load_vocab(tmp_path / "missing")
