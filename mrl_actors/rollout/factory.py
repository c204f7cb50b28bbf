"""`make_engine`: the engine a config names.

Kept out of `base.py` because the engines import `base` (their protocol and configs): the factory
is the one module that knows every engine, and nothing imports it back.
"""

from __future__ import annotations

from typing import Any

from mrl_actors.errors import ConfigError
from mrl_actors.rollout.base import EngineConfig, RolloutEngine


def make_engine(cfg: EngineConfig, model: Any, tokenizer: Any) -> RolloutEngine:
    """The engine `cfg.kind` names; raises EngineUnavailableError when vLLM is not installed."""
    if cfg.kind == "hf":
        from mrl_actors.rollout.hf import HFEngine

        return HFEngine(model, tokenizer, cfg.sampling, batch_size=cfg.batch_size)
    if cfg.kind == "vllm":
        from mrl_actors.rollout.vllm_engine import VLLMEngine

        return VLLMEngine.from_model(model, tokenizer, cfg)
    raise ConfigError(f"unknown engine kind {cfg.kind!r}: use 'hf' or 'vllm'")
