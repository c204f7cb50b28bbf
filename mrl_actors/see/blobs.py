"""Blob storage: events too large for one JetStream message, and weights versions.

An encoded event above the server's max payload is stored here under its sha256 and the stream
gets a `BlobPointer` with that hash; `get` checks the hash of whatever comes back, so a corrupted
or substituted blob is caught on read (`BlobIntegrityError`), never applied. Keys are content
hashes, so storing the same bytes twice (a retried publish) is harmless. Weights versions
(`mrl_actors.models.weights`) use the same stores, at sizes up to tens of GB: every read and
write here takes time linear in the blob's size and holds it once in memory.

Two backends share the `BlobStore` protocol: the JetStream object store (default: lives next to
the stream, replicated with it) and a zarr directory (a plain filesystem copy for analysis tools).
Weights have two more, on plain files (`mrl_actors.models.transport_files`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import mmap
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio
import numpy as np

from mrl_actors.errors import BlobIntegrityError, LogError, MrlError
from mrl_actors.events import BlobRef
from mrl_actors.logs import get_logger
from mrl_actors.see.chunk_reader import ChunkReadError

_log = get_logger(__name__)

# Bytes of a blob: `get` gives a bytearray (the object store, a shared directory) or a read-only
# memoryview (a memory map); `put` takes any flat buffer.
BlobData = bytes | bytearray | memoryview

CHUNK_BYTES = 1024 * 1024  # object-store chunk: 1 MiB measured faster than 128 KiB or 4 MiB
WINDOW = 16  # chunk publishes awaiting their ack
_HEADROOM = 8 * 1024  # subject, headers and protocol around a chunk
_PENDING_BYTES = 256 * 1024 * 1024  # what nats-py may queue for a reader before it drops


_D = TypeVar("_D", bytes, bytearray, memoryview)
_POPULATE_MIN = 16 * 1024 * 1024  # below this a bytearray costs no more


def fresh_buffer(size: int) -> bytearray | memoryview:
    """A zeroed, writable buffer of `size` bytes for a blob to be read into.

    A large one is an anonymous map whose pages the kernel allocates and zeroes in one pass
    (MAP_POPULATE, Linux) before it is returned. A bytearray of the same size takes a page fault
    per 4 KiB page and is zeroed a second time by Python; in `tools/bench_weights.py` that cost
    per byte was larger and less steady at 2 GiB than at 64 MiB, when the process already held
    the model and its state. Elsewhere (no MAP_POPULATE) it is a bytearray.
    """
    populate = getattr(mmap, "MAP_POPULATE", 0)
    if size < _POPULATE_MIN or not populate:
        return bytearray(size)
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | populate
    return memoryview(mmap.mmap(-1, size, flags=flags))  # unmapped when the view is collected


def sha256_hex(data: BlobData) -> str:
    return hashlib.sha256(data).hexdigest()


def verify(ref: BlobRef, data: _D) -> _D:
    """Return `data` when its size and sha256 match `ref`, else raise `BlobIntegrityError`."""
    digest = sha256_hex(data)
    if digest != ref.sha256 or len(data) != ref.size:
        raise BlobIntegrityError(
            f"blob {ref.store}:{ref.key} has sha256 {digest[:16]}… ({len(data)} bytes), "
            f"its event says {ref.sha256[:16]}… ({ref.size} bytes); the blob was altered"
        )
    return data


class BlobStore(Protocol):
    async def put(self, data: bytes, *, writer: str = "") -> BlobRef:
        """Store `data` for `writer` (the policy whose bucket holds it, in the object store)."""
        ...

    async def get(self, ref: BlobRef) -> bytes:
        """The verified bytes of `ref` (raises `BlobIntegrityError` on a hash mismatch)."""
        ...


def bucket_name(run: str, writer: str = "") -> str:
    """The object-store bucket of `writer`'s blobs in `run`: each policy has its own, which
    only its users may write (`mrl_actors.see.auth`); `""` is the one bucket a run shared
    before that, read (never written) for older runs."""
    return f"MRL_{run}_BLOBS_{writer}" if writer else f"MRL_{run}_BLOBS"


def blob_stream(run: str, writer: str = "") -> str:
    """The JetStream stream behind `bucket_name(run, writer)`."""
    return f"OBJ_{bucket_name(run, writer)}"


class ObjectStoreBlobs:
    """Blobs in the JetStream object store buckets of a run, one per writer
    (`MRL_<run>_BLOBS_<policy>`), read and written in time linear in their size.

    A blob goes into its writer's bucket (`put(..., writer=P)`) and its `BlobRef.writer` says
    which bucket a reader finds it in, so the server, not the readers, keeps one policy from
    writing, rolling up or purging another's blobs: a policy's user may publish only on its own
    bucket's subjects (`$O.MRL_<run>_BLOBS_<P>.>`), and no user may roll one up.

    The bucket keeps the object store's layout (chunks on `$O.<bucket>.C.<nuid>`, one JSON meta
    message on `$O.<bucket>.M.<base64 name>`), so any NATS object-store client reads what this
    writes; only the data path is our own. nats-py's reader appends each chunk to a bytes object
    (quadratic in the blob) and its writer waits for each chunk's ack (one round trip per chunk):

    - `get` pours chunks from a push consumer (the server keeps many in flight, paced by flow
      control) into one preallocated buffer and hashes them in the same pass: off the socket
      straight into place (`see.chunk_reader`), or, where that fails, through nats-py's
      ordered consumer;
    - `put` publishes chunks with up to `window` acks outstanding, hashing in the same pass, and
      writes the meta last without a rollup header: names are content hashes, written once, so
      the bucket can deny rollups (a writer that could roll up could erase every blob).
    """

    def __init__(
        self,
        js: Any,
        run: str,
        *,
        replicas: int = 1,
        timeout_s: float = 30.0,
        chunk_bytes: int = CHUNK_BYTES,
        window: int = WINDOW,
        fast: bool = True,
        create: bool = False,
        max_bytes: int = -1,
    ) -> None:
        self._js = js
        self._nc = js._nc  # the connection: chunk publishes and their acks bypass the JS context
        self._run = run
        self._replicas = replicas
        # a put for a writer whose bucket is missing creates it (`create`: the run's admin,
        # the one role that may create streams), at most `max_bytes` big; else it fails
        self.create = create
        self.max_bytes = max_bytes
        # no progress (an ack, a chunk) for this long fails the transfer: a read of a blob whose
        # chunks vanished, or a server gone, must not hang the reader
        self._timeout_s = timeout_s
        self._chunk = max(1024, min(chunk_bytes, self._nc.max_payload - _HEADROOM))
        self._window = max(1, window)
        # reads go through `see.chunk_reader` (its own connection, one copy per byte), and
        # through nats-py's subscription when that fails or `fast` is off
        self.fast = fast
        self._stores: dict[str, Any] = {}

    def stream(self, writer: str = "") -> str:
        """The stream of `writer`'s bucket."""
        return blob_stream(self._run, writer)

    async def _obj(self, writer: str, *, create: bool = False) -> Any:
        """`writer`'s bucket, a write-once store whose stream refuses rollups (see.objstore)."""
        if writer not in self._stores:
            from nats.js.errors import NotFoundError

            from mrl_actors.see.objstore import create_blob_bucket, open_blob_bucket

            bucket = bucket_name(self._run, writer)
            try:
                self._stores[writer] = await open_blob_bucket(self._js, bucket)
            except NotFoundError:
                if not create:
                    raise LogError(
                        f"no blob bucket {bucket} on this server: the run's admin creates one "
                        "per policy with its log (`open_log(create=True, policies=[...])`, "
                        "which `mrl run` does)"
                    ) from None
                try:
                    self._stores[writer] = await create_blob_bucket(
                        self._js, bucket, replicas=self._replicas, max_bytes=self.max_bytes
                    )
                except Exception as exc:  # no right to create streams, or no room
                    why = getattr(exc, "description", None) or repr(exc)
                    raise LogError(f"cannot create blob bucket {bucket}: {why}") from exc
        return self._stores[writer]

    async def info(self, key: str, writer: str = "") -> Any:
        """The object's meta (`nats.js.api.ObjectInfo`) in `writer`'s bucket, or None when it
        is absent or deleted (raises `LogError` when there is no such bucket)."""
        from nats.js.errors import NotFoundError

        store = await self._obj(writer)
        try:
            info = await store.get_info(key)
        except NotFoundError:
            return None
        return None if info.deleted else info

    async def put(self, data: BlobData, *, sha256: str | None = None, writer: str = "") -> BlobRef:
        """Store `data` under its sha256 in `writer`'s bucket (a policy's name: blobs are
        written only into their policy's own). Given `sha256` (a writer that hashed while it
        serialised), the bytes are checked against it in the same pass as the upload."""
        if not writer:
            raise LogError("a blob is stored in its writer's bucket: put(..., writer=POLICY)")
        check_writer(writer)
        view = _bytes_view(data)
        key: str = sha256 if sha256 else await anyio.to_thread.run_sync(sha256_hex, view)
        ref = BlobRef(store="object", key=key, sha256=key, size=len(view), writer=writer)
        await self._obj(writer, create=self.create)
        info = await self.info(key, writer)  # stored already (a retried publish): nothing to do
        if info is not None and info.size == len(view):
            return ref
        bucket = bucket_name(self._run, writer)
        nuid = self._nc._nuid.next().decode()
        digest = await self._put_chunks(f"$O.{bucket}.C.{nuid}", view, bucket)
        if digest.hex() != key:
            raise BlobIntegrityError(
                f"blob for bucket {bucket}: bytes hash to {digest.hex()[:16]}…, the "
                f"writer said {key[:16]}…; not stored (its chunks under {nuid} are orphans)"
            )
        meta = {
            "name": key,
            "bucket": bucket,
            "nuid": nuid,
            "size": len(view),
            "chunks": -(-len(view) // self._chunk),
            "mtime": datetime.now(UTC).isoformat(),
            "digest": "SHA-256=" + base64.urlsafe_b64encode(digest).decode(),
            "options": {"max_chunk_size": self._chunk},
        }
        subject = f"$O.{bucket}.M.{_b64(key)}"
        with anyio.fail_after(self._timeout_s):
            await self._js.publish(subject, json.dumps(meta).encode())
        return ref

    async def _put_chunks(self, subject: str, view: memoryview, bucket: str) -> bytes:
        """Publish `view` in chunks with `window` acks outstanding; its sha256 digest."""
        h = hashlib.sha256()
        inbox = self._nc.new_inbox()
        free = anyio.Semaphore(self._window)
        failed: list[str] = []
        acked = 0

        async def on_ack(msg: Any) -> None:
            nonlocal acked
            try:
                ack = json.loads(msg.data)
            except ValueError:
                ack = {"error": {"description": f"unreadable ack {msg.data[:80]!r}"}}
            if not isinstance(ack, dict) or "error" in ack or "seq" not in ack:
                err = ack.get("error", ack) if isinstance(ack, dict) else ack
                failed.append(str(err)[:200] or "no responders")
            acked += 1
            free.release()

        sub = await self._nc.subscribe(f"{inbox}.*", cb=on_ack)
        try:
            for n, off in enumerate(range(0, len(view), self._chunk)):
                chunk = view[off : off + self._chunk]
                with anyio.fail_after(self._timeout_s):
                    await free.acquire()
                if failed:
                    break
                h.update(chunk)  # [chunk bytes] hashed while the previous ones are in flight
                await self._nc.publish(subject, chunk, reply=f"{inbox}.{n}")
            with anyio.fail_after(self._timeout_s):  # the last acks
                for _ in range(self._window):
                    await free.acquire()
        except TimeoutError as exc:
            raise LogError(
                f"blob upload to bucket {bucket}: no ack within {self._timeout_s:.0f} s "
                f"({acked} of the chunks acknowledged)"
            ) from exc
        finally:
            await sub.unsubscribe()
        if failed:
            raise LogError(f"blob upload to bucket {bucket} refused: {failed[0]}")
        return h.digest()

    async def get(self, ref: BlobRef) -> bytes:
        """The verified bytes of `ref` (raises `BlobIntegrityError` on a hash mismatch)."""
        return bytes(await self.get_buffer(ref))

    async def get_buffer(self, ref: BlobRef) -> bytearray | memoryview:
        """`get` without the final copy: the buffer the chunks were read into."""
        buf = fresh_buffer(ref.size)
        await self.get_into(ref, memoryview(buf))
        return buf

    async def get_into(self, ref: BlobRef, out: memoryview) -> None:
        """Read `ref` into `out` (exactly `ref.size` bytes, e.g. a buffer kept across versions),
        checking its sha256 in the same pass; on any error `out` holds a partial copy."""
        if len(out) != ref.size:
            raise LogError(f"blob {ref.key}: buffer of {len(out)} bytes for {ref.size}")
        bucket = bucket_name(self._run, check_writer(ref.writer))
        info = await self.info(ref.key, ref.writer)
        if info is None:
            raise LogError(f"blob {ref.key} not found in bucket {bucket}")
        digest = _meta_digest(info.digest)
        if info.size != ref.size or (digest is not None and digest.hex() != ref.sha256):
            raise BlobIntegrityError(
                f"blob {ref.key}: the bucket's meta says {info.size} bytes, sha256 "
                f"{digest.hex()[:16] if digest else '?'}…; its event says {ref.size} bytes, "
                f"{ref.sha256[:16]}…"
            )
        if ref.size == 0:
            verify(ref, b"")
            return
        if self.fast:
            try:
                return await self._get_fast(ref, info, out)
            except ChunkReadError as exc:  # read it again the ordinary way
                _log.warning("blob_fast_read_failed", key=ref.key[:16], error=str(exc)[:200])
        h = hashlib.sha256()
        got = 0
        done = anyio.Event()
        problem: list[MrlError] = []

        async def on_chunk(msg: Any) -> None:
            nonlocal got
            data = msg.data
            end = got + len(data)
            if end > ref.size:
                problem.append(
                    BlobIntegrityError(f"blob {ref.key}: chunks hold more than {ref.size} bytes")
                )
                done.set()
                return
            out[got:end] = data  # [chunk] into its place: no growing object, no second copy
            h.update(data)
            got = end
            if got == ref.size:
                done.set()

        sub = await self._js.subscribe(
            f"$O.{bucket}.C.{info.nuid}",
            stream=self.stream(ref.writer),
            ordered_consumer=True,
            cb=on_chunk,
            pending_msgs_limit=0,  # unbounded count; bytes bound it
            pending_bytes_limit=_PENDING_BYTES,
        )
        try:
            while not done.is_set():
                before = got
                with anyio.move_on_after(self._timeout_s):
                    await done.wait()
                if not done.is_set() and got == before:
                    raise LogError(
                        f"blob {ref.key}: no chunk from bucket {bucket} for "
                        f"{self._timeout_s:.0f} s ({got} of {ref.size} bytes read)"
                    )
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        if problem:
            raise problem[0]
        sha = h.hexdigest()
        if sha != ref.sha256:
            raise BlobIntegrityError(
                f"blob {ref.store}:{ref.key} has sha256 {sha[:16]}… ({got} bytes), "
                f"its event says {ref.sha256[:16]}… ({ref.size} bytes); the blob was altered"
            )

    async def _get_fast(self, ref: BlobRef, info: Any, out: memoryview) -> None:
        """`get_into` through `see.chunk_reader`: chunks from the socket into `out`."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        from mrl_actors.see.chunk_reader import connect_like, pour, subscribe

        try:
            conn = await anyio.to_thread.run_sync(connect_like, self._nc, self._timeout_s)
        except OSError as exc:
            raise ChunkReadError(f"no blob connection: {exc}") from exc
        consumer = None
        h = hashlib.sha256()
        try:
            inbox = self._nc.new_inbox()
            await anyio.to_thread.run_sync(subscribe, conn, inbox)
            config = ConsumerConfig(
                deliver_subject=inbox,
                filter_subject=f"$O.{bucket_name(self._run, ref.writer)}.C.{info.nuid}",
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.NONE,
                flow_control=True,
                idle_heartbeat=5.0,
                mem_storage=True,
                num_replicas=1,
                inactive_threshold=max(30.0, self._timeout_s),
            )
            consumer = await self._js.add_consumer(self.stream(ref.writer), config)

            def run() -> None:
                pour(conn, inbox, out, h, chunks=info.chunks or None, stall_s=self._timeout_s)

            await anyio.to_thread.run_sync(run)
        except (OSError, ValueError, IndexError) as exc:  # a lost socket, a garbled line
            raise ChunkReadError(f"blob connection failed: {exc!r:.200}") from exc
        finally:
            conn.sock.close()
            if consumer is not None:
                with contextlib.suppress(Exception):
                    await self._js.delete_consumer(self.stream(ref.writer), consumer.name)
        sha = h.hexdigest()
        if sha != ref.sha256:
            raise BlobIntegrityError(
                f"blob {ref.store}:{ref.key} has sha256 {sha[:16]}… ({ref.size} bytes), "
                f"its event says {ref.sha256[:16]}…; the blob was altered"
            )

    async def delete(self, ref: BlobRef) -> None:
        """Purge `ref`'s chunks, then its meta. Needs the right to purge the bucket: without it
        the server refuses the purge and nothing changes (the reverse order, nats-py's, would
        leave a blob unreadable with its chunks still there). The meta is purged rather than
        superseded by a tombstone: readers take an object's first meta (`see.objstore`), so a
        later one would not hide it, and the bucket refuses the rollup that replaces one."""
        info = await self.info(ref.key, ref.writer)
        if info is None:
            return
        bucket, stream = bucket_name(self._run, ref.writer), self.stream(ref.writer)
        with anyio.fail_after(self._timeout_s):
            await self._js.purge_stream(stream, subject=f"$O.{bucket}.C.{info.nuid}")
            await self._js.purge_stream(stream, subject=f"$O.{bucket}.M.{_b64(ref.key)}")

    async def put_raw(self, ref: BlobRef, data: bytes) -> None:
        """Overwrite the bytes of `ref` without hashing (admin only): for corruption tests and
        repair."""
        store = await self._obj(ref.writer)
        await store.replace(ref.key, data)


def check_writer(writer: str) -> str:
    """`writer` as a bucket name's last part: a policy name, or "" (the shared bucket)."""
    if writer and not _WRITER.match(writer):
        raise LogError(f"blob writer {writer[:80]!r} is not a policy name ([A-Za-z0-9_-])")
    return writer


_WRITER = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def _b64(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode()


def _meta_digest(digest: str | None) -> bytes | None:
    if not digest:
        return None
    text = digest.split("=", 1)[1] if digest.upper().startswith("SHA-256=") else digest
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        return None


def _bytes_view(data: BlobData) -> memoryview:
    """A flat byte view of `data` (bytes, bytearray, a memory map, a contiguous array)."""
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


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

    async def put(self, data: bytes, *, writer: str = "") -> BlobRef:
        """Store `data` under its sha256 (one directory for every writer)."""
        key = sha256_hex(data)
        if not self._path(key).exists():
            await anyio.to_thread.run_sync(self._write, key, data)
        return BlobRef(store="zarr", key=key, sha256=key, size=len(data))

    async def get(self, ref: BlobRef) -> bytes:
        data = await anyio.to_thread.run_sync(self._read, ref.key)
        return verify(ref, data)

    async def put_raw(self, ref: BlobRef, data: bytes) -> None:
        await anyio.to_thread.run_sync(self._write, ref.key, data)
