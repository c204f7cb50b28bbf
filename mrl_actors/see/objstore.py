"""A blob bucket as a write-once object store: no user can roll up, purge or delete it.

nats-py's object store writes each object's metadata with a `Nats-Rollup: sub` header, so its
bucket's stream must allow rollups; and a stream that allows them lets anyone who may publish
there roll up the whole bucket with one `Nats-Rollup: all` message. Each policy writes blobs
(its weights versions, checkpoints, large events) into its own bucket, which only its users may
publish in (`mrl_actors.see.auth`), so a peer cannot touch it at all; and each bucket's stream
is created with rollups refused by the server itself (`allow_rollup_hdrs = false`, for every
user), so not even its own policy can erase it with one message. Objects are written without a
rollup header, and purging the stream or deleting its messages is a right of admin alone (the
writers' permissions deny those APIs).

Within a bucket, an object's metadata is the *first* message on its metadata subject. Keys are
content hashes and a put of a key that exists writes nothing, so an honest key has exactly
one; a later metadata message on it is never read, and a read takes exactly the object's own
chunks, the first `info.chunks` on its chunk subject (written before the metadata; chunks
appended later are never read). The bytes are then checked against the object's digest and
the event's sha256 as before.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from nats.js import api
from nats.js.errors import NotFoundError, ObjectNotFoundError
from nats.js.object_store import (
    OBJ_CHUNKS_PRE_TEMPLATE,
    OBJ_DEFAULT_CHUNK_SIZE,
    OBJ_DIGEST_TEMPLATE,
    OBJ_META_PRE_TEMPLATE,
    OBJ_STREAM_TEMPLATE,
    ObjectStore,
)


def blob_stream_config(bucket: str, *, replicas: int = 1, max_bytes: int = -1) -> Any:
    """The bucket's stream: object store subjects, rollups refused."""
    return api.StreamConfig(
        name=OBJ_STREAM_TEMPLATE.format(bucket=bucket),
        subjects=[f"$O.{bucket}.C.>", f"$O.{bucket}.M.>"],
        max_bytes=max_bytes or -1,
        max_consumers=0,
        storage=api.StorageType.FILE,
        num_replicas=replicas,
        discard=api.DiscardPolicy.NEW,
        allow_rollup_hdrs=False,
        allow_direct=True,
    )


async def create_blob_bucket(
    js: Any, bucket: str, *, replicas: int = 1, max_bytes: int = -1
) -> WriteOnceStore:
    """Create the bucket (admin only: writers may not create streams) and bind to it."""
    await js.add_stream(blob_stream_config(bucket, replicas=replicas, max_bytes=max_bytes))
    return WriteOnceStore(bucket, OBJ_STREAM_TEMPLATE.format(bucket=bucket), js)


async def open_blob_bucket(js: Any, bucket: str) -> WriteOnceStore:
    """Bind to an existing bucket (raises nats' `NotFoundError` when there is none)."""
    stream = OBJ_STREAM_TEMPLATE.format(bucket=bucket)
    await js.stream_info(stream)
    return WriteOnceStore(bucket, stream, js)


async def harden_blob_bucket(js: Any, bucket: str, *, max_bytes: int = 0) -> None:
    """Refuse rollups on a bucket created by an older version, and raise its size limit to
    `max_bytes` when that is more (0: leave it; admin: it updates the stream)."""
    import dataclasses

    stream = OBJ_STREAM_TEMPLATE.format(bucket=bucket)
    info = await js.stream_info(stream)
    changes: dict[str, Any] = {}
    if info.config.allow_rollup_hdrs:
        changes["allow_rollup_hdrs"] = False
    now = info.config.max_bytes
    if max_bytes and now not in (None, 0, -1) and (max_bytes == -1 or max_bytes > now):
        changes["max_bytes"] = max_bytes
    if changes:
        await js.update_stream(dataclasses.replace(info.config, **changes))


def _meta_subject(bucket: str, name: str) -> str:
    return OBJ_META_PRE_TEMPLATE.format(
        bucket=bucket, obj=base64.urlsafe_b64encode(name.encode()).decode()
    )


class WriteOnceStore(ObjectStore):
    """nats-py's object store, reading the first metadata of a name and writing no rollups."""

    async def get_info(self, name: str, show_deleted: bool | None = False) -> api.ObjectInfo:
        try:
            msg = await self._js.get_msg(
                self._stream, seq=1, subject=_meta_subject(self._name, name), next=True
            )
        except NotFoundError as exc:
            raise ObjectNotFoundError from exc
        try:
            info = api.ObjectInfo.from_response(json.loads(msg.data or b""))
        except Exception as exc:  # garbage first on the subject: nothing to read
            raise ObjectNotFoundError from exc
        if info.deleted and not show_deleted:
            raise ObjectNotFoundError
        return info

    async def put(  # type: ignore[override]
        self, name: str, data: bytes, meta: api.ObjectMeta | None = None
    ) -> api.ObjectInfo:
        """Chunks on a fresh subject, then the metadata (no rollup header: the stream refuses
        rollups). A name that has metadata already is left as it is."""
        try:
            return await self.get_info(name, show_deleted=True)
        except ObjectNotFoundError:
            pass
        nuid = self._js._nc._nuid.next().decode()
        chunk_subj = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=self._name, obj=nuid)
        size = OBJ_DEFAULT_CHUNK_SIZE
        view = memoryview(data)
        chunks = 0
        for at in range(0, len(view), size):
            await self._js.publish(chunk_subj, bytes(view[at : at + size]))
            chunks += 1
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()
        info = api.ObjectInfo(
            name=name,
            bucket=self._name,
            nuid=nuid,
            size=len(data),
            chunks=chunks,
            mtime=datetime.now(UTC).isoformat(),
            digest=OBJ_DIGEST_TEMPLATE.format(digest=digest),
            options=api.ObjectMetaOptions(max_chunk_size=size),
        )
        await self._js.publish(_meta_subject(self._name, name), json.dumps(info.as_dict()).encode())
        return info

    async def replace(self, name: str, data: bytes) -> None:
        """Store `data` under `name` in place of what is there (admin only: it deletes the
        name's metadata messages, a right no writer has). For corruption tests and repair."""
        subject = _meta_subject(self._name, name)
        while True:
            try:
                msg = await self._js.get_msg(self._stream, seq=1, subject=subject, next=True)
            except NotFoundError:
                break
            await self._js.delete_msg(self._stream, int(msg.seq or 0))
        await self.put(name, data)

    async def get(
        self, name: str, writeinto: Any = None, show_deleted: bool | None = False
    ) -> ObjectStore.ObjectResult:
        """The object's own chunks: the first `info.chunks` on its chunk subject."""
        info = await self.get_info(name, show_deleted)
        if not info.nuid or info.is_link():
            raise ObjectNotFoundError  # links are never written here
        result = self.ObjectResult(info=info)
        if not info.size:
            return result
        subject = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=self._name, obj=info.nuid)
        sub = await self._js.subscribe(subject=subject, ordered_consumer=True)
        parts: list[bytes] = []
        try:
            async for msg in sub.messages:
                parts.append(msg.data)
                if len(parts) >= (info.chunks or 0):
                    break
        finally:
            await sub.unsubscribe()
        result.data = b"".join(parts)
        want = (info.digest or "").replace("SHA-256=", "").replace("sha-256=", "")
        if base64.urlsafe_b64decode(want) != hashlib.sha256(result.data).digest():
            from nats.js.errors import DigestMismatchError

            raise DigestMismatchError
        return result
