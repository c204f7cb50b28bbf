"""Our GRPO step against TRL's `GRPOTrainer` on the same work, side by side in one run.

Both sides start from identical tiny random-weight models (same architecture, seed, tokenizer),
take the same prompts (synthetic arithmetic), sample the same number of completions per prompt with
the same length cap at temperature 1 in float32, score them with the same verifier and take one
AdamW step with the same GRPO config (loss_type, epsilon, lr, grad clip; beta 0). Times are per
optimizer step, median over the measured steps after warm-up steps, and reported twice:

- "step (generation included)": sampling + scoring + advantages + loss + backward + optimizer.
  TRL: one `Trainer` step (measured by callback); ours: engine.generate + verify + learner.step.
- "learner only (generation excluded)": the same minus sampling/scoring/advantages. TRL: the step
  time minus the time in `_generate_and_score_completions` (wrapped with a timer); ours:
  `learner.step` alone.

Completion lengths can differ between the two sides (independent random samples), so the table
also shows completion tokens per step; a random-weight model rarely samples EOS, so both usually
run to the cap. TRL 1.16 defaults to activation checkpointing; it is turned off here (we do not
checkpoint), `--trl-gradient-checkpointing` keeps it.

Run: `.venv/bin/python tools/bench_grpo.py [--family llama2-7b]` (about two minutes).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]


def run_ours(model: Any, tok: Any, task: Any, a: argparse.Namespace) -> dict[str, Any]:
    import torch

    from mrl_actors.grpo import GRPOConfig, GRPOLearner, Sample, group_advantages
    from mrl_actors.rollout import SamplingConfig, encode_prompt
    from mrl_actors.rollout.hf import HFEngine

    cfg = GRPOConfig(
        loss_type=a.loss_type, lr=a.lr, max_completion_length=a.completion_len, is_cap=None
    )
    learner = GRPOLearner(model, cfg, seed=0, pad_id=tok.pad_token_id)
    engine = HFEngine(model, tok, SamplingConfig(max_new_tokens=a.completion_len))
    step_t, learn_t, toks = [], [], []
    for step in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        items = task.sample(0, step, a.prompts)
        prompts = [encode_prompt(tok, task.prompt_text(i)) for i in items]
        gens = engine.generate(prompts, n=a.group, seed=step)
        rewards = torch.tensor(
            [
                task.verify(g.text, it).reward
                for it, gs in zip(items, gens, strict=False)
                for g in gs
            ]
        )
        adv = group_advantages(rewards, a.group, "group")
        samples = [
            Sample(p, g.token_ids, g.logprobs, float(adv[i * a.group + j]))
            for i, (p, gs) in enumerate(zip(prompts, gens, strict=False))
            for j, g in enumerate(gs)
        ]
        t1 = time.perf_counter()
        m = learner.step(samples)
        t2 = time.perf_counter()
        if step >= a.warmup:
            step_t.append(t2 - t0)
            learn_t.append(t2 - t1)
            toks.append(m["tokens"])
    return {"step": step_t, "learn": learn_t, "tokens": toks}


def run_trl(model: Any, tok: Any, task: Any, a: argparse.Namespace) -> dict[str, Any]:
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback

    n_rows = (a.warmup + a.steps) * a.prompts
    items = [it for s in range(a.warmup + a.steps) for it in task.sample(0, s, a.prompts)]
    by_prompt = {task.prompt_text(i): i for i in items}
    ds = Dataset.from_dict({"prompt": [task.prompt_text(i) for i in items][:n_rows]})

    def reward(prompts: list[str], completions: list[str], **kw: Any) -> list[float | None]:
        return [
            task.verify(c, by_prompt[p]).reward for p, c in zip(prompts, completions, strict=False)
        ]

    step_t: list[float] = []
    gen_t: list[float] = []
    toks: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *args: Any, **kw: Any) -> None:
            self.t0 = time.perf_counter()

        def on_step_end(self, *args: Any, **kw: Any) -> None:
            step_t.append(time.perf_counter() - self.t0)

    out = tempfile.mkdtemp(prefix="bench-trl-")
    args = trl.GRPOConfig(
        output_dir=out,
        per_device_train_batch_size=a.prompts * a.group,
        num_generations=a.group,
        max_completion_length=a.completion_len,
        learning_rate=a.lr,
        loss_type=a.loss_type,
        beta=0.0,
        bf16=False,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=10**6,
        max_steps=a.warmup + a.steps,
        shuffle_dataset=False,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch",
        # TRL 1.16 turns activation checkpointing on by default (recomputes the forward in
        # backward); we do not checkpoint, so it is off here to compare the same work.
        gradient_checkpointing=a.trl_gradient_checkpointing,
        disable_tqdm=True,
        seed=0,
    )
    tr = trl.GRPOTrainer(
        model=model, reward_funcs=reward, args=args, train_dataset=ds, processing_class=tok
    )
    inner = tr._generate_and_score_completions

    def timed(*args_: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        res = inner(*args_, **kw)
        gen_t.append(time.perf_counter() - t)
        toks.append(float(res["completion_mask"].sum()))
        return res

    tr._generate_and_score_completions = timed  # type: ignore[method-assign]
    tr.add_callback(Timer())
    with contextlib.redirect_stdout(io.StringIO()):  # Trainer prints its final metrics dict
        tr.train()
    w = a.warmup
    learn = [s - g for s, g in zip(step_t[w:], gen_t[w:], strict=False)]
    return {"step": step_t[w:], "learn": learn, "tokens": toks[w:]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--family", default="gpt2", help="model directory name under ../shared/models")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--prompts", type=int, default=4, help="prompts per step")
    p.add_argument("--group", type=int, default=8, help="completions per prompt")
    p.add_argument("--completion-len", type=int, default=12, help="max new tokens")
    p.add_argument("--steps", type=int, default=6, help="measured steps")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured steps first")
    p.add_argument("--loss-type", default="dapo")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=1, help="torch threads for both sides")
    p.add_argument(
        "--trl-gradient-checkpointing",
        action="store_true",
        help="keep TRL's default activation checkpointing (extra forward; not the same work)",
    )
    p.add_argument("--models-dir", default=str(ROOT.parent / "shared" / "models"))
    a = p.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    import transformers
    import trl

    from mrl_actors.models.load import build_tiny
    from mrl_actors.tasks import ArithmeticTask

    model, tok = build_tiny(Path(a.models_dir) / a.family, hidden_size=a.hidden, layers=a.layers)
    task = ArithmeticTask()
    # TRL patches the model it is given (fused LM head): give each side its own copy
    ours = run_ours(copy.deepcopy(model), tok, task, a)
    theirs = run_trl(copy.deepcopy(model), tok, task, a)
    ours2 = run_ours(copy.deepcopy(model), tok, task, a)  # again, so CPU contention is shared
    for k in ours:
        ours[k] = ours[k] + ours2[k]

    med = statistics.median
    print(
        f"# GRPO step, {a.family} h{a.hidden} l{a.layers}, {a.prompts} prompts x {a.group} "
        f"completions, <= {a.completion_len} new tokens, {a.loss_type}, float32 CPU, "
        f"{a.threads} thread(s); torch {torch.__version__}, transformers "
        f"{transformers.__version__}, trl {trl.__version__}; median of {a.steps} (TRL) / "
        f"{2 * a.steps} (ours) steps after {a.warmup} warm-up"
    )
    print(f"| {'measure':<36} | {'TRL GRPOTrainer':>15} | {'mrl-actors':>10} | {'ours/TRL':>8} |")
    print(f"|{'-' * 38}|{'-' * 17}|{'-' * 12}|{'-' * 10}|")
    for key, label in (
        ("step", "step s (generation included)"),
        ("learn", "learner s (generation excluded)"),
    ):
        t, o = med(theirs[key]), med(ours[key])
        print(f"| {label:<36} | {t:>15.3f} | {o:>10.3f} | {o / t:>8.2f} |")
    t, o = med(theirs["tokens"]), med(ours["tokens"])
    print(f"| {'completion tokens per step':<36} | {t:>15.0f} | {o:>10.0f} | {'':>8} |")


if __name__ == "__main__":
    main()
