"""Per-tokenizer byte tables: what exact UTF-8 bytes each token id stands for.

The THL never aligns through a lossy `decode`: a peer's sampled ids may be non-canonical (a sequence
its own encoder would never emit, such as an emoji split into `<0xF0><0x9F>...` byte-fallback
pieces), and decode loses exactly those cases. Instead every id maps to its bytes, read off the
tokenizer's own conventions:

- byte-level BPE (GPT-2, Qwen): each character of a piece is one byte through the inverse of
  GPT-2's `bytes_to_unicode` (`Ġ` is 0x20, `Ċ` is 0x0A);
- SentencePiece (Llama-2, Mistral, Unigram with Metaspace): `▁` is a space, `<0xNN>` is byte NN
  when the model has byte fallback;
- WordPiece: `##x` continues a word, any other piece starts one and so stands for " x" (the space
  the decoder would insert; none is implied before the first word of a receiver's completion). A
  WordPiece receiver is exact only where the text has exactly those spaces, which is what the
  residual report measures;
- added tokens that are not special stand for their own text; special tokens (BOS, EOS, chat
  markers, `[UNK]`) stand for no bytes and are mapped by role, never as text.

A table is a CSR pair of numpy arrays (`starts`, `lengths` into one `uint8` buffer) so that a
whole batch of ids turns into bytes with one gather. Tables are built once per tokenizer and cached
by `fingerprint`, a hash of the vocabulary, merges, normalizer, pre-tokenizer, decoder and added
tokens, together with the resolved role ids and the chat template: two directories with the same
tokenizer.json but another `eos_token` in tokenizer_config.json share a fingerprint (the same
byte-level tokenization) but not a table.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from mrl_actors.errors import TokenizerError
from mrl_actors.logs import get_logger
from mrl_actors.models.builtin import model_dir
from mrl_actors.models.hub import is_hub_id, local_model_dir

log = get_logger(__name__)

_EOS_NAMES = ("</s>", "<|endoftext|>", "<eos>", "[SEP]", "<|end_of_text|>")
_BOS_NAMES = ("<s>", "<bos>", "[CLS]", "<|begin_of_text|>")
_PAD_NAMES = ("<pad>", "[PAD]", "<|pad|>")
_UNK_NAMES = ("<unk>", "[UNK]", "<|unk|>")
# Special tokens that end a completion the way EOS does (chat turn ends); mapped to the EOS role.
_END_MARKERS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>")


def _bytes_to_unicode() -> dict[str, int]:
    """GPT-2's reversible byte<->printable-character map, inverted: character -> byte."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


_BYTE_DECODER = _bytes_to_unicode()


def _walk(node: Any) -> list[dict[str, Any]]:
    """Flatten a normalizer/pre-tokenizer/decoder JSON node, following `Sequence`s."""
    if not isinstance(node, dict):
        return []
    out = [node]
    for key in ("normalizers", "pretokenizers", "decoders", "processors"):
        for child in node.get(key) or []:
            out.extend(_walk(child))
    return out


@dataclass(frozen=True, eq=False, repr=False)
class Vocab:
    """A tokenizer with its byte table and roles; build it with `load_vocab`.

    `continuation` is the receiver-side encoder for a completion segment: the same tokenizer with
    every dummy prefix space (Metaspace `prepend_scheme`, a `Prepend("▁")` normalizer, ByteLevel
    `add_prefix_space`) and the post-processor removed, because a completion continues a prompt
    and must not gain a space or a BOS it never had.
    """

    name: str
    fingerprint: str
    tokenizer: Tokenizer  # the backend tokenizer as loaded
    continuation: Tokenizer  # no dummy prefix, no post-processor: encodes completion segments
    hf: Any  # the transformers tokenizer when loaded from a directory (chat template), else None
    starts: np.ndarray  # int64 [V]: offset of each id's bytes in `buffer`
    lengths: np.ndarray  # int64 [V]: byte length of each id (0 for special tokens)
    buffer: np.ndarray  # uint8 [sum(lengths)]: all tokens' bytes, concatenated
    special: np.ndarray  # bool [V]: special tokens (no bytes; mapped by role)
    byte_ids: np.ndarray  # int32 [256]: id of the single-byte token for each byte, -1 if none
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    unk_id: int | None
    end_ids: frozenset[int]  # ids with the EOS role: eos_id plus chat turn ends (<|im_end|>)
    lossy_normalizer: tuple[str, ...]  # normalizer steps that can change bytes ("NFC", ...)
    kind: str  # "byte-level", "sentencepiece", "wordpiece" or "plain"
    piece_tokens: dict[bytes, int] = field(default_factory=dict)  # bytes -> id, for tests/tools

    def __repr__(self) -> str:
        return (
            f"Vocab({self.name!r}, {self.kind}, size={self.size}, fingerprint={self.fingerprint})"
        )

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        """Short form for pretty printers (hypothesis, IPython): not the whole vocabulary."""
        p.text(repr(self))

    @property
    def size(self) -> int:
        return int(self.lengths.shape[0])

    def token_bytes(self, token_id: int) -> bytes:
        """The exact bytes one id stands for (b"" for special and out-of-range ids)."""
        if not 0 <= token_id < self.size:
            return b""
        s = int(self.starts[token_id])
        return self.buffer[s : s + int(self.lengths[token_id])].tobytes()

    def ids_to_bytes(self, ids: np.ndarray) -> bytes:
        """Concatenated bytes of `ids` (int [n]); out-of-range ids contribute nothing."""
        return gather_bytes(self, ids).tobytes()


