"""Weights through the run's object store, with the run's real users and permissions.

The linear reader and writer (`see.blobs.ObjectStoreBlobs`) keep the object store's layout, so
nats-py's own reader reads what they write; blobs span many chunks; a policy's user writes a
version and the other users read it back, deltas included; altered or missing chunks are
caught; deleting old versions needs a right that writers lack (the lead's call, see
docs/weights.md), which the admin has.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import torch

from mrl_actors.errors import BlobIntegrityError, LogError, WeightsError
from mrl_actors.models.load import weights_sha256
from mrl_actors.models.weights import WeightsIO
from mrl_actors.models.weights_config import WeightsConfig
from mrl_actors.see.access import open_log
from mrl_actors.see.auth import policy_user
from mrl_actors.see.blobs import ObjectStoreBlobs, sha256_hex
from mrl_actors.see.server import EmbeddedServer
from mrl_actors.see.stream import LogConfig

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

FAST = LogConfig(ack_timeout_s=5.0)
MiB = 1024 * 1024


@pytest.fixture
async def srv(tmp_path: Path) -> AsyncIterator[EmbeddedServer]:
    # 1 MiB messages: a few MiB of weights are many chunks
    async with EmbeddedServer(
        tmp_path / "nats", run="r", policies=["a", "b"], max_payload=MiB
    ) as server:
        async with open_log(info=server.info(), config=FAST, create=True):
            pass  # the admin makes the stream and the blob bucket
        yield server


def model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.Linear(1024, 256))


async def test_many_chunks_round_trip_and_nats_py_reads_them(srv: EmbeddedServer) -> None:
    data = os.urandom(5 * MiB + 123)
    async with open_log(info=srv.info(), user=policy_user("a"), config=FAST) as log:
        blobs = log.blobs
        assert isinstance(blobs, ObjectStoreBlobs)
        ref = await blobs.put(data, sha256=sha256_hex(data), writer="a")
        assert await blobs.put(data, writer="a") == ref  # stored already: nothing sent again
        assert bytes(await blobs.get_buffer(ref)) == data
    async with open_log(info=srv.info(), user="reader", config=FAST) as log:
        assert await log.blobs.get(ref) == data
        theirs = await log.js.object_store("MRL_r_BLOBS_a")
        assert (await theirs.get(ref.key)).data == data  # nats-py's reader: same layout


async def test_a_writer_that_names_the_wrong_hash_stores_nothing(srv: EmbeddedServer) -> None:
    async with open_log(info=srv.info(), user=policy_user("a"), config=FAST) as log:
        blobs = log.blobs
        assert isinstance(blobs, ObjectStoreBlobs)
        with pytest.raises(BlobIntegrityError):
            await blobs.put(b"x" * (3 * MiB), sha256=sha256_hex(b"y"), writer="a")
        assert await blobs.info(sha256_hex(b"y"), "a") is None


async def test_altered_and_missing_blobs_are_caught(srv: EmbeddedServer) -> None:
    data = os.urandom(3 * MiB)
    async with open_log(info=srv.info(), config=FAST) as log:
        blobs = log.blobs
        assert isinstance(blobs, ObjectStoreBlobs)
        ref = await blobs.put(data, writer="a")
        await blobs.put_raw(ref, data[:-5] + b"xxxxx")
        with pytest.raises(BlobIntegrityError):
            await blobs.get(ref)
        with pytest.raises(LogError, match="not found"):
            await blobs.get(
                type(ref)(store="object", key="0" * 64, sha256="0" * 64, size=4, writer="a")
            )


async def test_a_policy_publishes_full_and_delta_versions_that_peers_load(
    srv: EmbeddedServer,
) -> None:
    config = WeightsConfig(full_every=2, keep=2)
    m = model()
    events = {}
    async with open_log(info=srv.info(), user=policy_user("a"), config=FAST) as log:
        wio = WeightsIO(log, config, policy="a")
        for v in range(4):
            if v:
                with torch.no_grad():
                    m[0].weight[v].add_(1.0)  # one row changes: the delta holds little
            events[v] = await wio.publish(v, m, weights_sha256(m))
        assert [e.base_version for e in events.values()] == [-1, 0, -1, 2]
        assert events[3].blob.size < events[2].blob.size // 10
        # a writer may not purge the shared bucket: retention is refused, nothing is lost
        assert await wio.retain(events, {}) == 0
    async with open_log(info=srv.info(), user=policy_user("b"), config=FAST) as log:
        for v in (1, 3):
            target = model(seed=7)
            await WeightsIO(log, config).load(events[v], target)
            assert weights_sha256(target) == events[v].weights_sha256
    async with open_log(info=srv.info(), config=FAST) as log:  # the admin may delete
        admin = WeightsIO(log, config, policy="a")
        assert await admin.retain(events, {}) == 1  # v1's delta; v0 and v2 are kept
        with pytest.raises(WeightsError, match="not found"):
            await admin.load(events[1], model())
        await admin.load(events[3], model())


@pytest.mark.parametrize("user", ["reader", policy_user("b")])
async def test_the_socket_reader_and_nats_py_reader_agree(srv: EmbeddedServer, user: str) -> None:
    """The fast path itself (not its fallback) reads with each role's own credentials."""
    data = os.urandom(4 * MiB + 1)
    async with open_log(info=srv.info(), user=policy_user("a"), config=FAST) as log:
        ref = await log.blobs.put(data, writer="a")
    async with open_log(info=srv.info(), user=user, config=FAST) as log:
        blobs = log.blobs
        assert isinstance(blobs, ObjectStoreBlobs)
        info = await blobs.info(ref.key, "a")
        out = bytearray(ref.size)
        await blobs._get_fast(ref, info, memoryview(out))  # raises instead of falling back
        assert out == data
        blobs.fast = False
        assert bytes(await blobs.get_buffer(ref)) == data
