"""Parity with TRL 1.16: the same inputs through TRL's own code and ours give the same numbers.

Nothing here re-implements TRL: advantages come from `GRPOTrainer._generate_and_score_completions`
(with a reward function that returns our random rewards), losses from `GRPOTrainer._compute_loss`
on a real trainer instance, and gradients from backpropagating TRL's loss. Tolerance 1e-6.
"""

from __future__ import annotations

import copy
import itertools
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

trl = pytest.importorskip("trl")

from mrl_actors.grpo import GRPOConfig, GRPOLearner, Sample, group_advantages  # noqa: E402
from mrl_actors.grpo.loss import grpo_policy_loss, truncated_is_ratio  # noqa: E402
from mrl_actors.models.load import build_tiny  # noqa: E402

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
SCALES = ("group", "batch", "none")
B, K, T, MAXLEN = 8, 4, 6, 6  # sequences, group size, completion length, max_completion_length
ATOL = 1e-6


class _Rewards:
    """A TRL reward function that hands out the rewards the test queued."""

    __name__ = "queued_rewards"

    def __init__(self) -> None:
        self.queue: list[list[float | None]] = []

    def __call__(self, completions: list[Any], **kwargs: Any) -> list[float | None]:
        return self.queue.pop(0)


@pytest.fixture(scope="module")
def trainer(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real `trl.GRPOTrainer` on a tiny GPT-2 (CPU, no logging, no saving)."""
    from datasets import Dataset

    torch.set_num_threads(1)
    model, tok = build_tiny(models_dir / "gpt2", hidden_size=32, layers=1, heads=2, seed=3)
    rewards = _Rewards()
    args = trl.GRPOConfig(
        output_dir=str(tmp_path_factory.mktemp("trl")),
        per_device_train_batch_size=B,
        num_generations=K,
        max_completion_length=MAXLEN,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        max_steps=1,
        gradient_accumulation_steps=1,
        bf16=False,  # TRL 1.16 defaults to bf16 autocast; parity is checked in float32
    )
    ds = Dataset.from_dict({"prompt": ["Q: 1+2=\nA:"] * B})
    tr = trl.GRPOTrainer(
        model=model, reward_funcs=rewards, args=args, train_dataset=ds, processing_class=tok
    )
    tr.queued_rewards = rewards
    tr.model.train()
    return tr


def _rewards(seed: int) -> list[float | None]:
    """Random rewards with the awkward cases: a constant group, ties, an unscorable (None) one."""
    g = np.random.default_rng(seed)
    r: list[float | None] = [float(x) for x in g.normal(size=B).round(3)]
    r[K : 2 * K] = [0.5] * K  # zero-std group
    r[1] = None
    return r


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("seed", [0, 1])
def test_advantages_match_trl(trainer: Any, scale: str, seed: int) -> None:
    """Our `group_advantages` equals TRL's advantage code on the same rewards (NaN included)."""
    rewards = _rewards(seed)
    trainer.scale_rewards = scale
    trainer.queued_rewards.queue.append(rewards)
    out = trainer._generate_and_score_completions([{"prompt": "Q: 1+2=\nA:"}] * B)
    ours = group_advantages(
        torch.tensor([float("nan") if x is None else x for x in rewards]), K, scale
    )
    torch.testing.assert_close(ours, out["advantages"].float(), atol=ATOL, rtol=0)
    assert not torch.isnan(ours).any()


def _trl_loss(tr: Any, inputs: dict[str, Any], logps: torch.Tensor, cfg: GRPOConfig) -> Any:
    """TRL's `_compute_loss` with its log-prob pass replaced by the given leaf tensor."""
    tr.loss_type, tr.beta = cfg.loss_type, cfg.beta
    tr.args.use_bias_correction_kl = cfg.kl_bias_correction
    tr.epsilon_low, tr.epsilon_high = cfg.epsilon_low, cfg.eps_high
    tr.current_gradient_accumulation_steps = cfg.grad_accum
    tr.args.steps_per_generation = cfg.grad_accum
    tr.max_completion_length = cfg.max_completion_length
    tr.use_vllm = tr.vllm_importance_sampling_correction = "importance_sampling_ratio" in inputs
    orig = tr._get_per_token_logps_and_entropies
    tr._get_per_token_logps_and_entropies = lambda *a, **k: (logps, torch.zeros_like(logps), None)
    try:
        return tr._compute_loss(tr.model, inputs)
    finally:
        tr._get_per_token_logps_and_entropies = orig
        tr.use_vllm = tr.vllm_importance_sampling_correction = False


CASES = list(
    itertools.product(
        LOSS_TYPES,
        SCALES,
        [
            (0.0, None, None, True),
            (0.04, 0.28, None, True),
            (0.04, None, None, False),
            (0.0, None, 2.0, True),
            (0.1, 0.3, 1.5, True),
        ],
        [1, 2],
    )
)


@pytest.mark.parametrize(("loss_type", "scale", "extras", "accum"), CASES)
def test_loss_and_grads_match_trl(
    trainer: Any, loss_type: str, scale: str, extras: tuple[float, Any, Any, bool], accum: int
) -> None:
    """Loss and d loss / d logps equal TRL's for every loss type, scale mode, KL, clip-higher,
    truncated IS and gradient accumulation (summed over micro-batches, as the trainer would)."""
    beta, eps_high, is_cap, kl_bias = extras
    cfg = GRPOConfig(
        kl_bias_correction=kl_bias,
        loss_type=loss_type,  # type: ignore[arg-type]
        scale_rewards=scale,  # type: ignore[arg-type]
        beta=beta,
        epsilon_high=eps_high,
        grad_accum=accum,
        max_completion_length=MAXLEN,
        is_cap=is_cap,
    )
    g = torch.Generator().manual_seed(zlib.crc32(repr((loss_type, scale, extras, accum)).encode()))
    rewards = torch.randn(B, generator=g)
    adv = group_advantages(rewards, K, scale)
    logps_all = (torch.rand(B, T, generator=g) * -3).requires_grad_(True)  # [B, T]
    old_all = logps_all.detach() + 0.3 * torch.randn(B, T, generator=g)  # ratios beyond the clip
    ref_all = logps_all.detach() + 0.5 * torch.randn(B, T, generator=g)
    beh_all = logps_all.detach() + 0.7 * torch.randn(B, T, generator=g)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask_all = (torch.arange(T)[None] < lengths[:, None]).float()  # [B, T] right-padded
    num_items = float(mask_all.sum())

    ours_total = torch.zeros(())
    trl_total = torch.zeros(())
    mb = B // accum
    for i in range(accum):
        sl = slice(i * mb, (i + 1) * mb)
        logps, mask = logps_all[sl], mask_all[sl]
        is_ratio = (
            None if is_cap is None else truncated_is_ratio(old_all[sl], beh_all[sl], mask, is_cap)
        )
        ours = grpo_policy_loss(
            logps, old_all[sl], adv[sl], mask, cfg,
            num_items_in_batch=num_items, ref_logps=ref_all[sl], is_ratio=is_ratio,
        ).loss  # fmt: skip
        inputs: dict[str, Any] = {
            "prompt_ids": torch.zeros(mb, 2, dtype=torch.long),
            "prompt_mask": torch.ones(mb, 2, dtype=torch.long),
            "completion_ids": torch.zeros(mb, T, dtype=torch.long),
            "completion_mask": mask.long(),
            "advantages": adv[sl],
            "old_per_token_logps": old_all[sl],
            "ref_per_token_logps": ref_all[sl],
            "num_items_in_batch": torch.tensor(num_items),
        }
        if is_ratio is not None:
            inputs["importance_sampling_ratio"] = is_ratio
        theirs = _trl_loss(trainer, inputs, logps, cfg)
        ours_total = ours_total + ours
        trl_total = trl_total + theirs
    torch.testing.assert_close(ours_total, trl_total, atol=ATOL, rtol=0)
    (g_ours,) = torch.autograd.grad(ours_total, logps_all, retain_graph=True)
    (g_trl,) = torch.autograd.grad(trl_total, logps_all)
    torch.testing.assert_close(g_ours, g_trl, atol=ATOL, rtol=0)
    assert g_ours.abs().sum() > 0


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_model_gradients_match_trl(trainer: Any, loss_type: str, beta: float) -> None:
    """End to end on a real model: TRL's fused-LM-head log-probs and loss vs our learner's
    `accumulate_gradients`, parameter gradients within 1e-6."""
    model = trainer.model
    ref = copy.deepcopy(model)
    with torch.no_grad():  # move the policy away from the reference so the KL term is non-zero
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(7)) * 0.01)
    cfg = GRPOConfig(loss_type=loss_type, beta=beta, max_completion_length=MAXLEN, is_cap=None)  # type: ignore[arg-type]
    g = np.random.default_rng(11)
    prompts = g.integers(0, 50000, size=(B, 5)).astype(np.int32)  # equal length: same positions
    lengths = g.integers(1, T + 1, size=B)
    comps = [g.integers(0, 50000, size=int(n)).astype(np.int32) for n in lengths]
    adv = group_advantages(torch.tensor(g.normal(size=B), dtype=torch.float32), K, "group")
    samples = [
        Sample(prompts[i], comps[i], np.zeros(len(comps[i]), np.float32), float(adv[i]))
        for i in range(B)
    ]
    learner = GRPOLearner(model, cfg, ref_model=ref if beta else None)
    learner.accumulate_gradients(samples)
    ours = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    comp_ids = torch.zeros(B, T, dtype=torch.long)
    cmask = torch.zeros(B, T, dtype=torch.long)
    for i, c in enumerate(comps):
        comp_ids[i, : len(c)] = torch.from_numpy(c.astype(np.int64))
        cmask[i, : len(c)] = 1
    inputs: dict[str, Any] = {
        "prompt_ids": torch.from_numpy(prompts.astype(np.int64)),
        "prompt_mask": torch.ones(B, 5, dtype=torch.long),
        "completion_ids": comp_ids,
        "completion_mask": cmask,
        "advantages": adv,
        "num_items_in_batch": cmask.sum().float(),
    }
    if beta:
        with torch.no_grad():
            full = torch.cat([inputs["prompt_ids"], comp_ids], 1)
            att = torch.cat([inputs["prompt_mask"], cmask], 1)
            inputs["ref_per_token_logps"], _, _ = trainer._get_per_token_logps_and_entropies(
                ref, full, att, T
            )
    trainer.loss_type, trainer.beta = loss_type, beta
    trainer.args.use_bias_correction_kl = True
    trainer.epsilon_low = trainer.epsilon_high = 0.2
    trainer.current_gradient_accumulation_steps = 1
    trainer.args.steps_per_generation = 1
    trainer.max_completion_length = MAXLEN
    loss = trainer._compute_loss(model, inputs)
    loss.backward()
    theirs = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    for n in ours:
        torch.testing.assert_close(ours[n], theirs[n], atol=ATOL, rtol=0, msg=n)
    assert max(float(v.abs().max()) for v in ours.values()) > 0
