"""Each policy's blobs in its own bucket, which the server lets only that policy's users write.

A real embedded server with the users of a run `r` (policies `a` and `b`, and a node user
hosting `a`). A policy, or a node, that publishes a metadata or chunk message in a peer's
bucket gets the server's permissions error and nothing is stored there; every role reads
every bucket; a run written before per-policy buckets keeps its one shared bucket readable.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from helpers.raw import raw_client

from mrl_actors import events as ev
from mrl_actors.errors import EventDecodeError, LogError
from mrl_actors.see.access import open_log
from mrl_actors.see.auth import node_permissions, policy_user
from mrl_actors.see.config import LogConfig
from mrl_actors.see.server import EmbeddedServer

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

MakeRollout = Callable[..., ev.RolloutGroupCompleted]
FAST = LogConfig(ack_timeout_s=2.0)
BLOB = b"a's weights, version 1" * 100


@pytest.fixture
async def srv(tmp_path: Path) -> AsyncIterator[EmbeddedServer]:
    node = {"node-h1": node_permissions("r", "h1", ["a"], ["a", "b"], user="node-h1")}
    async with EmbeddedServer(
        tmp_path / "nats", run="r", policies=["a", "b"], extra_users=node
    ) as server:
        async with open_log(info=server.info(), config=FAST, create=True):
            pass  # the admin makes the stream and a bucket per policy (its users: a, b)
        yield server


async def _raw(srv: EmbeddedServer, user: str, errors: list[str]) -> Any:
    return await raw_client(srv.info(), user, errors)


async def _refused(nc: Any, errors: list[str], subject: str, data: bytes) -> str:
    """Publish, and the server's permissions error naming `subject` (waited for, bounded)."""
    await nc.publish(subject, data)
    await nc.flush()
    with anyio.fail_after(10):
        while not any(f'"{subject.lower()}"' in e.lower() for e in errors):  # nats-py lowers it
            await anyio.sleep(0.05)
    return next(e for e in errors if f'"{subject.lower()}"' in e.lower())


async def _messages(srv: EmbeddedServer, stream: str) -> tuple[int, dict[str, int]]:
    """Messages in `stream`, and per subject (as admin)."""
    async with open_log(info=srv.info(), config=FAST) as admin:
        info = await admin.js.stream_info(stream, subjects_filter=">")
        return int(info.state.messages), dict(info.state.subjects or {})


@pytest.mark.parametrize("user", [policy_user("b"), "node-h1"], ids=["policy", "node"])
async def test_metadata_and_chunks_for_a_peers_blob_are_refused_by_the_server(
    srv: EmbeddedServer, user: str
) -> None:
    """b (or a node that hosts only a) forges b's bytes as a's blob: a chunk message and a
    metadata message naming a's key, in a's bucket. The server refuses both with a
    permissions error; a's bucket holds exactly what it held; a's blob reads as a wrote it."""
    peer = "a" if user == policy_user("b") else "b"
    async with open_log(info=srv.info(), user=policy_user(peer), config=FAST) as log:
        ref = await log.blobs.put(BLOB, writer=peer)
    bucket = f"MRL_r_BLOBS_{peer}"
    before = await _messages(srv, f"OBJ_{bucket}")
    assert before[0] == 2  # one chunk, one meta
    errors: list[str] = []
    nc = await _raw(srv, user, errors)
    try:
        meta = f"$O.{bucket}.M." + base64.urlsafe_b64encode(ref.key.encode()).decode()
        forged = {"name": ref.key, "bucket": bucket, "nuid": "forged", "size": 9, "chunks": 1}
        for subject, data in (
            (f"$O.{bucket}.C.forged", b"b's bytes"),
            (meta, json.dumps(forged).encode()),
        ):
            said = await _refused(nc, errors, subject, data)
            assert "permissions violation for publish" in said.lower()
    finally:
        await nc.close()
    assert await _messages(srv, f"OBJ_{bucket}") == before  # nothing stored, nothing moved
    for reader in (policy_user("a"), policy_user("b"), "reader", "node-h1"):
        async with open_log(info=srv.info(), user=reader, config=FAST) as log:
            assert await log.blobs.get(ref) == BLOB


