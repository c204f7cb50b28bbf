"""Where a spec's `model` lives on this machine: a local directory, or a hub id in the HF cache.

A spec may name a model by hub id (`Qwen/Qwen2.5-1.5B-Instruct`). GPU hosts often have no
network but a warm Hugging Face cache (`$HF_HUB_CACHE`, default `$HF_HOME/hub`, laid out as
`models--Org--Name/snapshots/<rev>/` with `refs/main` naming the revision). `local_model_dir`
turns either form into one local directory, looking in the cache first, so config, tokenizer,
weights and the THL byte table all come from the same snapshot and nothing touches the network
when the files are there. Only when they are not, and `HF_HUB_OFFLINE` is not set, does it
download (config, tokenizer and safetensors files only).

Imports without torch or transformers: the THL and the spec tools use it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mrl_actors.errors import ConfigError
from mrl_actors.models.builtin import builtin_dir

# `name` or `org/name`: letters, digits, '-', '_', '.'; what the hub accepts as a model repo id
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
_DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.py"]


def is_hub_id(source: str | os.PathLike[str]) -> bool:
    """Whether `source` reads as a hub id rather than a path (and no such path exists)."""
    text = os.fspath(source)
    if Path(text).exists() or text.startswith((".", "/", "~")) or text.count("/") > 1:
        return False
    return bool(_HUB_ID.fullmatch(text)) and not text.endswith((".", "-"))


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def local_model_dir(source: str | os.PathLike[str], *, field: str = "model") -> Path:
    """The local directory of `source`: the path itself, or the cached snapshot of a hub id.

    `field` names where `source` came from (`policies[0].model`) for the error. Raises
    `ConfigError` when a hub id is neither cached nor downloadable, and when a path is missing.
    """
    text = os.fspath(source)
    if text.startswith("builtin:"):  # a tokenizer and config the project builds itself
        return builtin_dir(text)
    path = Path(text).expanduser()
    if path.exists():
        return path
    if not is_hub_id(text):
        raise ConfigError(
            f"{field} = {text!r}: no such directory, so no config.json to read "
            "(give a model directory or a hub id such as Qwen/Qwen2.5-0.5B-Instruct)"
        )
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache = os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE
    try:
        return _snapshot(snapshot_download(text, cache_dir=cache, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    if _offline():
        raise ConfigError(
            f"{field} = {text!r} is a hub id that is not in the local Hugging Face cache "
            f"({cache}) and HF_HUB_OFFLINE is set: fetch it first on a host with network "
            f"(`hf download {text}`, same HF_HUB_CACHE) or give a local directory"
        )
    try:
        return _snapshot(
            snapshot_download(text, cache_dir=cache, allow_patterns=_DOWNLOAD_PATTERNS)
        )
    except Exception as exc:  # network, auth, missing repo: huggingface_hub raises many types
        raise ConfigError(
            f"{field} = {text!r} is a hub id that is not in the local Hugging Face cache "
            f"({cache}) and could not be downloaded: {type(exc).__name__}: {exc}"
        ) from exc


def _snapshot(result: object) -> Path:
    if not isinstance(result, str):  # only a dry run returns file infos
        raise TypeError(f"snapshot_download returned {type(result).__name__}, not a path")
    return Path(result)