def gather_bytes(vocab: Vocab, ids: np.ndarray) -> np.ndarray:
    """uint8 [sum(lengths[ids])]: the bytes of `ids` concatenated, with one vectorized gather."""
    ids = np.asarray(ids, dtype=np.int64)
    ids = ids[(ids >= 0) & (ids < vocab.size)]
    lens = vocab.lengths[ids]  # [n]
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.uint8)
    ends = np.cumsum(lens)  # [n]
    # Position k of the output reads buffer[starts[id] + (k - first output byte of that id)].
    shift = np.repeat(vocab.starts[ids] - (ends - lens), lens)  # [total]
    return vocab.buffer[np.arange(total, dtype=np.int64) + shift]


def _piece_bytes(piece: str, kind: str, byte_fallback: bool, wp_prefix: str) -> bytes:
    if kind == "byte-level":
        try:
            return bytes(_BYTE_DECODER[c] for c in piece)
        except KeyError:
            return piece.encode("utf-8")
    if kind == "sentencepiece":
        if byte_fallback and len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            try:
                return bytes([int(piece[3:5], 16)])
            except ValueError:
                pass
        return piece.replace("▁", " ").encode("utf-8")
    if kind == "wordpiece":
        if piece.startswith(wp_prefix):
            return piece[len(wp_prefix) :].encode("utf-8")
        return (" " + piece).encode("utf-8")
    return piece.encode("utf-8")


def _kind(spec: dict[str, Any]) -> tuple[str, bool, str]:
    model = spec.get("model") or {}
    parts = _walk(spec.get("decoder")) + _walk(spec.get("pre_tokenizer"))
    types = {p.get("type") for p in parts}
    byte_fallback = bool(model.get("byte_fallback")) or "ByteFallback" in types
    if "ByteLevel" in types:
        return "byte-level", False, ""
    if model.get("type") == "WordPiece" or "WordPiece" in types:
        prefix = model.get("continuing_subword_prefix") or "##"
        return "wordpiece", False, prefix
    metaspace = "Metaspace" in types or any(
        p.get("type") == "Replace" and p.get("pattern", {}).get("String") == "▁" for p in parts
    )
    if metaspace or byte_fallback:
        return "sentencepiece", byte_fallback, ""
    return "plain", False, ""


def _lossy_normalizers(spec: dict[str, Any]) -> tuple[str, ...]:
    """Normalizer steps that can rewrite a text's bytes (the space-to-▁ Replace cannot)."""
    lossy = {"NFC", "NFD", "NFKC", "NFKD", "Lowercase", "StripAccents", "Strip", "BertNormalizer"}
    found = []
    for node in _walk(spec.get("normalizer")):
        kind = str(node.get("type"))
        if kind in lossy or (kind == "Replace" and node.get("content") != "▁"):
            found.append(kind)
    return tuple(found)


