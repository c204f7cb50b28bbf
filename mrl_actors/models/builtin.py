"""Built-in model families: small tokenizers and architecture configs the project makes itself.

A spec's `model = "builtin:gpt2-bpe"` or `"builtin:llama-sp"` names a model directory that needs
nothing from outside the repository, so the demo runs from a bare clone with no network:

- `gpt2-bpe`: a byte-level BPE like GPT-2's (ByteLevel pre-tokenizer, `Ġ` for a space, one
  `<|endoftext|>` that is BOS and EOS) with a GPT-2 architecture config;
- `llama-sp`: a SentencePiece-style BPE with byte fallback like Llama-2's (Metaspace pre-tokenizer,
  `▁` for a space, `<0xNN>` byte tokens, `<unk>` `<s>` `</s>`, BOS added) with a Llama config.

Both tokenizers are trained with the `tokenizers` library on the text of the project's own
synthetic tasks (arithmetic and countdown, enumerated from fixed settings), so the two cut the same
text at different places and every shared completion crosses the THL with n:m spans, as a real
GPT-2/Llama pair does. Their vocabularies are small (hundreds of tokens), which keeps tiny models
fast on a CPU.

`builtin_dir(name)` writes `config.json` plus tokenizer files into the model cache (the directory of
warm-started models, `MRL_CACHE_DIR` or ~/.cache/mrl-actors/models) once, atomically, and returns
that directory; every loader (`load_vocab`, warm start, the run's `PolicyRegistered.family`) then
reads an ordinary model directory. The spec keeps the builtin name: a run's log says what it was
made of, not where one machine cached it.

Imports without torch or transformers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import string
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrl_actors.errors import ConfigError
from mrl_actors.tasks import CountdownConfig, CountdownTask

PREFIX = "builtin:"
# Bump when the corpus, the trainer settings or the files written change: a new cache directory.
RECIPE_VERSION = 1


@dataclass(frozen=True)
class Builtin:
    """How one built-in family is made."""

    family: str  # the architecture's `model_type`
    vocab_size: int  # the trainer's target; a small corpus can stop it earlier
    description: str


BUILTINS: dict[str, Builtin] = {
    "gpt2-bpe": Builtin("gpt2", 600, "byte-level BPE like GPT-2's, GPT-2 architecture"),
    "llama-sp": Builtin("llama", 500, "SentencePiece-style BPE with byte fallback like Llama-2's"),
}

_LOCK = threading.Lock()


def is_builtin(model: str) -> bool:
    return model.startswith(PREFIX)


def builtin_name(model: str) -> str:
    """The name after `builtin:`; raises ConfigError for an unknown one."""
    name = model.removeprefix(PREFIX)
    if name not in BUILTINS:
        known = ", ".join(PREFIX + k for k in BUILTINS)
        raise ConfigError(f"unknown built-in model {model!r}: use one of {known}")
    return name


def cache_root() -> Path:
    """The model cache: `MRL_CACHE_DIR`, else ~/.cache/mrl-actors/models (as warm starts use)."""
    default = Path.home() / ".cache" / "mrl-actors" / "models"
    return Path(os.environ.get("MRL_CACHE_DIR", default))


def model_dir(model: str) -> str:
    """A directory for `model`: a builtin is materialized in the cache; anything else is kept."""
    return str(builtin_dir(model)) if is_builtin(model) else model


def family_of(model: str) -> str:
    """The architecture family (`model_type`) of a builtin name or a model directory."""
    if is_builtin(model):
        return BUILTINS[builtin_name(model)].family
    try:
        return str(json.loads((Path(model) / "config.json").read_text())["model_type"])
    except (OSError, KeyError, ValueError):
        return "unknown"


def builtin_dir(model: str, root: str | Path | None = None) -> Path:
    """`root/builtin/<recipe hash>/<name>/` with config.json and tokenizer files, built once.

    The directory's own name is the builtin's name, so warm-start caches read `gpt2-bpe-h64-...`.
    """
    import tokenizers

    name = builtin_name(model)
    recipe = {
        "name": name,
        "vocab_size": BUILTINS[name].vocab_size,
        "tokenizers": tokenizers.__version__,
        "recipe_version": RECIPE_VERSION,
    }
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    d = Path(root if root is not None else cache_root()) / "builtin" / key / name
    if (d / "config.json").exists():
        return d
    with _LOCK:
        if (d / "config.json").exists():
            return d
        d.parent.mkdir(parents=True, exist_ok=True)
        tmp = d.with_name(f".{name}.tmp{os.getpid()}-{threading.get_ident()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        _write(name, tmp)
        try:
            tmp.rename(d)  # atomic: a concurrent builder cannot leave half a directory
        except OSError:  # another process finished first; its copy is the same recipe
            shutil.rmtree(tmp, ignore_errors=True)
    return d


def corpus() -> list[str]:
    """The training text: every prompt+target of the synthetic tasks at fixed, generous settings.

    Fixed (not the run's task settings) so one builtin name always means one tokenizer.
    """
    lines = [
        f"Q: {a}{op}{b}=\nA: {a + b if op == '+' else a - b if op == '-' else a * b}\n"
        for a in range(100)
        for b in range(100)
        for op in "+-*"
    ]
    countdown = CountdownTask(CountdownConfig(size=2000))
    lines += [
        countdown.prompt_text(item) + countdown.target_text(item) + "\n"
        for item in countdown.items(0)
    ]
    return lines


def _write(name: str, d: Path) -> None:
    tok, specials = _gpt2_bpe() if name == "gpt2-bpe" else _llama_sp()
    tok.save(str(d / "tokenizer.json"))
    tok_sha = hashlib.sha256((d / "tokenizer.json").read_bytes()).hexdigest()
    size = tok.get_vocab_size(with_added_tokens=True)
    config = _gpt2_config(size, specials) if name == "gpt2-bpe" else _llama_config(size, specials)
    # Carried into warm-start recipes (they hash config.json): a new tokenizer, a new cache entry.
    config["mrl_builtin"] = {"name": name, "tokenizer_sha256": tok_sha}
    (d / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tok_config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": config.get("n_positions", config.get("max_position_embeddings")),
        "clean_up_tokenization_spaces": False,
        **{role: tok.id_to_token(i) for role, i in specials.items()},
    }
    (d / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2, sort_keys=True))


def _gpt2_bpe() -> tuple[Any, dict[str, int]]:
    """Byte-level BPE: the 256 byte symbols, then merges, then `<|endoftext|>` (as GPT-2)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=BUILTINS["gpt2-bpe"].vocab_size - 1,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    tok.add_special_tokens(["<|endoftext|>"])
    eot = tok.get_vocab_size(with_added_tokens=True) - 1  # the last id, as in GPT-2
    assert tok.id_to_token(eot) == "<|endoftext|>"
    return tok, {"bos_token": eot, "eos_token": eot, "unk_token": eot}


def _llama_sp() -> tuple[Any, dict[str, int]]:
    """SentencePiece-style BPE: `<unk>` `<s>` `</s>`, the 256 `<0xNN>` bytes, then pieces.

    The trainer learns merges over `▁`-prefixed words with every digit apart (SentencePiece's
    `split_digits`, as Llama-2 has it) and no newline (it is the byte `<0x0A>`); the model is then
    rebuilt with Llama-2's id layout and `byte_fallback`, so a character outside the pieces
    becomes its UTF-8 bytes.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    train = Tokenizer(models.BPE())
    # Newlines are cut out of the training text: as in Llama-2, "\n" is the byte token <0x0A>.
    train.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split("\n", behavior="removed"),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"),
            pre_tokenizers.Digits(individual_digits=True),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=BUILTINS["llama-sp"].vocab_size - 259,
        min_frequency=2,
        initial_alphabet=list(string.ascii_letters + string.digits + string.punctuation + "▁"),
        show_progress=False,
    )
    train.train_from_iterator(corpus(), trainer=trainer)
    learned = json.loads(train.to_str())["model"]
    specials = ["<unk>", "<s>", "</s>"]
    vocab: dict[str, int] = {}
    for piece in [*specials, *(f"<0x{b:02X}>" for b in range(256))]:
        vocab[piece] = len(vocab)
    for piece, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]
    tok = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=merges,
            unk_token="<unk>",
            fuse_unk=True,
            byte_fallback=True,
        )
    )
    # Every digit its own token, as SentencePiece's split_digits does for Llama-2.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False),
            pre_tokenizers.Digits(individual_digits=True),
        ]
    )
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    tok.add_special_tokens(specials)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return tok, {"unk_token": 0, "bos_token": 1, "eos_token": 2}


def _gpt2_config(vocab_size: int, specials: dict[str, int]) -> dict[str, Any]:
    """GPT-2's architecture at tiny width (warm starts set width and depth from the spec)."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "activation_function": "gelu_new",
        "bos_token_id": specials["bos_token"],
        "eos_token_id": specials["eos_token"],
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "n_ctx": 512,
        "n_positions": 512,
        "n_embd": 64,
        "n_head": 4,
        "n_layer": 2,
        "n_inner": None,
        "attn_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "resid_pdrop": 0.0,
        "summary_first_dropout": 0.0,
        "tie_word_embeddings": True,
        "vocab_size": vocab_size,
    }


def _llama_config(vocab_size: int, specials: dict[str, int]) -> dict[str, Any]:
    """Llama-2's architecture at tiny width (warm starts set width and depth from the spec)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "bos_token_id": specials["bos_token"],
        "eos_token_id": specials["eos_token"],
        "hidden_act": "silu",
        "hidden_size": 64,
        "intermediate_size": 256,
        "initializer_range": 0.02,
        "max_position_embeddings": 512,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 4,
        "rms_norm_eps": 1e-05,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "vocab_size": vocab_size,
    }
