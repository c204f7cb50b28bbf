"""The torch side of one policy: model, tokenizer, learner, rollout engine, THL vocabularies.

Kept apart from the actor loop so that the loop only moves events, and so that replay can build the
same runtime from a checkpoint and re-feed logged inputs without generating anything.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from mrl_actors.actors.warmstart import StopRule, tiny_policy, warm_start_metrics
from mrl_actors.events import Completion, RolloutGroupCompleted, pack_f32, pack_i32
from mrl_actors.grpo import GRPOLearner
from mrl_actors.logs import get_logger
from mrl_actors.models.builtin import model_dir
from mrl_actors.models.hub import local_model_dir
from mrl_actors.models.load import discard, discard_partial_saves, is_complete, load_model
from mrl_actors.probes import ProbeBatch, ProbeContext, ProbeName, PromptInputs, build_batch
from mrl_actors.probes.common import Transferred
from mrl_actors.report.stats import mean_pass_at_k
from mrl_actors.rollout.factory import make_engine
from mrl_actors.rollout.prompts import encode_prompt
from mrl_actors.spec import PolicySpec, RunSpec
from mrl_actors.tasks import Task, TaskItem, derive_seed, make_task
from mrl_actors.tasks.parts import part_names, part_of
from mrl_actors.thl import load_vocab, render_prompt, transfer


def cache_dir() -> Path:
    """Where warm-started tiny models are kept between runs (`MRL_CACHE_DIR` overrides)."""
    default = Path.home() / ".cache" / "mrl-actors" / "models"
    return Path(os.environ.get("MRL_CACHE_DIR", default))


def checkpoint_dir(run_dir: Path, policy: str, step: int) -> Path:
    """Where `policy`'s step-`step` checkpoint lives; it counts only when `models.is_complete`."""
    return run_dir / "checkpoints" / policy / f"step-{step}"


def engine_dir(run_dir: Path, policy: str) -> Path:
    """Where `policy`'s vLLM engines write the weight versions they load (one directory each)."""
    return run_dir / "engines" / policy


def load_initial_model(spec: RunSpec, policy: PolicySpec, task: Task) -> tuple[Any, Any]:
    """The policy's starting weights: a cached warm-started tiny model, or a real checkpoint.

    `policy.model` is a directory or a hub id (looked up in the local Hugging Face cache first).
    """
    field = f"policies[{spec.policies.index(policy)}].model"
    source = local_model_dir(policy.model, field=field)
    if policy.tiny is None:
        return load_model(source, field=field)
    t = policy.tiny
    return tiny_policy(
        model_dir(policy.model),  # a builtin name becomes its directory in the cache
        cache_dir(),
        task,
        hidden_size=t.hidden_size,
        layers=t.layers,
        heads=t.heads,
        seed=spec.run.seed,
        warm_steps=t.warm_start_steps,
        lr=t.warm_start_lr,
        rule=StopRule(
            max_steps=t.warm_start_steps,
            target=t.warm_start_target,
            patience=t.warm_start_patience,
            min_delta=t.warm_start_min_delta,
            check_every=t.warm_start_check_every,
            check_size=t.warm_start_check_size,
        ),
        parts=t.warm_start_parts,
    )