def _continuation_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec without dummy prefixes, post-processor, truncation or padding."""
    spec = copy.deepcopy(spec)
    spec["post_processor"] = None
    spec["truncation"] = None
    spec["padding"] = None

    def strip_prefix(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        if node.get("type") == "Metaspace":
            node["prepend_scheme"] = "never"
            node["add_prefix_space"] = False
        if node.get("type") == "ByteLevel":
            node["add_prefix_space"] = False
        for key in ("normalizers", "pretokenizers"):
            if node.get(key):
                kept = [
                    strip_prefix(c)
                    for c in node[key]
                    if not (c.get("type") == "Prepend" and c.get("prepend") == "▁")
                ]
                node[key] = kept
        return node

    normalizer = spec.get("normalizer")
    if isinstance(normalizer, dict) and normalizer.get("type") == "Prepend":
        spec["normalizer"] = None
    else:
        spec["normalizer"] = strip_prefix(normalizer)
    spec["pre_tokenizer"] = strip_prefix(spec.get("pre_tokenizer"))
    return spec


def _continuation(spec: dict[str, Any]) -> Tokenizer:
    """The completion-segment encoder. Special tokens are never read from text: a completion
    that says "<s>" or "<|im_end|>" in words gets those characters, not the control token."""
    tok = Tokenizer.from_str(json.dumps(_continuation_spec(spec)))
    tok.encode_special_tokens = True
    return tok


def _fingerprint(spec: dict[str, Any]) -> str:
    keys = ("model", "normalizer", "pre_tokenizer", "decoder", "added_tokens")
    canon = json.dumps({k: spec.get(k) for k in keys}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:16]


# (fingerprint, has a transformers tokenizer, bos, eos, pad, unk, chat-template hash): the
# fingerprint alone is the byte-level identity, which tokenizer_config.json does not change, yet
# its roles and template do change what a `Vocab` says.
_CacheKey = tuple[str, bool, int | None, int | None, int | None, int | None, str]
_CACHE: dict[_CacheKey, Vocab] = {}
_PATH_CACHE: dict[tuple[str, float], _CacheKey] = {}
_LOCK = threading.Lock()


def _role(
    explicit: int | None, hf_id: Any, specials: dict[str, int], names: tuple[str, ...]
) -> int | None:
    if explicit is not None:
        return explicit
    if isinstance(hf_id, int):
        return hf_id
    for name in names:
        if name in specials:
            return specials[name]
    return None


def _template_hash(hf: Any) -> str:
    """A hash of the transformers tokenizer's chat template ("" when none), for the cache key."""
    template = getattr(hf, "chat_template", None)
    if template is None:
        return ""
    canon = json.dumps(template, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:16]


def build_vocab(
    tokenizer: Tokenizer,
    *,
    hf: Any = None,
    name: str = "tokenizer",
    bos_id: int | None = None,
    eos_id: int | None = None,
    pad_id: int | None = None,
) -> Vocab:
    """Build (or fetch from the cache) the byte table of a backend tokenizer.

    The cache key is the fingerprint plus the resolved role ids and the chat template, so a
    tokenizer whose tokenizer_config.json names another EOS never gets another's table.
    """
    spec = json.loads(tokenizer.to_str())
    fp = _fingerprint(spec)
    added = {a["id"]: a for a in spec.get("added_tokens") or []}
    specials = {str(a["content"]): int(a["id"]) for a in added.values() if a.get("special")}
    unk = (spec.get("model") or {}).get("unk_token")
    unk_id = tokenizer.token_to_id(unk) if isinstance(unk, str) else None
    if unk_id is None:
        unk_id = _role(None, None, specials, _UNK_NAMES)
    bos = _role(bos_id, getattr(hf, "bos_token_id", None), specials, _BOS_NAMES)
    eos = _role(eos_id, getattr(hf, "eos_token_id", None), specials, _EOS_NAMES)
    pad = _role(pad_id, getattr(hf, "pad_token_id", None), specials, _PAD_NAMES)
    key: _CacheKey = (fp, hf is not None, bos, eos, pad, unk_id, _template_hash(hf))
    with _LOCK:
        cached = _CACHE.get(key)
    if cached is not None:
        return cached
    kind, byte_fallback, wp_prefix = _kind(spec)
    vocab_map: dict[str, int] = tokenizer.get_vocab(with_added_tokens=True)
    size = max(vocab_map.values()) + 1 if vocab_map else 0
    pieces: list[bytes] = [b""] * size
    special = np.zeros(size, dtype=bool)
    for piece, idx in vocab_map.items():
        a = added.get(idx)
        if a is not None:
            if a.get("special"):
                special[idx] = True
            else:
                pieces[idx] = str(a["content"]).encode("utf-8")
            continue
        pieces[idx] = _piece_bytes(piece, kind, byte_fallback, wp_prefix)
    if unk_id is not None and 0 <= unk_id < size:
        special[unk_id] = True
        pieces[unk_id] = b""
    lengths = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=size)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    buffer = np.frombuffer(b"".join(pieces), dtype=np.uint8).copy()
    byte_ids = np.full(256, -1, dtype=np.int32)
    piece_tokens: dict[bytes, int] = {}
    for idx in range(size - 1, -1, -1):
        p = pieces[idx]
        if p and not special[idx]:
            piece_tokens[p] = idx
    for b in range(256):
        byte_ids[b] = piece_tokens.get(bytes([b]), -1)
    end_ids = {specials[n] for n in _END_MARKERS if n in specials}
    if eos is not None:
        end_ids.add(eos)
    vocab = Vocab(
        name=name,
        fingerprint=fp,
        tokenizer=tokenizer,
        continuation=_continuation(spec),
        hf=hf,
        starts=starts,
        lengths=lengths,
        buffer=buffer,
        special=special,
        byte_ids=byte_ids,
        bos_id=bos,
        eos_id=eos,
        pad_id=pad,
        unk_id=unk_id,
        end_ids=frozenset(end_ids),
        lossy_normalizer=_lossy_normalizers(spec),
        kind=kind,
        piece_tokens=piece_tokens,
    )
    log.debug("thl.vocab_built", name=name, fingerprint=fp, kind=kind, size=size)
    with _LOCK:
        return _CACHE.setdefault(key, vocab)


