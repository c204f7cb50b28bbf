"""The learner step on a tiny real model: determinism, metrics, off-policy terms, checkpoints."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mrl_actors.errors import ConfigError
from mrl_actors.grpo import GRPOConfig, GRPOLearner, OffPolicyLoss, Sample, group_advantages
from mrl_actors.grpo.loss import importance_stats, off_policy_token_loss
from mrl_actors.models.load import build_tiny, load_model, weights_sha256


@pytest.fixture(scope="module")
def base(model_dir: Callable[[str], Path]) -> tuple[Any, Any]:
    torch.set_num_threads(1)
    return build_tiny(model_dir("mistral-7b"), hidden_size=32, layers=1, heads=2, seed=0)


def _samples(seed: int, n: int = 8, k: int = 4, moved: float = 0.0) -> list[Sample]:
    g = np.random.default_rng(seed)
    adv = group_advantages(torch.tensor(g.normal(size=n), dtype=torch.float32), k, "group")
    out = []
    for i in range(n):
        c = g.integers(3, 32000, size=int(g.integers(1, 7))).astype(np.int32)
        p = g.integers(3, 32000, size=int(g.integers(2, 6))).astype(np.int32)
        beh = (-12.0 - moved * g.random(len(c))).astype(np.float32)  # policy: ~ -10.4
        out.append(Sample(p, c, beh, float(adv[i])))
    return out


def test_step_is_bitwise_deterministic(base: tuple[Any, Any]) -> None:
    """Same start weights, same inputs: same weights after two steps, bit for bit."""
    hashes = []
    for _ in range(2):
        model = copy.deepcopy(base[0])
        learner = GRPOLearner(model, GRPOConfig(lr=1e-3, grad_accum=2), seed=1)
        learner.step(_samples(0))
        learner.step(_samples(1))
        hashes.append(learner.state_dict_sha256())
    assert hashes[0] == hashes[1]
    assert hashes[0] != weights_sha256(base[0])


def test_step_reports_metrics(base: tuple[Any, Any]) -> None:
    model, ref = copy.deepcopy(base[0]), copy.deepcopy(base[0])
    learner = GRPOLearner(model, GRPOConfig(lr=1e-2, beta=0.1), ref_model=ref)
    m1 = learner.step(_samples(0, moved=2.0))
    m2 = learner.step(_samples(0, moved=2.0))
    for key in ("loss", "kl", "clip_low", "clip_high", "grad_norm", "entropy", "is_on_mean",
                "is_on_max", "is_on_var", "is_on_ess", "tokens", "version"):  # fmt: skip
        assert np.isfinite(m1[key]), key
    assert m1["kl"] == pytest.approx(0.0, abs=1e-7)  # policy == reference before the first step
    assert m2["kl"] > 0 and m2["version"] == 2
    assert m1["is_on_mean"] > 1  # behaviour log-probs were far below the policy's
    assert 0 < m1["is_on_ess"] <= 1
    assert m1["entropy"] > 0


def test_truncated_is_caps_the_on_policy_weight(base: tuple[Any, Any]) -> None:
    """With the policy far above the behaviour log-probs (ratio ~5), the weight is the cap."""
    grads = {}
    for cap in (1.0, 3.0, 100.0):
        model = copy.deepcopy(base[0])
        learner = GRPOLearner(model, GRPOConfig(is_cap=cap, max_grad_norm=None))
        learner.accumulate_gradients(_samples(2, moved=0.0))
        grads[cap] = torch.cat([p.grad.flatten() for p in learner.params if p.grad is not None])
    torch.testing.assert_close(grads[3.0], 3 * grads[1.0], rtol=1e-4, atol=1e-7)
    assert grads[100.0].norm() > 4 * grads[1.0].norm()


def test_off_policy_terms() -> None:
    """truncated_is: gradient of -A*min(r, cap)*log p; luffy: of -A*p/(p+gamma)."""
    logps = torch.log(torch.tensor([[0.5, 0.1]])).requires_grad_(True)
    beh = torch.log(torch.tensor([[0.1, 0.5]]))
    mask = torch.ones(1, 2)
    adv = torch.tensor([1.0])
    tok, ratio = off_policy_token_loss(
        logps, beh, adv, mask, OffPolicyLoss(kind="truncated_is", cap=2.0)
    )
    torch.testing.assert_close(ratio, torch.tensor([[5.0, 0.2]]))
    (g,) = torch.autograd.grad(tok.sum(), logps)
    torch.testing.assert_close(g, torch.tensor([[-2.0, -0.2]]))  # min(5, 2), min(0.2, 2)
    tok, _ = off_policy_token_loss(
        logps, beh, adv, mask, OffPolicyLoss(kind="truncated_is", cap=3.0, level="sequence")
    )
    (g,) = torch.autograd.grad(tok.sum(), logps)
    torch.testing.assert_close(g, torch.tensor([[-1.0, -1.0]]))  # sequence ratio 5*0.2 = 1
    tok, _ = off_policy_token_loss(logps, beh, adv, mask, OffPolicyLoss(kind="luffy", gamma=0.1))
    (g,) = torch.autograd.grad(tok.sum(), logps)
    p = torch.tensor([[0.5, 0.1]])
    torch.testing.assert_close(g, -(p * 0.1 / (p + 0.1) ** 2))  # d/dlogp of p/(p+g) = p*g/(p+g)^2


def test_step_with_off_policy_samples_and_weights(base: tuple[Any, Any]) -> None:
    """Off-policy samples add their own term; weight 0 removes a sample's contribution entirely."""
    on = _samples(0)
    off = _samples(5, n=4, k=4, moved=1.0)
    spec = OffPolicyLoss(kind="luffy", coef=0.5)

    def grads(off_samples: list[Sample]) -> torch.Tensor:
        model = copy.deepcopy(base[0])
        lr = GRPOLearner(model, GRPOConfig())
        m = lr.accumulate_gradients(on, off_samples, spec)
        assert "is_off_mean" in m and "loss_off" in m
        return torch.cat([p.grad.flatten() for p in lr.params if p.grad is not None])

    full = grads(off)
    zeroed = grads(
        [
            Sample(s.prompt_ids, s.completion_ids, s.behaviour_logprobs, s.advantage, weight=0.0)
            for s in off
        ]
    )
    model = copy.deepcopy(base[0])
    only_on = GRPOLearner(model, GRPOConfig())
    only_on.accumulate_gradients(on)
    on_g = torch.cat([p.grad.flatten() for p in only_on.params if p.grad is not None])
    torch.testing.assert_close(zeroed, on_g)
    assert not torch.allclose(full, on_g)
    with pytest.raises(ConfigError, match="OffPolicyLoss"):
        GRPOLearner(copy.deepcopy(base[0]), GRPOConfig()).step(on, off)


