"""Per-token log-probs and entropies of completion tokens, never holding a [B, T, V] tensor.

With a real vocabulary (32k-152k) the LM head and its log-softmax dominate a learner step's memory:
a [B, T, V] float32 tensor is 0.6 MB per completion token at Qwen's 151,936, and autograd keeps
several (logits, their log-softmax, the gradient of each). Here the LM head runs on the T
completion positions only (not all P + T), over chunks of `chunk_tokens` positions at a time, in a
custom autograd Function that saves only the hidden states and one log-normaliser per position and
recomputes each chunk's logits in backward (as TRL's chunked log-prob Function does). Peak memory
of the head is then a couple of [chunk, V] buffers whatever B and T are. The entropy metric comes
from the same forward pass. Position ids follow the attention mask so left padding does not shift
positions, exactly as the rollout engine sees them: on-policy ratios start at 1.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mrl_actors.errors import ConfigError

DEFAULT_CHUNK_TOKENS = 512  # positions per LM-head chunk: [512, 151936] float32 is 311 MB


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, L] positions counting only real tokens (0 on left padding)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _logits(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, inv_t: float) -> torch.Tensor:
    """[C, V] float32 logits / temperature of the hidden rows `h` [C, H] (w, b in compute dtype)."""
    z = F.linear(h.to(w.dtype), w, b).float()
    if inv_t != 1.0:
        z.mul_(inv_t)
    return z


class ChunkedTokenLogProbs(torch.autograd.Function):
    """log softmax(h W^T + b)[target] / T per row, chunk by chunk, with the entropy if asked.

    forward saves hidden [N, H], weight, bias, targets and the log-normaliser [N]; backward
    recomputes each chunk's logits, turns them into the softmax with the saved normaliser and
    forms d logp / d z = onehot(target) - softmax in place, so at most one [chunk, V] float32
    buffer (plus its compute-dtype copy under bf16) is alive at a time. The entropy output is a
    detached metric (non-differentiable).
    """

    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,  # [N, H]
        weight: torch.Tensor,  # [V, H]
        bias: torch.Tensor | None,  # [V]
        targets: torch.Tensor,  # [N] int64
        inv_temperature: float,
        chunk_tokens: int,
        with_entropy: bool,
        compute_dtype: torch.dtype,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = hidden.size(0)
        logps = hidden.new_empty(n, dtype=torch.float32)  # [N]
        log_z = hidden.new_empty(n, dtype=torch.float32)  # [N]: logsumexp of z / T
        entropy = hidden.new_zeros(n if with_entropy else 0, dtype=torch.float32)  # [N] or [0]
        w = weight.to(compute_dtype)
        b = None if bias is None else bias.to(compute_dtype)
        with torch.autocast(hidden.device.type, enabled=False), torch.no_grad():
            for s in range(0, n, chunk_tokens):
                e = min(s + chunk_tokens, n)
                z = _logits(hidden[s:e], w, b, inv_temperature)  # [C, V]
                m = z.amax(-1, keepdim=True)  # [C, 1]
                z.sub_(m)
                tgt = z.gather(-1, targets[s:e, None])  # [C, 1]
                ez = torch.exp(z)  # [C, V]
                sum_ez = ez.sum(-1, keepdim=True)  # [C, 1]
                lz = sum_ez.log()  # [C, 1]
                logps[s:e] = (tgt - lz).squeeze(-1)
                log_z[s:e] = (m + lz).squeeze(-1)
                if with_entropy:  # H = log Z - sum p z (z shifted by m: both sides)
                    entropy[s:e] = (lz - ez.mul_(z).sum(-1, keepdim=True) / sum_ez).squeeze(-1)
                del z, ez
        ctx.save_for_backward(hidden, weight, bias, targets, log_z)
        ctx.inv_temperature = inv_temperature
        ctx.chunk_tokens = chunk_tokens
        ctx.compute_dtype = compute_dtype
        ctx.mark_non_differentiable(entropy)
        return logps, entropy

    @staticmethod
    def backward(
        ctx: Any, grad_logps: torch.Tensor, _grad_entropy: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        hidden, weight, bias, targets, log_z = ctx.saved_tensors
        inv_t, chunk, cd = ctx.inv_temperature, ctx.chunk_tokens, ctx.compute_dtype
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        n = hidden.size(0)
        w = weight.to(cd)
        b = None if bias is None else bias.to(cd)
        grad_h = torch.empty_like(hidden) if need_h else None  # [N, H]
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None  # [V, H]
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if need_b else None  # [V]
        g_all = grad_logps.float() * inv_t  # [N]: d z_raw = d z / T
        with torch.autocast(hidden.device.type, enabled=False), torch.no_grad():
            for s in range(0, n, chunk):
                e = min(s + chunk, n)
                h = hidden[s:e]
                z = _logits(h, w, b, inv_t)  # [C, V]
                g = g_all[s:e, None]  # [C, 1]
                # d logp / d z_raw * g = (onehot(target) - softmax) * g / T, built in place
                dz = z.sub_(log_z[s:e, None]).exp_().mul_(-g)
                dz.scatter_add_(-1, targets[s:e, None], g)
                dzc = dz.to(cd)
                if grad_h is not None:
                    grad_h[s:e] = (dzc @ w).to(hidden.dtype)  # [C, H]
                if grad_w is not None:
                    if dzc.dtype == torch.float32 and h.dtype == torch.float32:
                        grad_w.addmm_(dzc.t(), h)  # [V, H]
                    else:
                        grad_w.add_((dzc.t() @ h.to(cd)).float())
                if grad_b is not None:
                    grad_b.add_(dz.sum(0))
                del z, dz, dzc
        return (
            grad_h,
            None if grad_w is None else grad_w.to(weight.dtype),
            None if grad_b is None else grad_b.to(bias.dtype),
            None,
            None,
            None,
            None,
            None,
        )


def head_logps(
    lm_head: Any,
    hidden: torch.Tensor,  # [B, T, H]
    targets: torch.Tensor,  # [B, T]
    temperature: float,
    *,
    with_entropy: bool = False,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log pi(target) [B, T] through `lm_head` (an nn.Linear) at `temperature`, chunked.

    Under an active autocast the head's matrix products run in the autocast dtype (bf16), with
    the softmax and its sums in float32, as the backbone's own linears would.
    """
    if not isinstance(lm_head, torch.nn.Linear):
        raise ConfigError(
            f"the model's output embeddings are a {type(lm_head).__name__}, not an nn.Linear: "
            "chunked log-probs need the LM head's weight"
        )
    if chunk_tokens < 1:
        raise ConfigError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    b, t, h = hidden.shape
    dev = hidden.device.type
    cd = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else lm_head.weight.dtype
    logps, ent = ChunkedTokenLogProbs.apply(
        hidden.reshape(b * t, h),
        lm_head.weight,
        lm_head.bias,
        targets.reshape(b * t),
        1.0 / temperature,
        chunk_tokens,
        with_entropy,
        cd,
    )
    return logps.view(b, t), (ent.view(b, t) if with_entropy else None)


