"""Models: tiny random-weight versions of real architectures, atomic load/save, weight hashes.

Tiny models keep the real config (architecture, vocabulary, tokenizer) of a directory such as
`../shared/models/gpt2` and shrink only width and depth, so CPU tests exercise the same code paths
as real checkpoints (DESIGN.md decision 2). The vocabulary then dominates the parameter count
(GPT-2: 50,257 x 64), which is fine. The supervised warm start that makes such a model a policy
lives in `warmstart`.

A saved model directory is complete or absent: `save_model` writes a hidden sibling, fsyncs
every file, adds the `SAVED_MARKER` listing the files and their sizes, renames the sibling into
place and fsyncs the parent, so a process killed at any instant leaves either the old state or
the whole checkpoint (`is_complete` tells them apart; `discard` removes the leftovers).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import torch

from mrl_actors.errors import ConfigError
from mrl_actors.logs import get_logger
from mrl_actors.models.hub import local_model_dir

log = get_logger(__name__)

SAVED_MARKER = "saved.json"  # written last: {"files": {name: bytes}} of the complete checkpoint
_TMP_INFIX = ".tmp-"
# Tests only: kill this process (SIGKILL) while saving to a directory whose path ends with these
# parts (`gpt2/step-0`), after the weights are written and before the checkpoint is complete.
KILL_IN_SAVE_ENV = "MRL_TEST_KILL_IN_SAVE"

# Config attribute names differ by family: (hidden, layers, heads, intermediate)
_SIZE_KEYS = {
    "gpt2": ("n_embd", "n_layer", "n_head", "n_inner"),
}
_DEFAULT_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
_DROPOUT_KEYS = (
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
    "attention_dropout",
    "hidden_dropout",
    "summary_first_dropout",
)
# Per-layer lists the config's own __init__ derives from the layer count: dropped so it re-derives
_DERIVED_PER_LAYER = ("layer_types",)


def load_tokenizer(path: str | Path) -> Any:
    """The tokenizer in `path` (or a cached hub id), with a pad token (eos when it has none)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(local_model_dir(path)))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def tiny_config(
    family_dir: str | Path, *, hidden_size: int = 64, layers: int = 2, heads: int = 4
) -> Any:
    """`family_dir`'s config shrunk to the given sizes, every dependent field kept consistent.

    Per-layer fields follow the layer count (`layer_types` is re-derived, other per-layer lists
    are cut), grouped-query attention keeps its ratio where it divides `heads` (Mistral: 32/8 ->
    4/1), `head_dim` follows hidden/heads, windows and dropout shrink with the model. The
    config class validates the result, so a config that could not be saved fails here.
    """
    from transformers import AutoConfig

    source = local_model_dir(family_dir)
    if not (source / "config.json").exists():
        raise ConfigError(f"{family_dir}: no config.json (expected a model directory)")
    if hidden_size % heads:
        raise ConfigError(f"tiny hidden_size {hidden_size} is not a multiple of heads {heads}")
    base = AutoConfig.from_pretrained(str(source))
    h, n_layer, n_head, inter = _SIZE_KEYS.get(base.model_type, _DEFAULT_KEYS)
    d = base.to_dict()
    old_layers, old_heads = int(d[n_layer]), int(d[n_head])
    d.update({h: hidden_size, n_layer: layers, n_head: heads, inter: 4 * hidden_size})
    for k in _DERIVED_PER_LAYER:
        d.pop(k, None)
    for k, v in list(d.items()):
        if isinstance(v, list) and k != "architectures" and len(v) == old_layers:
            d[k] = v[:layers]
    if d.get("num_key_value_heads"):
        ratio = max(1, old_heads // int(d["num_key_value_heads"]))
        kv = heads // ratio if heads % ratio == 0 and heads >= ratio else heads
        d["num_key_value_heads"] = kv
    if "head_dim" in d:
        d["head_dim"] = hidden_size // heads
    if d.get("max_window_layers") is not None:
        d["max_window_layers"] = min(int(d["max_window_layers"]), layers)
    for k in _DROPOUT_KEYS:
        if k in d:
            d[k] = 0.0
    try:
        return type(base).from_dict(d)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{family_dir}: cannot shrink the {base.model_type} config to hidden={hidden_size}, "
            f"layers={layers}, heads={heads}: {exc}"
        ) from exc


