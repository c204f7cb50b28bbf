"""Weights blobs as plain files: a shared directory, or a memory map on one host.

Both keep one file per blob, named by its sha256 (`<root>/<aa>/<sha256>`), written to a
temporary name in chunks (hashed in the same pass), fsynced and renamed, so a reader never sees
a half-written blob and a retried write of the same bytes is a no-op.

- `DirBlobs` (`[weights] store = "dir"`): hosts that mount one filesystem. `get` reads the file
  into one preallocated buffer in chunks, hashing as it goes.
- `MmapBlobs` (`store = "mmap"`): one host. `get` maps the file read-only and hashes the map;
  every local reader maps the same pages of the page cache, so ten rollout actors hold the
  version once (plus each model's own parameters), not ten times.

The sha256 of what was read is checked against the event's reference on every `get`.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import re
import secrets
from pathlib import Path
from typing import Literal

import anyio

from mrl_actors.errors import BlobIntegrityError, LogError
from mrl_actors.events import BlobRef
from mrl_actors.see.blobs import BlobData, fresh_buffer

IO_CHUNK = 16 * 1024 * 1024  # one read or write call: large enough to amortise, small to hash
_KEY = re.compile(r"^[0-9a-f]{64}$")


def _mismatch(ref: BlobRef, digest: str, size: int) -> BlobIntegrityError:
    return BlobIntegrityError(
        f"blob {ref.store}:{ref.key} has sha256 {digest[:16]}… ({size} bytes), its event "
        f"says {ref.sha256[:16]}… ({ref.size} bytes); the blob was altered"
    )


class DirBlobs:
    """Blobs as files under `root` (a directory shared by the run's hosts)."""

    kind: Literal["dir", "mmap"] = "dir"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise LogError(f"blob key {key!r} is not a sha256 hex digest")
        return self.root / key[:2] / key

    # ------------------------------------------------------------------ write

    async def put(self, data: BlobData, *, sha256: str | None = None, writer: str = "") -> BlobRef:
        """Store `data` under its sha256 (`writer` is the object store's: one directory holds
        every policy's files, whose rights are the filesystem's)."""
        return await anyio.to_thread.run_sync(self.put_sync, data, sha256)

    def put_sync(self, data: BlobData, sha256: str | None = None) -> BlobRef:
        view = memoryview(data).cast("B")
        if sha256 is not None:
            path = self.path(sha256)
            if path.exists() and path.stat().st_size == len(view):
                return BlobRef(store=self.kind, key=sha256, sha256=sha256, size=len(view))
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{os.getpid()}-{secrets.token_hex(6)}"
        h = hashlib.sha256()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                for off in range(0, len(view), IO_CHUNK):
                    chunk = view[off : off + IO_CHUNK]
                    h.update(chunk)  # [chunk] hashed in the same pass as it is written
                    done = 0
                    while done < len(chunk):
                        done += os.write(fd, chunk[done:])
                os.fsync(fd)
            finally:
                os.close(fd)
            digest = h.hexdigest()
            if sha256 is not None and digest != sha256:
                raise BlobIntegrityError(
                    f"blob for {self.root}: bytes hash to {digest[:16]}…, the writer said "
                    f"{sha256[:16]}…; not stored"
                )
            path = self.path(digest)
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, path)  # atomic: readers see the whole blob or none
            _fsync_dir(path.parent)
        finally:
            tmp.unlink(missing_ok=True)
        return BlobRef(store=self.kind, key=digest, sha256=digest, size=len(view))

    # ------------------------------------------------------------------ read

    async def get(self, ref: BlobRef) -> bytes:
        return bytes(await self.get_buffer(ref))

    async def get_buffer(self, ref: BlobRef) -> BlobData:
        """The verified bytes of `ref`: a fresh buffer read in chunks (a read-only map for mmap)."""
        return await anyio.to_thread.run_sync(self.get_sync, ref)

    def get_sync(self, ref: BlobRef) -> BlobData:
        buf = fresh_buffer(ref.size)
        self.read_into(ref, memoryview(buf))
        return buf

    def read_into(self, ref: BlobRef, out: memoryview) -> None:
        """Read `ref` into `out` (exactly its size), hashing each chunk as it lands."""
        path = self._existing(ref)
        h = hashlib.sha256()
        got = 0
        with open(path, "rb", buffering=0) as f:
            while got < len(out):
                n = f.readinto(out[got : got + IO_CHUNK])
                if not n:
                    break
                h.update(out[got : got + n])
                got += n
            extra = f.read(1)
        if got != ref.size or extra or h.hexdigest() != ref.sha256:
            raise _mismatch(ref, h.hexdigest(), got + len(extra))

    def _existing(self, ref: BlobRef) -> Path:
        path = self.path(ref.key)
        if not path.exists():
            raise LogError(f"blob {ref.key} not found under {self.root}")
        return path

    async def delete(self, ref: BlobRef) -> None:
        self.path(ref.key).unlink(missing_ok=True)

    async def put_raw(self, ref: BlobRef, data: bytes) -> None:
        """Overwrite the file of `ref` without hashing: for corruption tests."""
        path = self.path(ref.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


class MmapBlobs(DirBlobs):
    """Blobs as files under `root` on this host, read through a shared read-only memory map."""

    kind: Literal["dir", "mmap"] = "mmap"

    def get_sync(self, ref: BlobRef) -> BlobData:
        path = self._existing(ref)
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size != ref.size:
                raise _mismatch(ref, "?" * 16, size)
            if size == 0:
                return memoryview(b"")
            m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)  # stays valid after close
        view = memoryview(m)
        h = hashlib.sha256()
        for off in range(0, size, IO_CHUNK):  # faults the pages in once, for every reader
            h.update(view[off : off + IO_CHUNK])
        if h.hexdigest() != ref.sha256:
            view.release()
            m.close()
            raise _mismatch(ref, h.hexdigest(), size)
        return view

    def read_into(self, ref: BlobRef, out: memoryview) -> None:
        view = self.get_sync(ref)
        out[:] = view


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
