"""The learner's memory options: chunked log-probs, token-budget pieces, checkpointing, bf16.

Each option must leave the step's numbers what the plain dense path gives, within float
tolerance (bf16 within bf16's): these tests compare against `dense_completion_logps` (the
unchunked [B, T, V] reference) and against the learner with every option off.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mrl_actors.errors import ConfigError
from mrl_actors.grpo import GRPOConfig, GRPOLearner, OffPolicyLoss, Sample, group_advantages
from mrl_actors.grpo.batch import collate
from mrl_actors.grpo.learner import split_by_tokens
from mrl_actors.grpo.logprobs import completion_logps, dense_completion_logps, head_logps
from mrl_actors.models.load import build_tiny
from mrl_actors.rollout import SamplingConfig
from mrl_actors.rollout.hf import HFEngine

ATOL = 1e-6  # the stated tolerance: float32 rounding of values near 1 ...
RTOL = 1e-6  # ... and a few ulps of larger ones (log-probs near -12 at a 152k vocabulary)


@pytest.fixture(scope="module")
def base(model_dir: Callable[[str], Path]) -> tuple[Any, Any]:
    torch.set_num_threads(1)
    return build_tiny(model_dir("qwen1.5-1.8b"), hidden_size=32, layers=2, heads=2, seed=0)


def _samples(seed: int, n: int = 8, k: int = 4, vocab: int = 32000) -> list[Sample]:
    g = np.random.default_rng(seed)
    adv = group_advantages(torch.tensor(g.normal(size=n), dtype=torch.float32), k, "group")
    out = []
    for i in range(n):
        c = g.integers(3, vocab, size=int(g.integers(1, 9))).astype(np.int32)
        p = g.integers(3, vocab, size=int(g.integers(2, 6))).astype(np.int32)
        beh = (-11.0 - g.random(len(c))).astype(np.float32)
        out.append(Sample(p, c, beh, float(adv[i])))
    return out


def _close_grads(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Parameter gradients equal up to float32 reduction order: 1e-5 of the largest entry plus
    1e-4 relative (in float64 the same comparison is exact).

    Pieces pad differently and sum in another order, so single entries of a 0.2-sized gradient
    differ by ~2e-6; the TRL parity tests (no budget, one chunk) keep their 1e-6.
    """
    scale = max(float(g.abs().max()) for n, g in a.items() if n != "metrics")
    for n, g in a.items():
        if n != "metrics":
            torch.testing.assert_close(b[n], g, atol=1e-5 * scale, rtol=1e-4, msg=n)


