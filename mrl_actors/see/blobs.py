"""Claim-check storage for events too large for one JetStream message.

An encoded event above the server's max payload is stored here under its sha256 and the stream
gets a `BlobPointer` with that hash; `get` checks the hash of whatever comes back, so a corrupted
or substituted blob is caught on read (`BlobIntegrityError`), never applied. Keys are content
hashes, so storing the same bytes twice (a retried publish) is harmless.

Two backends share the `BlobStore` protocol: the JetStream object store (default: lives next to
the stream, replicated with it) and a zarr directory (a plain filesystem copy for analysis tools).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Protocol

import anyio
import numpy as np

from mrl_actors.errors import BlobIntegrityError, LogError
from mrl_actors.events import BlobRef


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify(ref: BlobRef, data: bytes) -> bytes:
    """Return `data` when its size and sha256 match `ref`, else raise `BlobIntegrityError`."""
    digest = sha256_hex(data)
    if digest != ref.sha256 or len(data) != ref.size:
        raise BlobIntegrityError(
            f"blob {ref.store}:{ref.key} has sha256 {digest[:16]}… ({len(data)} bytes), "
            f"its event says {ref.sha256[:16]}… ({ref.size} bytes); the blob was altered"
        )
    return data


class BlobStore(Protocol):
    async def put(self, data: bytes) -> BlobRef: ...

    async def get(self, ref: BlobRef) -> bytes:
        """The verified bytes of `ref` (raises `BlobIntegrityError` on a hash mismatch)."""
        ...


def bucket_name(run: str) -> str:
    return f"MRL_{run}_BLOBS"


class ObjectStoreBlobs:
    """Blobs in a JetStream object store bucket (`MRL_<run>_BLOBS`)."""

    def __init__(self, js: Any, run: str, *, replicas: int = 1, timeout_s: float = 30.0) -> None:
        self._js = js
        self._bucket = bucket_name(run)
        self._replicas = replicas
        self._timeout_s = timeout_s  # a read of a blob whose chunks vanish mid-way would not end
        self._store: Any = None

    async def _obj(self) -> Any:
        if self._store is None:
            from nats.js.errors import NotFoundError

            from mrl_actors.see.objstore import create_blob_bucket, open_blob_bucket

            try:  # a write-once store whose stream refuses rollups (see.objstore)
                self._store = await open_blob_bucket(self._js, self._bucket)
            except NotFoundError:
                self._store = await create_blob_bucket(
                    self._js, self._bucket, replicas=self._replicas
                )
        return self._store

    async def put(self, data: bytes) -> BlobRef:
        from nats.js.errors import NotFoundError

        key = sha256_hex(data)
        ref = BlobRef(store="object", key=key, sha256=key, size=len(data))
        store = await self._obj()
        try:  # stored already (a retried publish): overwriting would purge, a right writers lack
            info = await store.get_info(key)
            if not info.deleted and info.size == len(data):
                return ref
        except NotFoundError:
            pass
        await store.put(key, data)
        return ref

    async def get(self, ref: BlobRef) -> bytes:
        import anyio
        from nats.js.errors import DigestMismatchError, NotFoundError

        store = await self._obj()
        try:
            with anyio.fail_after(self._timeout_s):
                result = await store.get(ref.key)
        except NotFoundError as exc:
            raise LogError(f"blob {ref.key} not found in bucket {self._bucket}") from exc
        except TimeoutError as exc:
            raise LogError(
                f"blob {ref.key}: no complete read from bucket {self._bucket} within "
                f"{self._timeout_s:.0f} s"
            ) from exc
        except DigestMismatchError as exc:  # a torn object: the store's own digest disagrees
            raise BlobIntegrityError(f"blob {ref.key}: object store digest mismatch") from exc
        return verify(ref, bytes(result.data or b""))

    async def put_raw(self, key: str, data: bytes) -> None:
        """Overwrite the bytes under `key` without hashing: for corruption tests and repair."""
        store = await self._obj()
        await store.replace(key, data)


_KEY = re.compile(r"^[0-9a-f]{64}$")


class ZarrBlobs:
    """Blobs as 1-D uint8 zarr arrays under a directory, one array per sha256."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise LogError(f"blob key {key!r} is not a sha256 hex digest")
        return self.root / key[:2] / key

    def _write(self, key: str, data: bytes) -> None:
        import zarr

        arr = np.frombuffer(data, dtype=np.uint8)
        z = zarr.create_array(
            store=str(self._path(key)),
            shape=arr.shape,
            dtype="uint8",
            chunks=(max(1, min(len(arr), 4 * 1024 * 1024)),),
            overwrite=True,
        )
        z[:] = arr

    def _read(self, key: str) -> bytes:
        import zarr

        path = self._path(key)
        if not path.exists():
            raise LogError(f"blob {key} not found under {self.root}")
        z = zarr.open_array(store=str(path), mode="r")
        return bytes(np.asarray(z[:], dtype=np.uint8).tobytes())

    async def put(self, data: bytes) -> BlobRef:
        key = sha256_hex(data)
        if not self._path(key).exists():
            await anyio.to_thread.run_sync(self._write, key, data)
        return BlobRef(store="zarr", key=key, sha256=key, size=len(data))

    async def get(self, ref: BlobRef) -> bytes:
        data = await anyio.to_thread.run_sync(self._read, ref.key)
        return verify(ref, data)

    async def put_raw(self, key: str, data: bytes) -> None:
        await anyio.to_thread.run_sync(self._write, key, data)
