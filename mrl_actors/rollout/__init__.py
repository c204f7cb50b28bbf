"""Rollout engines behind one protocol: `hf` (transformers, anywhere) and `vllm` (GPU hosts)."""

from mrl_actors.rollout.base import (
    EngineConfig,
    Generation,
    RolloutEngine,
    SamplingConfig,
)
from mrl_actors.rollout.factory import make_engine
from mrl_actors.rollout.prompts import encode_prompt

__all__ = [
    "EngineConfig",
    "Generation",
    "RolloutEngine",
    "SamplingConfig",
    "encode_prompt",
    "make_engine",
]