def test_loss_mask_and_token_advantages(base: tuple[Any, Any]) -> None:
    """A fully masked sample contributes nothing; token advantages override the sequence one."""
    s = _samples(3, n=4, k=4)
    masked = [Sample(x.prompt_ids, x.completion_ids, x.behaviour_logprobs, 5.0,
                     loss_mask=np.zeros(len(x.completion_ids), bool)) for x in s[:1]]  # fmt: skip
    tok_adv = [Sample(x.prompt_ids, x.completion_ids, x.behaviour_logprobs, 99.0,
                      token_advantages=np.full(len(x.completion_ids), x.advantage, np.float32))
               for x in s[1:]]  # fmt: skip

    def grads(samples: list[Sample]) -> torch.Tensor:
        lr = GRPOLearner(copy.deepcopy(base[0]), GRPOConfig(loss_type="bnpo"))
        lr.accumulate_gradients(samples)
        return torch.cat([p.grad.flatten() for p in lr.params if p.grad is not None])

    torch.testing.assert_close(grads(masked + tok_adv), grads(s[1:]))


def test_importance_stats() -> None:
    st = importance_stats(
        torch.tensor([1.0, 1.0, 4.0, 9.0]), torch.tensor([1.0, 1.0, 1.0, 0.0]), "x"
    )
    assert st["x_mean"] == pytest.approx(2.0) and st["x_max"] == 4.0
    assert st["x_ess"] == pytest.approx(36 / (3 * 18))


