"""Weights by collective: a policy's learner and its engines in one torch.distributed group.

On GPU hosts the fastest way from a learner to engines on other devices is a broadcast inside
a process group (NCCL over NVLink or InfiniBand; gloo on CPU), not a store. The log stays the
source of truth: the learner appends `WeightsPublished` (version, full-state sha256, blobs in
the store) as always, then broadcasts the same version. A receiver checks what it received
against the event (version, and the loaded model's `weights_sha256`); a rank that missed the
broadcast (not in the group when it ran, joined later, or received something else) loads the
version from the store through `WeightsIO`, so no rank ever depends on having been there.

Wire format of one version, all in the group's collectives, in this order:

1. a header, `int64 [3 + 32]`: version, number of tensors N, total bytes, then the 32 bytes
   of the model checksum (`weights_sha256`) one per element;
2. the byte size of each tensor, `int64 [N]`;
3. every tensor of the state dict, in name order (a tied tensor once), as its raw bytes,
   broadcast in place into the receiver's own parameter (no staging copy).

Group membership is the caller's: every process of the world calls `dist.new_group` with the
same ranks (torch requires it), e.g. from the log's slot assignments, which every rank folds
the same way. This module needs only a group and the source rank.
"""

from __future__ import annotations

from typing import Any

from mrl_actors.errors import WeightsError
from mrl_actors.events import WeightsPublished
from mrl_actors.logs import get_logger

_HEADER = 3 + 32
_log = get_logger(__name__)


def _unique_tensors(model: Any) -> list[tuple[str, Any]]:
    """The state dict in name order, each storage once (tied weights share one)."""
    seen: set[int] = set()
    out = []
    for name, t in sorted(model.state_dict().items()):
        key = t.data_ptr()
        if key in seen and t.numel():
            continue
        seen.add(key)
        out.append((name, t))
    return out


class WeightsBroadcast:
    """One policy's weights channel in a torch.distributed `group` whose `src` is the learner."""

    def __init__(self, group: Any = None, src: int = 0, device: str = "cpu") -> None:
        self.group = group
        self.src = src  # global rank of the learner
        self.device = device  # where header tensors live: "cuda" for NCCL, "cpu" for gloo

    def _header(self, version: int = 0, tensors: int = 0, size: int = 0, sha: str = "") -> Any:
        import torch

        h = torch.zeros(_HEADER, dtype=torch.int64, device=self.device)
        if sha:
            digest = bytes.fromhex(sha)
            h[:3] = torch.tensor([version, tensors, size], dtype=torch.int64)
            h[3:] = torch.tensor(list(digest), dtype=torch.int64)
        return h

    def send(self, ev: WeightsPublished, model: Any) -> None:
        """Broadcast `model` as version `ev.version` (the learner, after appending `ev`)."""
        import torch
        import torch.distributed as dist

        items = _unique_tensors(model)
        sizes = [t.numel() * t.element_size() for _, t in items]
        header = self._header(ev.version, len(items), sum(sizes), ev.weights_sha256)
        dist.broadcast(header, self.src, group=self.group)
        dist.broadcast(
            torch.tensor(sizes, dtype=torch.int64, device=self.device), self.src, group=self.group
        )
        with torch.no_grad():
            for _, t in items:
                dist.broadcast(_flat_bytes(t.detach().contiguous()), self.src, group=self.group)

    def receive(self, model: Any) -> tuple[int, str]:
        """Receive the next broadcast into `model`'s own tensors; its (version, checksum) as the
        learner announced them. The model holds the received weights even when the caller
        then finds they are not the version it needs. A broadcast of another architecture is
        received to its end (or every rank would hang) and then refused (`WeightsError`)."""
        import torch
        import torch.distributed as dist

        items = _unique_tensors(model)
        header = self._header()
        dist.broadcast(header, self.src, group=self.group)
        version, count, _ = (int(x) for x in header[:3].tolist())
        sha = bytes(int(x) for x in header[3:].tolist()).hex()
        sizes_t = torch.zeros(max(count, 0), dtype=torch.int64, device=self.device)
        dist.broadcast(sizes_t, self.src, group=self.group)
        sizes = [int(x) for x in sizes_t.tolist()]
        mine = [t.numel() * t.element_size() for _, t in items]
        with torch.no_grad():
            if sizes != mine:
                for n in sizes:  # [n] bytes each, dropped
                    scratch = torch.empty(n, dtype=torch.uint8, device=self.device)
                    dist.broadcast(scratch, self.src, group=self.group)
                raise WeightsError(
                    f"broadcast v{version} has {count} tensors ({sum(sizes)} bytes); this "
                    f"model has {len(items)} ({sum(mine)} bytes): not the same architecture"
                )
            for _, t in items:
                if t.is_contiguous():
                    dist.broadcast(_flat_bytes(t.data), self.src, group=self.group)
                else:  # rare (a transposed buffer): receive beside it, then copy
                    tmp = t.detach().contiguous()
                    dist.broadcast(_flat_bytes(tmp), self.src, group=self.group)
                    t.copy_(tmp)
        return version, sha


def _flat_bytes(t: Any) -> Any:
    """`t`'s storage as a flat uint8 tensor (same memory): one wire dtype for every tensor."""
    import torch

    return t.reshape(-1).view(torch.uint8)


def received_is(ev: WeightsPublished, got: tuple[int, str] | None, model: Any) -> bool:
    """Whether `model`, after a broadcast that announced `got`, holds exactly `ev`'s weights
    (its version, and the model's checksum equal to the event's: the log decides)."""
    from mrl_actors.models.load import weights_sha256

    if got is None or got != (ev.version, ev.weights_sha256):
        return False
    return bool(weights_sha256(model) == ev.weights_sha256)


async def receive_or_load(
    channel: WeightsBroadcast | None, ev: WeightsPublished, model: Any, wio: Any
) -> str:
    """Bring `model` to `ev` by broadcast when this rank takes part in it, else (or when what
    arrived is not `ev`) from the store; "broadcast" or "store", whichever it was.

    `channel` None: this rank is not in the group that broadcast `ev` (it missed it)."""
    import anyio

    got = None
    if channel is not None:
        try:
            got = await anyio.to_thread.run_sync(channel.receive, model)
        except WeightsError as exc:
            _log.warning("broadcast_unusable", version=ev.version, error=str(exc)[:200])
    if got is not None and await anyio.to_thread.run_sync(received_is, ev, got, model):
        return "broadcast"
    if got is not None:
        _log.warning("broadcast_not_the_logged_version", version=ev.version, got=got[0])
    await wio.load(ev, model)
    return "store"
