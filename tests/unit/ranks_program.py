"""A program for `test_grpo_distributed`: one GRPO learner rank (or a one-rank learner) on fixed
samples, writing its final weights (rank 0) as safetensors. Not a test module."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import torch

from mrl_actors.grpo import GRPOConfig, GRPOLearner, OffPolicyLoss, Sample, group_advantages
from mrl_actors.models.load import build_tiny


def samples(seed: int, n: int) -> list[Sample]:
    g = np.random.default_rng(seed)
    adv = group_advantages(torch.tensor(g.normal(size=n), dtype=torch.float32), n // 2, "group")
    out = []
    for i in range(n):
        c = g.integers(3, 32000, size=int(g.integers(1, 7))).astype(np.int32)
        p = g.integers(3, 32000, size=int(g.integers(2, 6))).astype(np.int32)
        beh = (-12.0 - g.random(len(c))).astype(np.float32)
        out.append(Sample(p, c, beh, float(adv[i])))
    return out


def main() -> None:
    models, out, rank, world, port, accum, beta = sys.argv[1:8]
    torch.set_num_threads(1)
    model, _ = build_tiny(Path(models) / "mistral-7b", hidden_size=32, layers=2, heads=2, seed=0)
    cfg = GRPOConfig(
        lr=1e-3, grad_accum=int(accum), loss_type="grpo", weight_decay=0.1, beta=float(beta)
    )
    ref = copy.deepcopy(model) if cfg.beta > 0 else None  # the start policy, on every rank
    off = OffPolicyLoss(kind="truncated_is")
    if int(world) == 1:
        learner = GRPOLearner(model, cfg, ref_model=ref)
    else:
        from mrl_actors.grpo.distributed import Ops, ShardedGRPOLearner, close_group, init_group

        ops = Ops(init_group(int(rank), int(world), int(port), "cpu"))
        learner = ShardedGRPOLearner(model, cfg, ops, ref_model=ref)
    metrics = {}
    for step in range(3):
        metrics = learner.step(samples(step, 12), samples(100 + step, 4), off)
    if int(rank) == 0:
        from safetensors.torch import save_file

        state = {k: v.contiguous().clone() for k, v in learner.model.state_dict().items()}
        save_file(state, out, metadata={k: repr(v) for k, v in metrics.items()})
    if int(world) > 1:
        close_group()


if __name__ == "__main__":
    main()