async def test_a_node_writes_the_buckets_of_the_policies_it_hosts_only(
    srv: EmbeddedServer,
) -> None:
    async with open_log(info=srv.info(), user="node-h1", config=FAST) as log:
        ref = await log.blobs.put(BLOB, writer="a")  # hosted: its bucket is the node's too
        with pytest.raises(LogError, match=r"refused|no ack"):
            await log.blobs.put(b"b's weights", writer="b")
    assert (await _messages(srv, "OBJ_MRL_r_BLOBS_b"))[0] == 0
    async with open_log(info=srv.info(), user=policy_user("b"), config=FAST) as log:
        assert await log.blobs.get(ref) == BLOB


async def test_a_run_written_before_per_policy_buckets_keeps_its_blobs_readable(
    srv: EmbeddedServer,
) -> None:
    """The shared bucket `MRL_<run>_BLOBS` of an older run (refs without a writer): read by
    every role, written by none but admin."""
    from mrl_actors.see.objstore import create_blob_bucket

    async with open_log(info=srv.info(), config=FAST) as admin:
        shared = await create_blob_bucket(admin.js, "MRL_r_BLOBS")
        await shared.put(_key(BLOB), BLOB)
    old = ev.BlobRef(store="object", key=_key(BLOB), sha256=_key(BLOB), size=len(BLOB))
    assert msgspec.msgpack.encode(old) == msgspec.msgpack.encode(
        {"store": "object", "key": old.key, "sha256": old.sha256, "size": old.size}
    )  # a ref without a writer has the bytes of one written before the field existed
    for user in ("reader", policy_user("a"), "node-h1"):
        async with open_log(info=srv.info(), user=user, config=FAST) as log:
            assert await log.blobs.get(old) == BLOB
    errors: list[str] = []
    nc = await _raw(srv, policy_user("a"), errors)
    try:
        said = await _refused(nc, errors, "$O.MRL_r_BLOBS.C.x", b"a's bytes")
        assert "permissions violation" in said.lower()
    finally:
        await nc.close()


async def test_a_blob_pointer_into_another_writers_bucket_is_a_dead_letter(
    srv: EmbeddedServer, make_rollout: MakeRollout
) -> None:
    """On a's subject, a pointer to a blob in b's bucket (real bytes of a rollout of a's):
    `identity`, before any blob is fetched."""
    event = make_rollout("r", "a", 1)
    async with open_log(info=srv.info(), user=policy_user("b"), config=FAST) as log:
        ref = await log.blobs.put(ev.encode(event), writer="b")
    pointer = ev.BlobPointer(run="r", source="a", event_id=event.event_id, kind="rollout", ref=ref)
    async with open_log(info=srv.info(), user=policy_user("a"), config=FAST) as log:
        ack = await log.js.publish("mrl.r.rollout.a", ev.encode(pointer))
        with pytest.raises(EventDecodeError, match="bucket") as caught:
            await log.get(ack.seq)
        assert getattr(caught.value, "kind", "") == "identity"


async def test_only_a_policys_events_go_to_the_blob_store(srv: EmbeddedServer) -> None:
    """A run-level event too large for one message has no bucket to go to: a clear error."""
    small = msgspec.structs.replace(FAST, inline_limit=1024)
    big = ev.RunFinished(
        run="r",
        source="mrl",
        event_id=ev.event_id("run", "r", "mrl", "finished"),
        status="completed",
        summary={"note": "x" * 4096},
    )
    async with open_log(info=srv.info(), config=small) as log:
        with pytest.raises(LogError, match="only a policy's events"):
            await log.append(big)


def _key(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


async def test_the_buckets_share_max_bytes_and_grow_with_a_resume_that_asks_more(
    tmp_path: Path,
) -> None:
    MiB = 1024 * 1024
    async with EmbeddedServer(tmp_path / "nats", run="r", policies=["a", "b"]) as server:
        for asked, each in ((2 * MiB, MiB), (8 * MiB, 4 * MiB), (2 * MiB, 4 * MiB)):
            config = msgspec.structs.replace(FAST, max_bytes=asked)
            async with open_log(info=server.info(), config=config, create=True) as log:
                for p in ("a", "b"):
                    info = await log.js.stream_info(f"OBJ_MRL_r_BLOBS_{p}")
                    assert info.config.max_bytes == each  # never shrunk by a smaller ask
                    assert not info.config.allow_rollup_hdrs
