"""Weights and learner checkpoints through the run's blob store, announced by events.

An asynchronous learner publishes every version it makes as `WeightsPublished`: the safetensors
bytes of its state dict go to the run's blob store (the JetStream object store by default, which
chunks them; a shared directory with `LogConfig.blob_store = "zarr"`), keyed by their sha256, and
the event carries the reference plus the checksum of the model that holds them. A rollout actor
on any host loads a version from its event alone and checks both hashes before it samples with
it: a blob that was altered, or that loads into different weights, is refused.

Checkpoints (`CheckpointStored`) add the optimizer's state, so a learner restarts on any host from
the newest one and replays only the log's tail. The GRPO step draws no random numbers and the
data position is the log itself (the sequences each step consumed), so weights plus AdamW state
is the learner's whole state.
"""

from __future__ import annotations

import io
import time
from typing import Any, Protocol

from mrl_actors.errors import BlobIntegrityError, LogError, WeightsError
from mrl_actors.events import BlobRef, CheckpointStored, WeightsPublished, event_id
from mrl_actors.models.load import weights_sha256
from mrl_actors.see.blobs import BlobStore


class BlobLog(Protocol):
    """What this module needs of a log: its run id and its blob store."""

    run: str
    blobs: BlobStore


# ------------------------------------------------------------------ bytes


def state_bytes(model: Any) -> bytes:
    """The model's state dict as safetensors bytes.

    Tensors are copied so that tied ones (an embedding shared with the output layer) are saved
    as two entries: safetensors refuses shared storage, and loading writes both with the same
    values, which is what the tie holds anyway.
    """
    from safetensors.torch import save

    tensors = {k: t.detach().to("cpu").contiguous().clone() for k, t in model.state_dict().items()}
    return bytes(save(tensors))


def load_state_bytes(model: Any, data: bytes) -> None:
    """Load safetensors bytes into `model` (every tensor it has, no more, no fewer)."""
    from safetensors.torch import load

    try:
        tensors = load(data)
    except Exception as exc:  # bytes that passed the hash but are not safetensors: say so
        raise WeightsError(f"weights blob is not a safetensors state dict: {exc}") from exc
    try:
        model.load_state_dict(tensors, strict=True)
    except (RuntimeError, KeyError) as exc:
        raise WeightsError(f"weights blob does not fit the model: {str(exc)[:300]}") from exc


def optimizer_bytes(optimizer: Any) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(optimizer.state_dict(), buf)
    return buf.getvalue()


def load_optimizer_bytes(optimizer: Any, data: bytes) -> None:
    import torch

    try:  # weights_only: tensors and plain containers, never arbitrary pickled code
        state = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
        optimizer.load_state_dict(state)
    except Exception as exc:
        raise WeightsError(f"optimizer blob does not load: {str(exc)[:300]}") from exc


# ------------------------------------------------------------------ events


def weights_event_id(run: str, policy: str, version: int) -> str:
    return event_id("weights", run, policy, version)


async def store_weights(
    log: BlobLog, policy: str, version: int, model: Any, sha: str
) -> WeightsPublished:
    """Put the model's bytes in the blob store; the event announcing them (not yet appended)."""
    import anyio

    data = await anyio.to_thread.run_sync(state_bytes, model)
    return await announce(log, policy, version, data, sha)


async def announce(
    log: BlobLog, policy: str, version: int, data: bytes, sha: str
) -> WeightsPublished:
    """Put `data` (`state_bytes` of a model whose checksum is `sha`) in the blob store; the
    event announcing it (not yet appended)."""
    ref = await log.blobs.put(data)
    return WeightsPublished(
        run=log.run,
        source=policy,
        event_id=weights_event_id(log.run, policy, version),
        time_ns=time.time_ns(),
        policy=policy,
        version=version,
        weights_sha256=sha,
        blob=ref,
    )


async def fetch(log: BlobLog, ref: BlobRef, what: str) -> bytes:
    """The verified bytes of `ref`; a hash mismatch or a missing blob is a `WeightsError`."""
    try:
        return await log.blobs.get(ref)
    except (BlobIntegrityError, LogError) as exc:
        raise WeightsError(f"{what}: {exc}") from exc


async def load_weights(log: BlobLog, ev: WeightsPublished, model: Any) -> None:
    """Load `ev`'s weights into `model` and check they are the announced ones.

    On any failure `model` may hold a mix: the caller reloads a version it trusts (a rollout
    actor keeps a copy of its current bytes for that).
    """
    import anyio

    what = f"{ev.policy} weights v{ev.version}"
    data = await fetch(log, ev.blob, what)
    await anyio.to_thread.run_sync(load_state_bytes, model, data)
    sha = await anyio.to_thread.run_sync(weights_sha256, model)
    if sha != ev.weights_sha256:
        raise WeightsError(
            f"{what}: loaded weights have sha256 {sha[:12]}, the event says "
            f"{ev.weights_sha256[:12]}"
        )


async def store_checkpoint(
    log: BlobLog, policy: str, step: int, learner: Any, weights: WeightsPublished
) -> CheckpointStored:
    """The learner's optimizer state in the blob store, next to its weights at `step`."""
    import anyio

    data = await anyio.to_thread.run_sync(optimizer_bytes, learner.optimizer)
    ref = await log.blobs.put(data)
    return CheckpointStored(
        run=log.run,
        source=policy,
        event_id=event_id("checkpoint", log.run, policy, "stored", step),
        time_ns=time.time_ns(),
        policy=policy,
        step=step,
        weights_sha256=weights.weights_sha256,
        weights=weights.blob,
        optimizer=ref,
    )


async def restore_checkpoint(log: BlobLog, ev: CheckpointStored, learner: Any) -> None:
    """Bring `learner` to `ev.step`: weights, optimizer state and version (checked)."""
    import anyio

    what = f"{ev.policy} checkpoint step {ev.step}"
    weights = await fetch(log, ev.weights, what)
    optim = await fetch(log, ev.optimizer, what)
    await anyio.to_thread.run_sync(load_state_bytes, learner.model, weights)
    await anyio.to_thread.run_sync(load_optimizer_bytes, learner.optimizer, optim)
    sha = await anyio.to_thread.run_sync(weights_sha256, learner.model)
    if sha != ev.weights_sha256:
        raise WeightsError(f"{what}: restored weights {sha[:12]} != {ev.weights_sha256[:12]}")
    learner.version = ev.step