@dataclass
class PolicyRuntime:
    """Everything one policy computes with; built by `build_runtime`."""

    spec: RunSpec
    policy: PolicySpec
    task: Task
    model: Any
    tokenizer: Any
    learner: Any  # GRPOLearner
    engine: Any  # RolloutEngine
    vocab: Any  # thl.Vocab of this policy
    peer_vocabs: dict[str, Any]  # peer policy -> thl.Vocab
    _items: dict[str, TaskItem] | None = None  # the task's train items by prompt id (verify_peer)

    def close(self) -> None:
        """Stop the engine's processes, where it has any (a vLLM engine), and remove its files."""
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()

    @property
    def name(self) -> str:
        return self.policy.name

    def start_metrics(self) -> dict[str, float]:
        """Where the warm start stopped (`warm_start_*`), logged with the first learner step;
        empty for a policy that was not warm-started here."""
        return warm_start_metrics(self.model)

    def render(self, item: TaskItem) -> np.ndarray:
        """int32 [P]: the prompt in this policy's own format (its chat template when asked)."""
        text = self.task.prompt_text(item)
        if self.policy.chat_template:
            return render_prompt(self.vocab, text, chat_template=True)

        return encode_prompt(self.tokenizer, text)  # as the tiny models were warm-started

    # ----------------------------------------------------------------- THL

    def transfer(self, peer: str, completion: Completion) -> Transferred:
        """A peer's completion in this policy's tokens, checked against the THL budget."""
        if peer not in self.peer_vocabs:  # the fold ignores unknown policies; belt and braces
            return Transferred(
                ids=np.zeros(0, np.int32),
                logprobs=np.zeros(0),
                loss_mask=np.zeros(0, bool),
                exact=False,
                rejected=True,
                reason=f"unknown peer policy {peer!r}",
            )
        t = transfer(
            self.peer_vocabs[peer],
            self.vocab,
            completion.token_ids_array(),
            logprobs=completion.logprobs_array().astype(np.float64),
            budget=self.spec.thl.budget,
            logprob_rule=self.spec.thl.logprob_rule,
        )
        logprobs = t.logprobs if t.logprobs is not None else np.zeros(t.ids.size)
        return Transferred(
            ids=t.ids.astype(np.int32),
            logprobs=logprobs,
            loss_mask=t.loss_mask,
            exact=bool(t.residual.exact),
            rejected=t.rejected,
            reason=t.reason,
            one_to_one_share=float(t.residual.one_to_one_share),
            nm_byte_share=float(t.residual.nm_byte_share),
        )

    def probe_context(self, version: int) -> ProbeContext:
        return ProbeContext(
            version=version,
            scale_rewards=self.policy.grpo.scale_rewards,
            max_staleness=self.spec.probes.sharing.max_staleness,
            transfer=self.transfer,
            verify=self.verify_peer,
        )

    def verify_peer(self, prompt_id: str, completion: Completion) -> bool:
        """Trust, but verify: this policy's own verifier (deterministic on the text and the
        prompt) gives a peer's completion the success the peer logged for it."""
        if self._items is None:
            self._items = {item.prompt_id: item for item in self.task.train_items()}
        item = self._items.get(prompt_id)
        return item is not None and self.task.verify(completion.text, item).success == (
            completion.success
        )

    # ----------------------------------------------------------------- learn

    def learn(
        self, probe: ProbeName, inputs: list[PromptInputs], version: int
    ) -> tuple[ProbeBatch, dict[str, float]]:
        """Build the probe's batch and take one learner step on it (blocking: run in a thread)."""
        t0 = time.perf_counter()
        batch = build_batch(probe, self.spec.probes, inputs, self.probe_context(version))
        t1 = time.perf_counter()
        metrics = self.learner.step(batch.on_policy, batch.off_policy, batch.off_policy_loss)
        self.engine.sync_weights(self.model, self.learner.version)
        metrics = {f"learner_{k}" if k in ("version",) else k: v for k, v in metrics.items()}
        metrics.update(batch.metrics.as_dict())
        metrics["probe_time_s"] = t1 - t0
        metrics["learn_time_s"] = time.perf_counter() - t1
        metrics["off_policy_samples"] = float(len(batch.off_policy))
        return batch, metrics

    # ----------------------------------------------------------------- generate

    def rollouts(
        self,
        run: str,
        step: int,
        items: list[TaskItem],
        ids: list[str],
        *,
        version: int | None = None,
    ) -> list[RolloutGroupCompleted]:
        """Sample, verify and package one group per item (blocking: run in a thread).

        `step` is the prompt batch (it seeds the sampling); `version` the weights version the
        groups are stamped with, which in lockstep is the step itself.
        """
        g = self.spec.run.group_size
        prompts = [self.render(item) for item in items]
        seed = derive_seed(self.spec.run.seed, self.name, "rollout", step)
        generations = self.engine.generate(prompts, n=g, seed=seed % (2**62))
        out = []
        for item, prompt, gens, eid in zip(items, prompts, generations, ids, strict=True):
            completions = []
            for gen in gens:
                verdict = self.task.verify(gen.text, item)
                completions.append(
                    Completion(
                        token_ids=pack_i32(gen.token_ids),
                        logprobs=pack_f32(gen.logprobs),
                        text=gen.text,
                        finish_reason=gen.finish_reason,
                        reward=float(verdict.reward),
                        success=bool(verdict.success),
                        verdict=verdict.reason[:200],
                    )
                )
            out.append(
                RolloutGroupCompleted(
                    run=run,
                    source=self.name,
                    event_id=eid,
                    time_ns=time.time_ns(),
                    policy=self.name,
                    policy_version=step if version is None else version,
                    prompt_id=item.prompt_id,
                    prompt_text=self.task.prompt_text(item),
                    prompt_token_ids=pack_i32(prompt),
                    temperature=self.policy.engine.sampling.temperature,
                    tokenizer_fingerprint=self.vocab.fingerprint,
                    completions=completions,
                )
            )
        return out

    def evaluate(self, items: list[TaskItem], *, samples: int = 8) -> dict[str, float]:
        """Greedy accuracy, and unbiased pass@1 and pass@`samples` over `samples` draws each at
        the training temperature (`stats.pass_at_k`).

        Greedy accuracy is the paper's metric; sampled pass@1 is what GRPO optimizes, and the two
        can move apart while the policy sharpens. Both go through the rollout engine, so the
        evaluated completions end where training's do (stop strings, every end id, the length
        cap) and read the weights the engine was last synced with. Blocking: run in a thread.
        """
        prompts = [self.render(item) for item in items]
        greedy = self.engine.generate(prompts, n=1, seed=0, greedy=True)
        right = [
            float(self.task.verify(gens[0].text, item).success)
            for item, gens in zip(items, greedy, strict=True)
        ]
        seed = derive_seed(self.spec.run.seed, self.name, "eval") % (2**62)
        groups = self.engine.generate(prompts, n=samples, seed=seed)
        correct = [
            sum(self.task.verify(g.text, item).success for g in gens)
            for item, gens in zip(items, groups, strict=True)
        ]
        out = {
            "eval_accuracy": float(np.mean(right or [0.0])),
            "eval_pass1": mean_pass_at_k(correct, samples, 1),
            f"eval_pass{samples}": mean_pass_at_k(correct, samples, samples),
        }
        out.update(per_part(self.task, items, right, correct, samples))
        return out