def load_vocab(source: str | os.PathLike[str] | Tokenizer | Any) -> Vocab:
    """A `Vocab` from a tokenizer directory, a built-in name (`builtin:gpt2-bpe`), a
    `tokenizers.Tokenizer` or a transformers tokenizer.

    Raises `TokenizerError` when a directory holds no loadable tokenizer. Loading the same
    directory again (unchanged) or a tokenizer with the same fingerprint, role ids and chat
    template returns the cached table.
    """
    if isinstance(source, str) and source.startswith("builtin:"):
        source = model_dir(source)  # the project's own tokenizer, materialized in the cache
    if isinstance(source, Tokenizer):
        return build_vocab(source, name="tokenizer")
    if hasattr(source, "backend_tokenizer"):
        return build_vocab(
            source.backend_tokenizer, hf=source, name=str(getattr(source, "name_or_path", "hf"))
        )
    path = Path(source)
    if not path.exists() and is_hub_id(path):  # a spec's hub id: its snapshot in the HF cache
        path = local_model_dir(path)
    try:
        key = (str(path.resolve()), path.stat().st_mtime)
    except OSError as exc:
        raise TokenizerError(f"tokenizer directory {path} cannot be read: {exc}") from exc
    with _LOCK:
        cache_key = _PATH_CACHE.get(key)
        if cache_key is not None and cache_key in _CACHE:
            return _CACHE[cache_key]
    try:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(str(path))
        backend = hf.backend_tokenizer
    except Exception as exc:  # transformers raises many types for an unloadable directory
        raise TokenizerError(
            f"no fast tokenizer could be loaded from {path}: {type(exc).__name__}: {exc}; "
            "point at a directory with tokenizer.json (or vocab/merges files)"
        ) from exc
    vocab = build_vocab(backend, hf=hf, name=path.name)
    built: _CacheKey = (
        vocab.fingerprint,
        True,
        vocab.bos_id,
        vocab.eos_id,
        vocab.pad_id,
        vocab.unk_id,
        _template_hash(hf),
    )
    with _LOCK:
        _PATH_CACHE[key] = built
    return vocab


def with_roles(
    vocab: Vocab, *, bos_id: int | None = None, eos_id: int | None = None, pad_id: int | None = None
) -> Vocab:
    """The same tables with other role ids, e.g. `<|im_end|>` as EOS for a chat-format receiver.

    A peer's EOS-role token then becomes this `eos_id` on the receiver's side; as a peer, this
    vocab treats `eos_id` as an end marker too.
    """
    eos = vocab.eos_id if eos_id is None else eos_id
    return replace(
        vocab,
        bos_id=vocab.bos_id if bos_id is None else bos_id,
        eos_id=eos,
        pad_id=vocab.pad_id if pad_id is None else pad_id,
        end_ids=vocab.end_ids | ({eos} if eos is not None else set()),
    )


def pair_warnings(src: Vocab, dst: Vocab) -> list[str]:
    """Why this tokenizer pair can be lossy on some text, known before any text is seen.

    Each transfer still measures its own lossy bytes; this says which texts to expect them on.
    """
    out = []
    if dst.lossy_normalizer:
        steps = ", ".join(dst.lossy_normalizer)
        out.append(f"receiver normalizer rewrites some text ({steps}): such bytes are lossy")
    missing = int((dst.byte_ids < 0).sum())
    if missing:
        out.append(
            f"receiver has no token for {missing} of 256 byte values (no byte fallback): "
            "unseen characters become [UNK] or are dropped"
        )
    if dst.kind == "wordpiece":
        out.append("receiver is WordPiece: whitespace other than single spaces is not kept")
    if src.unk_id is not None and (src.byte_ids < 0).any():
        out.append("peer can emit [UNK], whose bytes nobody knows")
    return out
