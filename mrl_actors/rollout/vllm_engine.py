"""vLLM rollouts for GPU hosts (the `vllm` extra), with the learner's weights pushed in after steps.

The engine keeps the same contract as the HF one: n completions per prompt with the behaviour
log-probs of the sampled tokens. vLLM is asked for `logprobs=0` (the sampled token only) in
`processed_logprobs` mode, i.e. after temperature scaling; with top_p < 1 vLLM reports the log-prob
under the nucleus-renormalised distribution, which the learner's truncated IS ratio then corrects.

Weights: `sync_weights` loads the learner's tensors into the running engine in place
(`load_weights` on the worker's model, as TRL's colocated mode does); where the installed vLLM does
not expose that, it writes a safetensors directory and restarts the engine from it. Either way the
policy version is recorded, so every `Generation` batch is attributable to a learner step.

Everything that does not need vLLM itself (request building, output conversion, the weight
iterator, version bookkeeping) is plain Python, tested on CPU with vLLM absent.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mrl_actors.errors import EngineUnavailableError
from mrl_actors.logs import get_logger
from mrl_actors.rollout.base import EngineConfig, FinishReason, Generation, SamplingConfig

log = get_logger(__name__)


def vllm_available() -> bool:
    """Whether the `vllm` package can be imported here."""
    return importlib.util.find_spec("vllm") is not None


def require_vllm() -> Any:
    """The `vllm` module, or EngineUnavailableError saying how to get it."""
    if not vllm_available():
        raise EngineUnavailableError(
            "rollout engine 'vllm' needs the vllm package, which is not installed here: on a GPU "
            "host run `pip install -e '.[vllm]'`, or set engine kind = 'hf' (runs anywhere)"
        )
    import vllm

    return vllm


def sampling_kwargs(
    s: SamplingConfig, n: int, seed: int, *, greedy: bool = False
) -> dict[str, Any]:
    """Keyword arguments for `vllm.SamplingParams` equivalent to `s` (n samples, seeded).

    `greedy`: temperature 0, vLLM's greedy decoding; stops, end ids and the cap are unchanged.
    """
    kw: dict[str, Any] = {
        "n": n,
        "temperature": 0.0 if greedy else s.temperature,
        "top_p": 1.0 if greedy else s.top_p,
        "max_tokens": s.max_new_tokens,
        "stop": list(s.stop) or None,
        "include_stop_str_in_output": True,
        "ignore_eos": not s.stop_at_eos,
        "logprobs": 0,
        "seed": seed,
    }
    if s.top_k and not greedy:
        kw["top_k"] = s.top_k
    return kw


def _sampled_logprob(entry: Any, token_id: int) -> float:
    """The log-prob of `token_id` from one vLLM per-position logprobs dict (id -> Logprob)."""
    lp = entry[token_id]
    return float(getattr(lp, "logprob", lp))


def to_generation(output: Any, tokenizer: Any, eos_id: int | None) -> Generation:
    """One vLLM `CompletionOutput` as a `Generation`.

    Reads `token_ids`, `logprobs` (a list, one dict per position), `text` and `finish_reason`
    ("stop", "length", or "abort", which counts as "length": the sample was cut, not finished).
    """
    ids = np.asarray(list(output.token_ids), dtype=np.int32)
    if output.logprobs is None or len(output.logprobs) != len(ids):
        raise EngineUnavailableError(
            "vLLM returned no per-token logprobs; the engine must request logprobs=0"
        )
    lps = np.asarray(
        [_sampled_logprob(e, int(t)) for e, t in zip(output.logprobs, ids, strict=True)],
        dtype=np.float32,
    )
    text = output.text
    if text is None:
        text = tokenizer.decode(ids.tolist(), skip_special_tokens=True)
    reason: FinishReason = "stop" if output.finish_reason == "stop" else "length"
    return Generation(token_ids=ids, logprobs=lps, text=text, finish_reason=reason)


def weights_for_vllm(model: Any) -> Iterator[tuple[str, Any]]:
    """(name, tensor) pairs of the learner's weights, detached, as vLLM's `load_weights` takes them.

    Tied weights appear once under each name, which vLLM's loaders accept (they skip `lm_head` when
    the config ties it).
    """
    for name, t in model.state_dict().items():
        yield name, t.detach()


class VLLMEngine:
    """Generation through `vllm.LLM`, version-tracked, weights synced from the learner."""

    def __init__(self, llm: Any, tokenizer: Any, cfg: EngineConfig, model_dir: Path) -> None:
        self._llm = llm
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.model_dir = model_dir
        self.version = 0
        self.eos_id = tokenizer.eos_token_id
        self.in_place_syncs = 0
        self.reload_syncs = 0

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, cfg: EngineConfig) -> VLLMEngine:
        """Start vLLM on `model`'s current weights (saved as safetensors under `cfg.sync_dir`)."""
        require_vllm()
        from mrl_actors.models.load import save_model

        d = Path(cfg.sync_dir or "runs/vllm-sync") / "v0"
        save_model(model, d, tokenizer)
        return cls(cls._start(d, cfg), tokenizer, cfg, d)

    @staticmethod
    def _start(model_dir: Path, cfg: EngineConfig) -> Any:
        vllm = require_vllm()
        # Keep vLLM's engine core in this process, so the worker's model is reachable for in-place
        # weight loads (as TRL's colocated mode does); a user's explicit setting wins.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        kwargs: dict[str, Any] = {
            "model": str(model_dir),
            "gpu_memory_utilization": cfg.gpu_memory_utilization,
            "dtype": cfg.dtype,
            "enable_prefix_caching": True,
        }
        try:
            return vllm.LLM(**kwargs, logprobs_mode="processed_logprobs")
        except TypeError:  # vLLM < 0.10.2 has no logprobs_mode: its log-probs are pre-temperature
            log.warning("vllm.no_logprobs_mode", hint="upgrade vllm for temperature-aware logprobs")
            return vllm.LLM(**kwargs)

    def generate(
        self, prompts: Sequence[np.ndarray], *, n: int, seed: int, greedy: bool = False
    ) -> list[list[Generation]]:
        vllm = require_vllm()
        params = vllm.SamplingParams(**sampling_kwargs(self.cfg.sampling, n, seed, greedy=greedy))
        reqs = [{"prompt_token_ids": [int(t) for t in p]} for p in prompts]
        outs = self._llm.generate(reqs, params, use_tqdm=False)
        return [[to_generation(o, self.tokenizer, self.eos_id) for o in r.outputs] for r in outs]

    def _worker_model(self) -> Any | None:
        """The in-process model vLLM runs, where this vLLM version exposes it; else None."""
        engine = getattr(self._llm, "llm_engine", None)
        executor = getattr(engine, "model_executor", None)
        worker = getattr(getattr(executor, "driver_worker", None), "worker", None)
        runner = getattr(worker, "model_runner", None)
        return getattr(runner, "model", None)

    def sync_weights(self, model: Any, version: int) -> None:
        """Push the learner's weights in place, or through a safetensors directory and a restart."""
        target = self._worker_model()
        if target is not None and hasattr(target, "load_weights"):
            target.load_weights(weights_for_vllm(model))
            reset = getattr(self._llm, "reset_prefix_cache", None)
            if reset is not None:
                reset()  # cached KV of the old weights must not be reused
            self.in_place_syncs += 1
        else:
            from mrl_actors.models.load import save_model

            d = self.model_dir.parent / f"v{version}"
            save_model(model, d, self.tokenizer)
            del self._llm
            self._llm = self._start(d, self.cfg)
            self.model_dir = d
            self.reload_syncs += 1
        self.version = version
        log.info("vllm.weights_synced", version=version, in_place=target is not None)
