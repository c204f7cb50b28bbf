"""Weights and learner checkpoints in a blob store, announced by events.

An asynchronous learner publishes every version it makes as `WeightsPublished`: the safetensors
bytes of its state dict (`models.safetensors_io`: one copy per tensor, hashed in the same pass)
go to the store the spec's `[weights]` table names, keyed by their sha256: the run's JetStream
object store (default), a shared directory, or a memory-mapped file on one host
(`models.transport_files`). A version may be a delta against the last full one
(`models.delta`). The event carries the blob references, the sha256 of the full state and the
checksum of the model that holds them. A rollout actor on any host loads a version from its
event alone and checks every hash before it samples with it: a blob that was altered, or that
loads into different weights, is refused. Versions that neither a resume nor a lagging rollout
actor needs are deleted (`[weights] keep`). On GPU hosts a version may also travel by a
torch.distributed broadcast (`models.broadcast`); the event and its hashes stay the truth.

Checkpoints (`CheckpointStored`) add the optimizer's state, so a learner restarts on any host from
the newest one and replays only the log's tail. The GRPO step draws no random numbers and the
data position is the log itself (the sequences each step consumed), so weights plus AdamW state
is the learner's whole state.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from mrl_actors.errors import BlobIntegrityError, LogError, WeightsError
from mrl_actors.events import BlobRef, CheckpointStored, WeightsPublished, event_id
from mrl_actors.logs import get_logger
from mrl_actors.models.load import weights_sha256
from mrl_actors.see.blobs import BlobStore, sha256_hex

if TYPE_CHECKING:
    from mrl_actors.models.weights_config import WeightsConfig


class BlobLog(Protocol):
    """What this module needs of a log: its run id and its blob store."""

    run: str
    blobs: BlobStore


# ------------------------------------------------------------------ bytes


def state_bytes(model: Any) -> bytearray:
    """The model's state dict as safetensors bytes (one copy of each tensor, tied ones twice:
    safetensors refuses shared storage, and loading writes both with the same values)."""
    return state_bytes_hashed(model)[0]


def state_bytes_hashed(model: Any) -> tuple[bytearray, str]:
    """`state_bytes` and their sha256, hashed in the same pass."""
    from mrl_actors.models.safetensors_io import write_state

    buf, sha = write_state(model)
    assert isinstance(buf, bytearray)
    return buf, sha


def load_state_bytes(model: Any, data: Any) -> None:
    """Load safetensors bytes (any buffer) into `model` (every tensor it has, no more, no
    fewer), copying each tensor once, straight from the buffer into its parameter."""
    from mrl_actors.models.safetensors_io import load_buffer

    try:
        load_buffer(model, data)
    except WeightsError:
        raise
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise WeightsError(f"weights blob does not load into the model: {str(exc)[:300]}") from exc


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


def _itemsize(model: Any) -> int:
    """The shuffle width of a delta: the widest floating dtype of the state (bf16: 2, fp32: 4)."""
    sizes = [t.element_size() for t in model.state_dict().values() if t.is_floating_point()]
    return max(sizes, default=4)


class WeightsIO:
    """One actor's view of its policy's weights versions: where they are stored (the spec's
    `[weights]` table), the full version deltas are taken against, and what is deleted.

    A learner `publish`es each version: a full one every `full_every` (and whenever it has no
    base in memory, e.g. after a restart), else a delta against the last full one when that
    is smaller. A reader `load`s a version from its event alone, keeping the last full version
    it fetched so a delta costs one blob; every hash is checked, and last the loaded model's
    checksum against the event's.
    """

    def __init__(
        self,
        log: BlobLog,
        config: WeightsConfig | None = None,
        root: str | Path | None = None,
        policy: str = "",
    ) -> None:
        from mrl_actors.models.weights_config import WeightsConfig

        self.log = log
        self.config = config or WeightsConfig()
        self.policy = policy
        self._root = Path(self.config.dir) if self.config.dir else (Path(root) if root else None)
        self._stores: dict[str, Any] = {}
        # the writer's last full version (version, sha256, bytes) and its blob, which deltas
        # are taken against; and, apart, the last full version this reader fetched
        self._base: tuple[int, str, Any] | None = None
        self._base_ref: BlobRef | None = None
        self._read_base: tuple[str, Any] | None = None  # (sha256, full bytes)
        self._deleted: set[str] = set()  # blob keys retention has deleted
        self._cannot_delete = False
        self._log = get_logger(__name__, run=log.run, policy=policy)

    @classmethod
    def of(cls, log: BlobLog, spec: Any, run_dir: str | Path | None, policy: str) -> WeightsIO:
        """For `policy` of `spec` (a `RunSpec`), run directory `run_dir` (mmap's default root)."""
        root = Path(run_dir) / "weights" if run_dir is not None else None
        return cls(log, spec.weights, root, policy)

    # ------------------------------------------------------------------ stores

    def store(self, kind: str) -> Any:
        """The store holding refs of `kind` ("object"/"zarr": the log's; "dir", "mmap")."""
        if kind in ("object", "zarr"):
            return self.log.blobs
        if kind not in self._stores:
            from mrl_actors.models.transport_files import DirBlobs, MmapBlobs

            if self._root is None:
                raise WeightsError(
                    f"weights in a {kind!r} store but no directory: set [weights] dir, or "
                    "give the actor its run directory"
                )
            self._stores[kind] = (MmapBlobs if kind == "mmap" else DirBlobs)(self._root)
        return self._stores[kind]

    async def _put(self, data: Any, sha: str) -> BlobRef:
        store = self.store(self.config.store)
        if self.config.store == "object" and not hasattr(store, "get_into"):
            return await store.put(bytes(data), writer=self.policy)  # a zarr log: bytes in
        # the object store: into this policy's own bucket, the one its users may write
        return await store.put(data, sha256=sha, writer=self.policy)

    async def get(self, ref: BlobRef, what: str) -> Any:
        """The verified bytes of `ref`; a hash mismatch or a missing blob is a `WeightsError`."""
        store = self.store(ref.store)
        try:
            if hasattr(store, "get_buffer"):  # the bytes as read, no copy (a map for mmap)
                return await store.get_buffer(ref)
            return await store.get(ref)
        except (BlobIntegrityError, LogError) as exc:
            raise WeightsError(f"{what}: {exc}") from exc

    # ------------------------------------------------------------------ write

    async def publish(self, version: int, model: Any, sha: str) -> WeightsPublished:
        """Store `model`'s state (whose checksum is `sha`) as `version`; the event announcing
        it (not yet appended)."""
        data, data_sha = await anyio.to_thread.run_sync(state_bytes_hashed, model)
        itemsize = await anyio.to_thread.run_sync(_itemsize, model)
        return await self.announce(version, data, sha, data_sha=data_sha, itemsize=itemsize)

    async def announce(
        self,
        version: int,
        data: Any,
        sha: str,
        *,
        data_sha: str | None = None,
        itemsize: int = 4,
    ) -> WeightsPublished:
        """Store `data` (`state_bytes` of a model whose checksum is `sha`) as `version`."""
        from mrl_actors.models.delta import make_delta

        if data_sha is None:
            data_sha = await anyio.to_thread.run_sync(sha256_hex, data)
        base_version, base_ref, ref = -1, None, None
        full = version % self.config.full_every == 0 or self._base is None
        if not full and self._base is not None and self._base_ref is not None:
            bv, bsha, bdata = self._base
            delta = await anyio.to_thread.run_sync(
                lambda: make_delta(bdata, data, bsha, itemsize=itemsize)
            )
            if delta is not None:
                ref = await self._put(delta, sha256_hex(delta))
                base_version = bv
                base_ref = self._base_ref
        if ref is None:
            ref = await self._put(data, data_sha)
            if self.config.full_every > 1:
                self._base = (version, data_sha, data)
                self._base_ref = ref
        return WeightsPublished(
            run=self.log.run,
            source=self.policy,
            event_id=weights_event_id(self.log.run, self.policy, version),
            time_ns=time.time_ns(),
            policy=self.policy,
            version=version,
            weights_sha256=sha,
            blob=ref,
            base_version=base_version,
            base=base_ref,
            state_sha256=data_sha,
        )

    # ------------------------------------------------------------------ read

    async def state(self, blob: BlobRef, base: BlobRef | None, state_sha: str, what: str) -> Any:
        """The full safetensors bytes of a version: `blob`, or `base` with delta `blob`."""
        from mrl_actors.models.delta import apply_delta

        if base is None:
            data = await self.get(blob, what)
            if self.config.full_every > 1:
                self._read_base = (blob.sha256, data)
            return data
        if self._read_base is not None and self._read_base[0] == base.sha256:
            full = self._read_base[1]
        else:
            full = await self.get(base, f"{what} (its full version)")
            self._read_base = (base.sha256, full)
        delta = await self.get(blob, what)
        out = await anyio.to_thread.run_sync(apply_delta, full, delta)
        got = await anyio.to_thread.run_sync(sha256_hex, out)
        if got != state_sha:
            raise WeightsError(
                f"{what}: the delta applied to its full version hashes to {got[:12]}, the "
                f"event says {state_sha[:12]}"
            )
        return out

    async def load(self, ev: WeightsPublished, model: Any) -> None:
        """Load `ev`'s weights into `model` and check they are the announced ones.

        On any failure `model` may hold a mix: the caller reloads a version it trusts (a rollout
        actor fetches its current version again for that).
        """
        from mrl_actors.models.load import weights_sha256

        what = f"{ev.policy} weights v{ev.version}"
        data = await self.state(ev.blob, ev.base, ev.state_sha256, what)
        await anyio.to_thread.run_sync(load_state_bytes, model, data)
        del data
        sha = await anyio.to_thread.run_sync(weights_sha256, model)
        if sha != ev.weights_sha256:
            raise WeightsError(
                f"{what}: loaded weights have sha256 {sha[:12]}, the event says "
                f"{ev.weights_sha256[:12]}"
            )

    # ------------------------------------------------------------------ retention

    def needed(
        self, weights: dict[int, WeightsPublished], stored: dict[int, CheckpointStored]
    ) -> set[int]:
        """Versions to keep: the newest `keep`, version 0 and the newest checkpoint's."""
        versions = sorted(weights)
        if not self.config.keep or not versions:
            return set(versions)
        keep = {0, *versions[-self.config.keep :]}
        if stored:
            keep.add(max(stored))
        return keep & set(versions)

    async def retain(
        self, weights: dict[int, WeightsPublished], stored: dict[int, CheckpointStored]
    ) -> int:
        """Delete the blobs of versions no longer needed (and no kept version's base); the
        number deleted. A store that refuses deletion (no right to purge) is warned about once
        and left alone."""
        if not self.config.keep or self._cannot_delete:
            return 0
        keep = self.needed(weights, stored)
        live: set[str] = set()
        for v in keep:
            live.add(weights[v].blob.key)
            base = weights[v].base
            if base is not None:
                live.add(base.key)
        for ck in stored.values():  # a checkpoint's optimizer is not a weights blob
            live.add(ck.optimizer.key)
        gone = 0
        for v, ev in sorted(weights.items()):
            ref = ev.blob
            if v in keep or ref.key in live or ref.key in self._deleted:
                continue
            try:
                await self.store(ref.store).delete(ref)
            except Exception as exc:  # a refused purge (nats-py's own errors), a read-only FS
                self._cannot_delete = True
                self._log.warning(
                    "weights_retention_refused", store=ref.store, error=str(exc)[:200]
                )
                return gone
            self._deleted.add(ref.key)
            gone += 1
        if gone:
            self._log.info("weights_deleted", blobs=gone, kept=sorted(keep))
        return gone


async def store_weights(
    log: BlobLog, policy: str, version: int, model: Any, sha: str
) -> WeightsPublished:
    """Put the model's bytes in the log's blob store; the event announcing them (not appended)."""
    return await WeightsIO(log, policy=policy).publish(version, model, sha)


async def announce(
    log: BlobLog, policy: str, version: int, data: Any, sha: str
) -> WeightsPublished:
    """Put `data` (`state_bytes` of a model whose checksum is `sha`) in the log's blob store;
    the event announcing it (not yet appended)."""
    return await WeightsIO(log, policy=policy).announce(version, data, sha)


async def fetch(log: BlobLog, ref: BlobRef, what: str) -> Any:
    """The verified bytes of `ref` in the log's store; a mismatch or absence is a `WeightsError`."""
    return await WeightsIO(log).get(ref, what)


async def load_weights(
    log: BlobLog, ev: WeightsPublished, model: Any, io: WeightsIO | None = None
) -> None:
    """Load `ev`'s weights into `model` and check they are the announced ones (`WeightsIO.load`)."""
    await (io or WeightsIO(log, policy=ev.policy)).load(ev, model)


async def store_checkpoint(
    log: BlobLog,
    policy: str,
    step: int,
    learner: Any,
    weights: WeightsPublished,
    io: WeightsIO | None = None,
) -> CheckpointStored:
    """The learner's optimizer state in the log's blob store, next to its weights at `step`."""
    data = await anyio.to_thread.run_sync(optimizer_bytes, learner.optimizer)
    ref = await log.blobs.put(data, writer=policy)
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
        weights_base=weights.base,
        weights_state_sha256=weights.state_sha256,
    )


async def restore_checkpoint(
    log: BlobLog, ev: CheckpointStored, learner: Any, io: WeightsIO | None = None
) -> None:
    """Bring `learner` to `ev.step`: weights, optimizer state and version (checked)."""
    io = io or WeightsIO(log, policy=ev.policy)
    what = f"{ev.policy} checkpoint step {ev.step}"
    weights = await io.state(ev.weights, ev.weights_base, ev.weights_state_sha256, what)
    optim = await io.get(ev.optimizer, what)
    await anyio.to_thread.run_sync(load_state_bytes, learner.model, weights)
    del weights
    await anyio.to_thread.run_sync(load_optimizer_bytes, learner.optimizer, bytes(optim))
    sha = await anyio.to_thread.run_sync(weights_sha256, learner.model)
    if sha != ev.weights_sha256:
        raise WeightsError(f"{what}: restored weights {sha[:12]} != {ev.weights_sha256[:12]}")
    learner.version = ev.step