def completion_logps(
    model: Any,
    input_ids: torch.Tensor,  # [B, P + T]
    attention_mask: torch.Tensor,  # [B, P + T]
    n_completion: int,  # T
    temperature: float,
    *,
    with_entropy: bool = False,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log pi(token | prefix) at `temperature` of the last T tokens [B, T], and entropy if asked.

    The entropy (full, over the vocabulary) is detached (a metric), computed in the same pass.
    """
    t = n_completion
    hidden = model.base_model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    ).last_hidden_state  # [B, P + T, H]
    h = hidden[:, -t - 1 : -1]  # [B, T, H]: the positions that predict the completion tokens
    return head_logps(
        model.get_output_embeddings(),
        h,
        input_ids[:, -t:],
        temperature,
        with_entropy=with_entropy,
        chunk_tokens=chunk_tokens,
    )


def dense_completion_logps(
    model: Any,
    input_ids: torch.Tensor,  # [B, P + T]
    attention_mask: torch.Tensor,  # [B, P + T]
    n_completion: int,  # T
    temperature: float,
    *,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The unchunked reference: [B, T, V] logits and log-softmax through autograd.

    Kept for tests (the chunked path must equal it within float tolerance) and for the memory
    benchmark's "before" arm; the learner does not use it.
    """
    t = n_completion
    hidden = model.base_model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    ).last_hidden_state  # [B, P + T, H]
    h = hidden[:, -t - 1 : -1]  # [B, T, H]
    logits = model.get_output_embeddings()(h).float() / temperature  # [B, T, V]
    logp_all = torch.log_softmax(logits, dim=-1)  # [B, T, V]
    logps = logp_all.gather(-1, input_ids[:, -t:].unsqueeze(-1)).squeeze(-1)  # [B, T]
    entropy = None
    if with_entropy:
        with torch.no_grad():
            la = logp_all.detach()
            entropy = -(la.exp() * la).sum(-1)  # [B, T]
    return logps, entropy
