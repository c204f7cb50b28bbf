"""The `Transfer`s of a batch made lazily: each from the batch arrays when first read.

`batch.transfer_batch` computes every figure for the whole batch at once; a consumer that reads
only some sequences, or only the batch arrays, does not pay for the rest.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from mrl_actors.thl.residual import Residual, ResidualBudget
from mrl_actors.thl.transfer import Transfer


@dataclass(eq=False)
class Batch:
    """Everything `TransferBatch` needs to make one sequence's `Transfer` on demand."""

    ids: np.ndarray  # int32 [T]: receiver ids, mapped EOS slots included
    logprobs: np.ndarray | None  # float64 [T]
    loss_mask: np.ndarray  # bool [T]
    advantages: np.ndarray | None  # float64 [T] (token-level) or [K] (scalars)
    scalar_adv: bool
    token_rewards: np.ndarray | None  # float64 [T]
    out_off: np.ndarray  # int64 [K + 1]
    exact: np.ndarray  # bool [K]
    n_src: np.ndarray  # int64 [K]: peer tokens without the EOS
    eos: np.ndarray  # bool [K]: a peer EOS was set aside
    add_eos: np.ndarray  # bool [K]: and mapped to the receiver's EOS
    n_bytes: np.ndarray  # int64 [K]
    spans: np.ndarray  # int64 [K]: live spans
    one: np.ndarray  # int64 [K]: 1:1 spans
    nm_bytes: np.ndarray  # int64 [K]
    widest: np.ndarray  # int64 [K]
    most: np.ndarray  # int64 [K]
    orphan: np.ndarray  # bool [K]
    unk: np.ndarray  # int64 [K]
    dropped: np.ndarray  # int64 [K]
    lossy: np.ndarray  # int64 [K]
    invalid: np.ndarray  # int64 [K]
    budget: ResidualBudget


class TransferBatch(Sequence[Any]):
    """The `Transfer`s of a batch, each made from the batch arrays when first read."""

    def __init__(self, batch: Batch) -> None:
        self._b = batch
        self._made: list[Any] = [None] * int(batch.out_off.shape[0] - 1)
        self._rows: list[tuple[Any, ...]] | None = None  # per-sequence figures as Python values

    def _figures(self) -> list[tuple[Any, ...]]:
        """Every sequence's residual figures, converted from numpy once for the batch."""
        if self._rows is None:
            b = self._b
            cols = (
                b.out_off[:-1], b.out_off[1:], b.exact, b.n_src, b.eos, b.add_eos, b.n_bytes,
                b.spans, b.one, b.nm_bytes, b.widest, b.most, b.orphan, b.unk, b.dropped,
                b.lossy, b.invalid,
            )  # fmt: skip
            self._rows = list(zip(*(c.tolist() for c in cols), strict=True))
        return self._rows

    def __len__(self) -> int:
        return len(self._made)

    @overload
    def __getitem__(self, i: int) -> Any: ...
    @overload
    def __getitem__(self, i: slice) -> list[Any]: ...
    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        t = self._made[i]
        if t is None:
            t = self._made[i] = self._make(i)
        return t

    def __iter__(self) -> Iterator[Any]:
        return (self[i] for i in range(len(self)))

    def _make(self, i: int) -> Any:
        b = self._b
        (lo, hi, exact, n_src, eos_in, eos, n_bytes, spans, one, nm_bytes, widest, most, orphan,
         unk, dropped, lossy, invalid) = self._figures()[i]  # fmt: skip
        problems: list[str] = []
        if orphan:
            problems.append("peer tokens with no receiver token (their log-prob has no home)")
        if eos_in and not eos:
            problems.append("peer EOS has no receiver EOS role")
        m = hi - lo
        eos = int(eos)
        residual = Residual(
            exact=exact and not problems and unk == 0,
            src_tokens=n_src + int(eos_in),
            dst_tokens=m,
            n_bytes=n_bytes,
            spans=spans + eos,
            one_to_one_share=(one + eos) / m if m else 1.0,
            nm_byte_share=float(nm_bytes) / n_bytes if n_bytes else 0.0,
            longest_span_bytes=widest,
            longest_span_tokens=max(most, eos),
            lossy_bytes=lossy,
            invalid_utf8_bytes=invalid,
            unk_tokens=unk,
            dropped_special=dropped,
            problems=tuple(problems),
        )
        adv: float | np.ndarray | None = None
        if b.advantages is not None:
            adv = float(b.advantages[i]) if b.scalar_adv else b.advantages[lo:hi]
        reason = b.budget.check(residual)
        return Transfer(
            ids=b.ids[lo:hi],
            logprobs=None if b.logprobs is None else b.logprobs[lo:hi],
            loss_mask=b.loss_mask[lo:hi],
            advantages=adv,
            token_rewards=None if b.token_rewards is None else b.token_rewards[lo:hi],
            residual=residual,
            rejected=bool(reason),
            reason=reason,
        )
