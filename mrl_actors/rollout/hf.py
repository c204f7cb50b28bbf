"""Sampling with Hugging Face `transformers` models: CPU anywhere, GPU as a fallback to vLLM.

A small explicit decode loop over the model's KV cache rather than `model.generate`, for three
reasons: the sampler draws by inverse CDF from a `torch.Generator` derived from `seed` (no global
RNG: bitwise reproducible on CPU), the behaviour log-probs are computed as the learner computes
them (backbone, LM head, / temperature, log-softmax of the full distribution), and only the last
position goes through the LM head.
On CPU the engine may share the learner's model object; then `sync_weights` only records a version.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mrl_actors.grpo.logprobs import position_ids_from_mask
from mrl_actors.rollout.base import Generation, SamplingConfig
from mrl_actors.rollout.stops import stop_index
from mrl_actors.rollout.text import completion_text

_STOP_WINDOW = 16  # tokens decoded per step to spot a stop string early


def sample_tokens(
    logits: torch.Tensor, gen: torch.Generator, *, top_p: float = 1.0, top_k: int = 0
) -> torch.Tensor:
    """One token per row [B] from `logits` [B, V] (already / temperature), by inverse CDF.

    One uniform u per row from `gen`; the token is the first whose cumulative (unnormalised)
    probability exceeds u times the row's total, so a token is drawn with probability exactly its
    share (tokens of zero probability never). The running sum is float64: at a 152k vocabulary a
    float32 one would blur tokens below ~1e-7. `torch.multinomial` does the same draw at ~25x the
    cost on CPU ([32, 50257]: 46 ms vs 1.8 ms a decode step). `top_k` > 0 keeps the k largest
    logits, then `top_p` < 1 keeps the smallest set of the most likely tokens whose mass reaches
    top_p (always the most likely one).
    """
    b, v = logits.shape
    u = torch.rand(b, 1, generator=gen, device=logits.device, dtype=torch.float64)  # [B, 1]
    idx: torch.Tensor | None = None  # [B, K] vocabulary ids of the columns kept, when truncated
    if 0 < top_k < v:
        logits, idx = torch.topk(logits, top_k, dim=-1)  # [B, K], sorted descending
    elif top_p < 1.0:
        logits, idx = torch.sort(logits, dim=-1, descending=True)  # [B, V]
    w = torch.exp(logits - logits.amax(-1, keepdim=True))  # [B, K] unnormalised probabilities
    if top_p < 1.0:  # columns are sorted descending here
        p = w / w.sum(-1, keepdim=True)
        w = w * (p.cumsum(-1) - p < top_p)  # always keeps the top token
    cdf = w.double().cumsum(-1)  # [B, K]
    col = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp_(max=cdf.size(-1) - 1)
    return (col if idx is None else idx.gather(-1, col)).squeeze(-1)  # [B]


def end_ids(model: Any, tokenizer: Any) -> set[int]:
    """The ids that end a completion: the tokenizer's EOS plus the model's
    `generation_config.eos_token_id` (an int or a list), as `model.generate` would stop on.

    Chat models often list more than one (Qwen chat: `<|im_end|>` and `<|endoftext|>`); stopping
    on the tokenizer's EOS alone would run on past the end of the turn.
    """
    ids: set[int] = set()
    if isinstance(tokenizer.eos_token_id, int):
        ids.add(tokenizer.eos_token_id)
    extra = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(extra, int):
        ids.add(extra)
    elif isinstance(extra, (list, tuple)):
        ids.update(int(x) for x in extra)
    return ids


class HFEngine:
    """Batched sampling from a `transformers` causal LM."""

    def __init__(
        self, model: Any, tokenizer: Any, sampling: SamplingConfig, *, batch_size: int = 0
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.sampling = sampling
        self.batch_size = batch_size
        self.version = 0
        self.eos_id = tokenizer.eos_token_id
        self.end_ids = end_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def sync_weights(self, model: Any, version: int) -> None:
        """Copy `model`'s weights in (a no-op when the engine shares the learner's object)."""
        if model is not self.model:
            self.model.load_state_dict(model.state_dict())
        self.version = version

    def generate(
        self, prompts: Sequence[np.ndarray], *, n: int, seed: int, greedy: bool = False
    ) -> list[list[Generation]]:
        flat = [p for p in prompts for _ in range(n)]  # prompt-major: [len(prompts) * n]
        bs = self.batch_size or len(flat)
        dev = next(self.model.parameters()).device
        out: list[Generation] = []
        for start in range(0, len(flat), bs):
            gen = torch.Generator(device=dev).manual_seed(seed + start)
            out.extend(self._generate_batch(flat[start : start + bs], gen, greedy=greedy))
        return [out[i * n : (i + 1) * n] for i in range(len(prompts))]

    def _stop_tail(self, prompt: np.ndarray, tokens: list[int]) -> str:
        """The text of the last `_STOP_WINDOW` completion tokens, as they read in context.

        Decoded after one token of left context (the previous completion token, or the prompt's
        last), keeping only what follows that token's own text: decoded alone, a SentencePiece
        window loses its first "▁" (Llama's decoder strips it), and a stop string that starts
        with a space at the very start of a completion would never be seen.
        """
        window = tokens[-_STOP_WINDOW:]
        if len(tokens) > _STOP_WINDOW:
            ctx: int | None = tokens[-_STOP_WINDOW - 1]
        else:
            ctx = int(prompt[-1]) if len(prompt) else None
        if ctx is not None:
            head = self.tokenizer.decode([ctx])
            full = self.tokenizer.decode([ctx, *window])
            if full.startswith(head):
                return str(full[len(head) :])
        return str(self.tokenizer.decode(window))  # no context, or it does not decode apart

    @torch.no_grad()
    def _generate_batch(
        self, prompts: Sequence[np.ndarray], gen: torch.Generator, *, greedy: bool = False
    ) -> list[Generation]:
        s = self.sampling
        dev = next(self.model.parameters()).device
        b, p = len(prompts), max(len(x) for x in prompts)
        ids = torch.full((b, p), self.pad_id, dtype=torch.long)
        attn = torch.zeros((b, p), dtype=torch.long)
        for i, x in enumerate(prompts):  # left padding
            ids[i, p - len(x) :] = torch.as_tensor(np.asarray(x, dtype=np.int64))
            attn[i, p - len(x) :] = 1
        ids, attn = ids.to(dev), attn.to(dev)
        pos = position_ids_from_mask(attn)
        lm_head = self.model.get_output_embeddings()
        out = self.model.base_model(
            input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True
        )
        cache, last_pos = out.past_key_values, pos[:, -1:]  # [B, 1]
        hidden = out.last_hidden_state[:, -1]  # [B, H]
        tokens: list[list[int]] = [[] for _ in range(b)]
        logps: list[list[float]] = [[] for _ in range(b)]
        done = [False] * b
        reason: list[str] = ["length"] * b
        for _ in range(s.max_new_tokens):
            # greedy: log-probs of the unscaled logits, as vLLM reports them (`base.RolloutEngine`)
            logits = lm_head(hidden).float() / (1.0 if greedy else s.temperature)  # [B, V]
            if greedy:
                tok = logits.argmax(-1)  # [B]
            else:
                tok = sample_tokens(logits, gen, top_p=s.top_p, top_k=s.top_k)  # [B]
            # log pi(tok) of the full tempered distribution (not the truncated one), as the learner
            lp = logits.gather(-1, tok.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, -1)
            tok_l, lp_l = tok.tolist(), lp.tolist()
            for i in range(b):
                if done[i]:
                    continue
                tokens[i].append(tok_l[i])
                logps[i].append(lp_l[i])
                if s.stop_at_eos and tok_l[i] in self.end_ids:
                    done[i], reason[i] = True, "stop"
                elif s.stop:
                    tail = self._stop_tail(prompts[i], tokens[i])
                    if any(x in tail for x in s.stop):
                        done[i], reason[i] = True, "stop"
            if all(done):
                break
            attn = torch.cat([attn, attn.new_ones((b, 1))], dim=1)
            last_pos = last_pos + 1
            out = self.model.base_model(
                input_ids=tok.unsqueeze(-1),
                attention_mask=attn,
                position_ids=last_pos,
                past_key_values=cache,
                use_cache=True,
            )
            cache, hidden = out.past_key_values, out.last_hidden_state[:, -1]
        result = []
        for i in range(b):
            t, lp_i = tokens[i], logps[i]
            if reason[i] == "stop" and s.stop and t[-1] not in self.end_ids:
                k = stop_index(t, self.tokenizer, s.stop) or len(t)  # cut right after the stop
                t, lp_i = t[:k], lp_i[:k]
            result.append(
                Generation(
                    token_ids=np.asarray(t, dtype=np.int32),
                    logprobs=np.asarray(lp_i, dtype=np.float32),
                    text=completion_text(self.tokenizer, prompts[i], t),
                    finish_reason="stop" if reason[i] == "stop" else "length",
                )
            )
        return result
