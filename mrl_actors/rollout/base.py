"""The rollout engine protocol: n sampled completions per prompt, with behaviour log-probs.

Behaviour log-probs are log softmax(logits / temperature) of each sampled token, before top-p
truncation: the same quantity the learner computes at the same temperature, so for an unchanged
policy the importance ratio is exactly 1 on CPU (and ~1 on GPU, where vLLM's numerics differ).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import msgspec
import numpy as np

from mrl_actors.errors import ConfigError

FinishReason = Literal["stop", "length"]


class SamplingConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How completions are sampled."""

    # Softmax temperature; the learner's GRPOConfig.temperature must be the same.
    temperature: float = 1.0
    # Nucleus sampling mass; 1.0 = no truncation.
    top_p: float = 1.0
    # Completion length cap in tokens (finish_reason "length" when hit).
    max_new_tokens: int = 64
    # Generation stops after the first token whose text completes one of these (kept in the output).
    stop: tuple[str, ...] = ()
    # Stop at the tokenizer's end-of-sequence token (kept in the output, as TRL does).
    stop_at_eos: bool = True

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ConfigError(f"SamplingConfig.temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"SamplingConfig.top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ConfigError("SamplingConfig.max_new_tokens must be >= 1")


class EngineConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Which engine generates, and how."""

    # "hf" (transformers, CPU or GPU) or "vllm" (GPU hosts with the `vllm` extra).
    kind: Literal["hf", "vllm"] = "hf"
    # Sampling parameters.
    sampling: SamplingConfig = msgspec.field(default_factory=SamplingConfig)
    # vLLM only: fraction of GPU memory vLLM may take (leave room for the learner on the same GPU).
    gpu_memory_utilization: float = 0.3
    # vLLM only: weight dtype inside vLLM ("auto" = the checkpoint's; "bfloat16" for fp32 tiny
    # models on attention backends without fp32 kernels).
    dtype: str = "auto"
    # vLLM only: directory for safetensors weight handoff when in-place loading is unavailable.
    sync_dir: str = ""
    # HF only: sequences per forward pass while sampling (0 = all at once).
    batch_size: int = 0


@dataclass(frozen=True)
class Generation:
    """One sampled completion."""

    token_ids: np.ndarray  # int32 [C]
    logprobs: np.ndarray  # float32 [C]: behaviour log-probs of token_ids at the temperature
    text: str  # decoded completion
    finish_reason: FinishReason  # "stop" (eos or stop string) or "length"


@runtime_checkable
class RolloutEngine(Protocol):
    """Generates completions from the current weights; `version` is the policy version it holds."""

    version: int

    def generate(
        self, prompts: Sequence[np.ndarray], *, n: int, seed: int
    ) -> list[list[Generation]]:
        """`n` completions for each prompt (int32 token ids): result[i][j] is prompt i's j-th."""
        ...

    def sync_weights(self, model: Any, version: int) -> None:
        """Take the learner's weights (as of policy `version`)."""
        ...


def make_engine(cfg: EngineConfig, model: Any, tokenizer: Any) -> RolloutEngine:
    """The engine `cfg.kind` names; raises EngineUnavailableError when vLLM is not installed."""
    if cfg.kind == "hf":
        from mrl_actors.rollout.hf import HFEngine

        return HFEngine(model, tokenizer, cfg.sampling, batch_size=cfg.batch_size)
    if cfg.kind == "vllm":
        from mrl_actors.rollout.vllm_engine import VLLMEngine

        return VLLMEngine.from_model(model, tokenizer, cfg)
    raise ConfigError(f"unknown engine kind {cfg.kind!r}: use 'hf' or 'vllm'")