def _grads(model: Any, cfg: GRPOConfig, samples: list[Sample], **kw: Any) -> dict[str, Any]:
    m = copy.deepcopy(model)
    ref = copy.deepcopy(model) if cfg.beta else None
    if ref is not None:
        with torch.no_grad():  # a reference away from the policy: the KL term is non-zero
            for p in ref.parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(5)) * 0.02)
    learner = GRPOLearner(m, cfg, ref_model=ref)
    metrics = learner.accumulate_gradients(samples, **kw)
    return {"metrics": metrics, **{n: p.grad.clone() for n, p in m.named_parameters()}}


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("bias", [False, True])
def test_chunked_head_equals_the_dense_log_softmax_in_float64(
    temperature: float, bias: bool
) -> None:
    """Values, entropy and the gradients of hidden, weight and bias equal autograd through the
    dense [B, T, V] log-softmax, for chunks that do not divide the positions."""
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 300, bias=bias).double()
    h = torch.randn(3, 5, 8, dtype=torch.float64, requires_grad=True)
    tgt = torch.randint(0, 300, (3, 5))
    g = torch.randn(3, 5, dtype=torch.float64)
    lp, ent = head_logps(head, h, tgt, temperature, with_entropy=True, chunk_tokens=4)
    (lp * g).sum().backward()
    ours = [h.grad.clone(), head.weight.grad.clone()] + ([head.bias.grad.clone()] if bias else [])
    h.grad = None
    head.zero_grad()
    la = torch.log_softmax(head(h) / temperature, -1)  # [B, T, V]
    lp2 = la.gather(-1, tgt[..., None]).squeeze(-1)
    (lp2 * g).sum().backward()
    theirs = [h.grad, head.weight.grad] + ([head.bias.grad] if bias else [])
    assert lp.dtype == torch.float32 and ent is not None and not ent.requires_grad
    torch.testing.assert_close(lp.double(), lp2, atol=1e-6, rtol=0)
    torch.testing.assert_close(ent.double(), -(la.exp() * la).sum(-1), atol=1e-5, rtol=0)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_completion_logps_equal_the_dense_path_on_a_real_model(base: tuple[Any, Any]) -> None:
    model, _ = base
    ids = torch.randint(3, 32000, (4, 11), generator=torch.Generator().manual_seed(1))
    attn = torch.ones_like(ids)
    attn[0, :3] = 0  # left padding
    a, ea = completion_logps(model, ids, attn, 6, 0.9, with_entropy=True, chunk_tokens=5)
    b, eb = dense_completion_logps(model, ids, attn, 6, 0.9, with_entropy=True)
    assert ea is not None and eb is not None
    torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(ea, eb, atol=1e-5, rtol=1e-5)  # a sum of V terms


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any aten op creates while active (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


def test_a_learner_step_never_creates_a_b_t_v_tensor(base: tuple[Any, Any]) -> None:
    """A whole step (forward, backward, optimizer) at Qwen's 151,936 vocabulary with 4-position
    chunks: no op creates a tensor larger than the LM head's weight [V, H] or one chunk of logits
    [4, V], while the dense path creates [B, T, V] ones (here 16 x 8 x V)."""
    model, _ = base
    v, hd = model.get_output_embeddings().weight.shape
    samples = _samples(8, n=16, vocab=v)
    t = max(len(s.completion_ids) for s in samples)
    assert len(samples) * t * v > 3 * max(v * hd, 4 * v)
    learner = GRPOLearner(copy.deepcopy(model), GRPOConfig(logit_chunk_tokens=4, lr=1e-3))
    with _LargestTensor() as seen:
        learner.step(samples)
    assert seen.numel <= max(v * hd, 4 * v), (seen.numel, v, hd)
    b = collate(samples)
    with _LargestTensor() as dense:
        lp, _ = dense_completion_logps(model, b.input_ids, b.attention_mask, t, 1.0)
        lp.sum().backward()
    model.zero_grad(set_to_none=True)
    assert dense.numel >= len(samples) * t * v


def test_split_by_tokens_packs_padded_positions() -> None:
    def s(p: int, c: int) -> Sample:
        return Sample(np.ones(p, np.int32), np.ones(c, np.int32), np.zeros(c, np.float32), 0.0)

    xs = [s(2, 3), s(3, 3), s(1, 1), s(10, 10), s(2, 2)]
    assert split_by_tokens(xs, 0) == [xs]
    pieces = split_by_tokens(xs, 12)
    assert [len(p) for p in pieces] == [2, 1, 1, 1]  # 2 x (3+3) = 12 fits; the 20 goes alone
    assert [x for p in pieces for x in p] == xs
    for p in pieces:
        pad = len(p) * (max(len(x.prompt_ids) for x in p) + max(len(x.completion_ids) for x in p))
        assert pad <= 12 or len(p) == 1


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("accum", [1, 2])
def test_token_budget_pieces_give_the_same_gradient(
    base: tuple[Any, Any], loss_type: str, accum: int
) -> None:
    """Cutting each micro-batch into pieces under `max_tokens_per_micro_batch` changes neither
    the loss nor the gradient, for every loss type, with a KL term and truncated IS."""
    model, _ = base
    kw: dict[str, Any] = {"loss_type": loss_type, "beta": 0.05, "is_cap": 2.0,
                          "grad_accum": accum, "max_completion_length": 8}  # fmt: skip
    samples = _samples(1)
    plain = _grads(model, GRPOConfig(**kw), samples)
    cut = _grads(model, GRPOConfig(**kw, max_tokens_per_micro_batch=20), samples)
    assert len(split_by_tokens(samples[: 8 // accum], 20)) > 1  # the budget does cut
    for key in ("loss", "kl", "tokens", "entropy", "is_on_mean", "clip_low"):
        assert cut["metrics"][key] == pytest.approx(plain["metrics"][key], abs=1e-6), key
    _close_grads(plain, cut)


@pytest.mark.parametrize("kind", ["truncated_is", "luffy", "nll"])
def test_token_budget_pieces_keep_the_off_policy_term(base: tuple[Any, Any], kind: str) -> None:
    model, _ = base
    spec = OffPolicyLoss(kind=kind, coef=0.5)  # type: ignore[arg-type]
    on, off = _samples(2, n=4), _samples(3, n=6, k=3)
    assert len(split_by_tokens(off, 16)) > 1
    plain = _grads(model, GRPOConfig(), on, off_policy=off, off_policy_loss=spec)
    cut = _grads(
        model, GRPOConfig(max_tokens_per_micro_batch=16), on, off_policy=off, off_policy_loss=spec
    )
    for key in ("loss_off", "is_off_mean", "is_off_ess", "is_off_applied_mean"):
        assert cut["metrics"][key] == pytest.approx(plain["metrics"][key], abs=1e-6), key
    _close_grads(plain, cut)


def test_chunk_size_does_not_change_the_gradient(base: tuple[Any, Any]) -> None:
    model, _ = base
    samples = _samples(4)
    a = _grads(model, GRPOConfig(logit_chunk_tokens=512), samples)
    b = _grads(model, GRPOConfig(logit_chunk_tokens=3), samples)
    _close_grads(a, b)


def test_gradient_checkpointing_same_gradient_and_off_after_the_step(
    base: tuple[Any, Any],
) -> None:
    """Checkpointing recomputes the same forward: same gradients; and it is off again after the
    step, so an engine sharing the model still decodes with its KV cache (same tokens)."""
    model, tok = base
    samples = _samples(5)
    a = _grads(model, GRPOConfig(), samples)
    b = _grads(model, GRPOConfig(gradient_checkpointing=True), samples)
    _close_grads(a, b)
    m = copy.deepcopy(model)
    learner = GRPOLearner(m, GRPOConfig(gradient_checkpointing=True, lr=1e-3))
    learner.step(samples)
    assert not any(getattr(x, "gradient_checkpointing", False) for x in m.modules())
    eng = HFEngine(m, tok, SamplingConfig(max_new_tokens=4, stop_at_eos=False))
    prompts = [np.array([5, 6, 7], np.int32)]
    first = eng.generate(prompts, n=2, seed=1)
    m.eval()
    again = eng.generate(prompts, n=2, seed=1)
    assert [g.token_ids.tolist() for g in first[0]] == [g.token_ids.tolist() for g in again[0]]


def test_bf16_autocast_stays_close_and_keeps_float32_state(base: tuple[Any, Any]) -> None:
    model, _ = base
    samples = _samples(6)
    a = _grads(model, GRPOConfig(), samples)
    b = _grads(model, GRPOConfig(bf16_autocast=True), samples)
    num = sum(float((b[n] - g).norm() ** 2) for n, g in a.items() if n != "metrics") ** 0.5
    den = sum(float(g.norm() ** 2) for n, g in a.items() if n != "metrics") ** 0.5
    assert den > 0 and num / den < 0.05  # bf16 has 8 bits of mantissa
    assert all(b[n].dtype == torch.float32 for n in a if n != "metrics")
    assert b["metrics"]["loss"] == pytest.approx(a["metrics"]["loss"], rel=0.05, abs=1e-4)


def test_sampled_entropy_is_the_mean_negative_log_prob(base: tuple[Any, Any]) -> None:
    model, _ = base
    samples = _samples(7)
    full = _grads(model, GRPOConfig(), samples)["metrics"]
    sampled = _grads(model, GRPOConfig(entropy="sampled"), samples)["metrics"]
    m = copy.deepcopy(model)
    lps = []
    for s in samples:
        ids = torch.from_numpy(np.concatenate([s.prompt_ids, s.completion_ids]).astype(np.int64))
        lp, _ = completion_logps(m, ids[None], torch.ones_like(ids)[None], len(s.completion_ids), 1)
        lps.append(lp.detach().flatten())
    assert sampled["entropy"] == pytest.approx(float(-torch.cat(lps).mean()), abs=1e-5)
    assert full["entropy"] > 0 and full["entropy"] != sampled["entropy"]


def test_memory_options_are_validated() -> None:
    for bad in (
        {"logit_chunk_tokens": 0},
        {"max_tokens_per_micro_batch": -1},
        {"logit_chunk_tokens": True},
    ):
        with pytest.raises(ConfigError):
            GRPOConfig(**bad)  # type: ignore[arg-type]


def test_a_head_that_is_not_linear_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"nn\.Linear"):
        head_logps(
            torch.nn.Identity(), torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long), 1
        )