def per_part(
    task: Task, items: list[TaskItem], right: list[float], correct: list[int], samples: int
) -> dict[str, float]:
    """`eval_accuracy_<part>`, `eval_pass1_<part>`, `eval_pass<n>_<part>` for a task with parts
    (`tasks.parts`): each skill's held-out score on its own; nothing for a task without."""
    out: dict[str, float] = {}
    for part in part_names(task):
        mine = [i for i, item in enumerate(items) if part_of(task, item) == part]
        if not mine:
            continue
        hits = [correct[i] for i in mine]
        out[f"eval_accuracy_{part}"] = float(np.mean([right[i] for i in mine]))
        out[f"eval_pass1_{part}"] = mean_pass_at_k(hits, samples, 1)
        out[f"eval_pass{samples}_{part}"] = mean_pass_at_k(hits, samples, samples)
    return out


def torch_dtype(policy: PolicySpec, device: str) -> Any:
    """The policy's weight dtype on `device`: its `dtype`, or float32 on CPU / bfloat16 on GPU."""
    import torch

    name = policy.dtype
    if name == "auto":
        name = "float32" if device == "cpu" else "bfloat16"
    return getattr(torch, name)


def native_cpu_bf16() -> bool:
    """Whether this CPU has bfloat16 matmul instructions (oneDNN's check: AVX512-BF16 or AMX).

    Without them torch computes bfloat16 matmuls without vector code: on a 2-core AVX2 machine a
    [1024, 2816] x [2816, 1024] product ran at 0.7 GFLOP/s in bfloat16 against 102 in float32.
    """
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN: say nothing is native
        return False