def test_checkpoint_round_trip(base: tuple[Any, Any], tmp_path: Path) -> None:
    """save_checkpoint writes safetensors that transformers' from_pretrained loads, same hash."""
    model, tok = copy.deepcopy(base[0]), base[1]
    learner = GRPOLearner(model, GRPOConfig(lr=1e-3))
    learner.step(_samples(0))
    d = learner.save_checkpoint(tmp_path / "ckpt", tok)
    assert (d / "model.safetensors").exists() and not list(d.glob("*.bin"))
    loaded, ltok = load_model(d)
    assert weights_sha256(loaded) == learner.state_dict_sha256()
    assert ltok.encode("hello") == tok.encode("hello")


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        GRPOConfig(grad_accum=0)
    with pytest.raises(ConfigError):
        OffPolicyLoss(gamma=0)
    with pytest.raises(ConfigError, match="ref_model"):
        GRPOLearner(torch.nn.Linear(1, 1), GRPOConfig(beta=0.1))


def test_accumulation_does_not_change_the_dapo_gradient(base: tuple[Any, Any]) -> None:
    """dapo normalises by the tokens of the whole step, so splitting it into micro-batches only
    changes float summation order."""
    grads = []
    for accum in (1, 2, 4):
        lr = GRPOLearner(copy.deepcopy(base[0]), GRPOConfig(loss_type="dapo", grad_accum=accum))
        lr.accumulate_gradients(_samples(4))
        grads.append(torch.cat([p.grad.flatten() for p in lr.params if p.grad is not None]))
    torch.testing.assert_close(grads[1], grads[0], atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(grads[2], grads[0], atol=1e-7, rtol=1e-5)


def test_off_policy_weight_is_what_the_gradient_of_log_pi_is_multiplied_by() -> None:
    """The reported applied weight equals d(loss term)/d(log pi), and truncation bounds it."""
    from mrl_actors.grpo.loss import off_policy_weight

    gen = torch.Generator().manual_seed(0)
    logps = -torch.rand(3, 5, generator=gen, dtype=torch.float64) * 4
    beh = -torch.rand(3, 5, generator=gen, dtype=torch.float64) * 4
    mask = torch.ones(3, 5, dtype=torch.float64)
    luffy = OffPolicyLoss(kind="luffy", gamma=0.1)
    w, _ = off_policy_weight(logps, beh, mask, luffy)
    lp = logps.clone().requires_grad_(True)
    p = torch.exp(lp)
    (p / (p + 0.1)).sum().backward()
    assert lp.grad is not None
    torch.testing.assert_close(w, lp.grad, rtol=1e-12, atol=1e-12)
    assert float(w.max()) <= 1 / (4 * 0.1) + 1e-12
    for level in ("token", "sequence"):
        spec = OffPolicyLoss(kind="truncated_is", level=level, cap=1.5)  # type: ignore[arg-type]
        w, ratio = off_policy_weight(logps, beh - 3.0, mask, spec)  # pi >> mu: ratios above cap
        assert float(w.max()) <= 1.5 and float(ratio.max()) > 1.5


def test_nll_off_policy_gradient_is_lambda_times_the_mean_token_log_likelihood_gradient(
    base: tuple[Any, Any],
) -> None:
    """SGT's default term: grad = -λ * grad(mean over the peer tokens of log pi), nothing else."""
    from mrl_actors.grpo.batch import collate
    from mrl_actors.grpo.logprobs import completion_logps

    lam = 0.37
    peers = _samples(5, n=4)[:3]  # advantages and behaviour log-probs must not matter
    model = copy.deepcopy(base[0])
    learner = GRPOLearner(model, GRPOConfig(max_grad_norm=None))
    m = learner.accumulate_gradients([], peers, OffPolicyLoss(kind="nll", coef=lam))
    got = [p.grad.clone() for p in learner.params]

    ref = copy.deepcopy(base[0])
    b = collate(peers)
    logps, _ = completion_logps(ref, b.input_ids, b.attention_mask, b.completion_ids.size(1), 1.0)
    mean_ll = (logps * b.mask).sum() / b.mask.sum()  # mean token log-likelihood
    (-lam * mean_ll).backward()
    want = [p.grad for p in ref.parameters() if p.requires_grad]
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7)
    assert m["loss_off"] == pytest.approx(float(-lam * mean_ll.detach()), rel=1e-5)
    assert m["is_off_applied_mean"] == pytest.approx(1.0)  # a fixed weight on every token