def build_tiny(
    family_dir: str | Path,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    seed: int = 0,
) -> tuple[Any, Any]:
    """A random-weight float32 model of `family_dir`'s architecture, shrunk, and its real tokenizer.

    Weights are drawn inside `torch.random.fork_rng` from `seed`: same seed, same weights, and the
    caller's global RNG is left as it was.
    """
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(family_dir, hidden_size=hidden_size, layers=layers, heads=heads)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.eval()
    return model, load_tokenizer(family_dir)


def load_model(
    path_or_hub_id: str | Path, *, dtype: Any = torch.float32, field: str = "model"
) -> tuple[Any, Any]:
    """A real checkpoint and its tokenizer from a local directory or a hub id (cache first).

    `field` names the spec field the model came from, for the error when it cannot be found.
    """
    from transformers import AutoModelForCausalLM

    d = local_model_dir(path_or_hub_id, field=field)
    model = AutoModelForCausalLM.from_pretrained(str(d), dtype=dtype)
    model.eval()
    return model, load_tokenizer(d)


def is_complete(directory: str | Path) -> bool:
    """Whether `directory` holds a whole checkpoint: its marker, and every file at its size."""
    d = Path(directory)
    try:
        files = json.loads((d / SAVED_MARKER).read_text())["files"]
        return all((d / name).stat().st_size == size for name, size in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def discard(directory: str | Path) -> None:
    """Remove `directory` (an incomplete or superseded checkpoint) without a half-deleted state:
    it is renamed to a hidden sibling first, so its name never points at a partial copy."""
    d = Path(directory)
    if not d.exists():
        return
    trash = d.with_name(f".{d.name}{_TMP_INFIX}discard-{os.getpid()}-{threading.get_ident()}")
    os.rename(d, trash)
    _fsync_dir(d.parent)
    shutil.rmtree(trash, ignore_errors=True)


def discard_partial_saves(parent: str | Path) -> list[Path]:
    """Remove the hidden temporary siblings that killed saves left in `parent`.

    Only for a directory one process writes (a policy's checkpoints): a concurrent save's temp
    directory would be removed too.
    """
    p = Path(parent)
    gone = [c for c in p.glob(f".*{_TMP_INFIX}*") if c.is_dir()] if p.is_dir() else []
    for c in gone:
        shutil.rmtree(c, ignore_errors=True)
    return gone


def save_model(
    model: Any,
    directory: str | Path,
    tokenizer: Any | None = None,
    *,
    extra_files: dict[str, str] | None = None,
    replace: bool = True,
) -> Path:
    """Save as safetensors + config (+ tokenizer, + `extra_files`), atomically.

    `from_pretrained(directory)` loads it back. An existing `directory` is replaced
    (`replace=True`) or kept (`replace=False`: a concurrent builder of the same content won).
    """
    d = Path(directory)
    d.parent.mkdir(parents=True, exist_ok=True)
    tmp = d.with_name(f".{d.name}{_TMP_INFIX}{os.getpid()}-{threading.get_ident()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        _kill_if_asked(d)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        files = {
            str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()
        }
        (tmp / SAVED_MARKER).write_text(json.dumps({"files": files}, indent=1), encoding="utf-8")
        _fsync_tree(tmp)
        if d.exists() and (replace or not is_complete(d)):
            discard(d)
        try:
            os.rename(tmp, d)
        except OSError:  # `d` appeared meanwhile: a concurrent save of the same content
            if replace or not is_complete(d):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return d
        _fsync_dir(d.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return d


def _kill_if_asked(d: Path) -> None:
    want = os.environ.get(KILL_IN_SAVE_ENV)
    if want:
        parts = Path(want).parts
        if d.parts[-len(parts) :] == parts:
            log.warning("test_kill_in_save", path=str(d))
            os.kill(os.getpid(), signal.SIGKILL)


def _fsync_tree(root: Path) -> None:
    for p in sorted(root.rglob("*"), key=lambda q: len(q.parts), reverse=True):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        elif p.is_dir():
            _fsync_dir(p)
    _fsync_dir(root)


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def weights_sha256(model: Any) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        a = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{a.dtype}|{tuple(a.shape)}\n".encode())
        h.update(a.view(torch.uint8).numpy().tobytes() if a.numel() else b"")
    return h.hexdigest()