def warn_slow_dtype(policy: PolicySpec, device: str, dtype: Any, native: bool) -> str | None:
    """The warning for a bfloat16 policy on a CPU without native bfloat16, or None."""
    import torch

    if device != "cpu" or dtype != torch.bfloat16 or native:
        return None
    return (
        f"policies.{policy.name}.dtype: bfloat16 on a CPU without bfloat16 instructions: its "
        "matmuls run far slower than float32 (about 150 times on an AVX2 CPU); use float32 "
        "where memory allows"
    )


def build_runtime(
    spec: RunSpec,
    policy: PolicySpec,
    task: Task,
    *,
    weights_dir: Path | None = None,
    device: str = "cpu",
    engine_dir: Path | None = None,
    learns: bool = True,
) -> PolicyRuntime:
    """A runtime for `policy`: from `weights_dir` when given (replay, resume), else its start.

    Every caller builds the start (step 0) weights, so with `grpo.beta > 0` a copy of them made
    here is the frozen reference of the KL term; a runtime that never `learns` gets none.

    The model lives on `device` (its slot's: "cpu" or "cuda:N") in the policy's dtype, before the
    optimizer is made, so the optimizer state, the engine and checkpoints follow it. A vLLM
    engine keeps its weight versions under `engine_dir` (`engine_dir(run_dir, policy)`).
    """
    dtype = torch_dtype(policy, device)
    if (slow := warn_slow_dtype(policy, device, dtype, native_cpu_bf16())) is not None:
        get_logger(__name__, run=spec.run.name, policy=policy.name).warning(
            "slow_dtype", message=slow
        )
    if weights_dir is not None:
        model, tokenizer = load_model(weights_dir, dtype=dtype)
    else:
        model, tokenizer = load_initial_model(spec, policy, task)
    model = model.to(device=device, dtype=dtype)
    grpo, ref = policy.grpo, None
    if grpo.beta > 0 and learns:  # the KL term holds the learner to the policy it started as
        ref = copy.deepcopy(model)  # [the model's size again, on its device]
    elif grpo.beta > 0:  # a runtime that never steps (a rollout actor's) needs no reference
        grpo = msgspec.structs.replace(grpo, beta=0.0)
    learner = GRPOLearner(
        model, grpo, ref_model=ref, seed=spec.run.seed, pad_id=tokenizer.pad_token_id or 0
    )
    engine = make_engine(policy.engine, model, tokenizer, engine_dir=engine_dir)
    vocabs = {p.name: load_vocab(p.model) for p in spec.policies}
    return PolicyRuntime(
        spec=spec,
        policy=policy,
        task=task,
        model=model,
        tokenizer=tokenizer,
        learner=learner,
        engine=engine,
        vocab=vocabs[policy.name],
        peer_vocabs=vocabs,
    )


def prepare_runtime(
    spec: RunSpec, policy: PolicySpec, run_dir: Path, device: str = "cpu"
) -> PolicyRuntime:
    """The policy at step 0 on `device`: from its `step-0` checkpoint, saved (atomically, on
    CPU in the policy's dtype) on the first start.

    A start killed while saving `step-0` leaves no `step-0` (or, from older versions, one without
    the completeness marker): it is discarded with any temporary leftovers and saved again.
    """
    task = make_task(spec.task)
    start = checkpoint_dir(run_dir, policy.name, 0)
    logger = get_logger(__name__, run=spec.run.name, policy=policy.name)
    for gone in discard_partial_saves(start.parent):  # this process owns the policy's directory
        logger.warning("partial_checkpoint_discarded", path=str(gone))
    engines = engine_dir(run_dir, policy.name)  # a vLLM engine's weight versions
    if is_complete(start):
        return build_runtime(
            spec, policy, task, weights_dir=start, device=device, engine_dir=engines
        )
    if start.exists():
        logger.warning("incomplete_checkpoint_discarded", path=str(start))
        discard(start)
    rt = build_runtime(spec, policy, task, device=device, engine_dir=engines)
    rt.learner.save_checkpoint(start, rt.tokenizer)
    return rt
