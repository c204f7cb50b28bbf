"""`make_engine`: the engine a config names.

Kept out of `base.py` because the engines import `base` (their protocol and configs): the factory
is the one module that knows every engine, and nothing imports it back.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from mrl_actors.errors import ConfigError
from mrl_actors.rollout.base import EngineConfig, RolloutEngine
from mrl_actors.rollout.heads import check_head_dim, head_dim


def sync_root(cfg: EngineConfig, engine_dir: Path | None) -> Path:
    """Where a vLLM engine keeps its weight versions: the spec's `sync_dir`, else the runtime's
    directory for it (`<run dir>/engines/<policy>`), else one under the system's temp dir."""
    if cfg.sync_dir:
        return Path(cfg.sync_dir).expanduser()
    return engine_dir if engine_dir is not None else Path(tempfile.gettempdir()) / "mrl-vllm"


def make_engine(
    cfg: EngineConfig, model: Any, tokenizer: Any, *, engine_dir: Path | None = None
) -> RolloutEngine:
    """The engine `cfg.kind` names, on `model`'s device.

    A vLLM engine starts on first use, in its own processes (`rollout.vllm_engine`); its head
    size is checked here for the device it gets (ConfigError), and EngineUnavailableError says
    how to install vLLM where it is missing.
    """
    if cfg.kind == "hf":
        from mrl_actors.rollout.hf import HFEngine

        return HFEngine(model, tokenizer, cfg.sampling, batch_size=cfg.batch_size)
    if cfg.kind == "vllm":
        from mrl_actors.rollout.vllm_engine import VLLMEngine, require_vllm

        require_vllm()
        device = str(next(model.parameters()).device)
        check_head_dim(
            head_dim(model.config.to_dict()), on_cpu=device == "cpu", where="engine kind 'vllm'"
        )
        return VLLMEngine(model, tokenizer, cfg, sync_root(cfg, engine_dir), device=device)
    raise ConfigError(f"unknown engine kind {cfg.kind!r}: use 'hf' or 'vllm'")


def evaluation_engine(cfg: EngineConfig, model: Any, tokenizer: Any) -> RolloutEngine:
    """An HF engine over `model` itself, with `cfg`'s sampling: what a learner that only
    evaluates uses (no second copy of the weights, no engine processes)."""
    from mrl_actors.rollout.hf import HFEngine

    return HFEngine(model, tokenizer, cfg.sampling, batch_size=cfg.batch_size)
