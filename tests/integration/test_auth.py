"""Every writer is authorized by the server: a policy's user writes its own subjects only.

A real embedded server with the users of a run `r` (policies `a` and `b`); each test connects
as one of them and tries what an attacker holding that user's password would try.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from mrl_actors.errors import LogError
from mrl_actors.events import LearnerStepCompleted, RolloutGroupCompleted, RunFinished, event_id
from mrl_actors.see.access import open_log
from mrl_actors.see.auth import policy_user
from mrl_actors.see.config import LogConfig
from mrl_actors.see.server import EmbeddedServer

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

MakeRollout = Callable[..., RolloutGroupCompleted]
FAST = LogConfig(ack_timeout_s=2.0)  # a refused publish gets no ack: fail fast


@pytest.fixture
async def srv(tmp_path: Path) -> AsyncIterator[EmbeddedServer]:
    async with EmbeddedServer(tmp_path / "nats", run="r", policies=["a", "b"]) as server:
        async with open_log(info=server.info(), config=FAST, create=True):
            pass  # the admin makes the stream and the blob bucket
        yield server


async def _all_refused(
    attempts: list[Any],
    kinds: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    match: str = "",
) -> None:
    """Await `attempts` at once and check that each raised `kinds`: a refused request is
    answered by no one, so each waits out its timeout, and one after another they add up."""
    outcomes: list[BaseException | None] = [None] * len(attempts)

    async def attempt(i: int) -> None:
        try:
            await attempts[i]
        except Exception as exc:
            outcomes[i] = exc

    async with anyio.create_task_group() as tg:
        for i in range(len(attempts)):
            tg.start_soon(attempt, i)
    for i, exc in enumerate(outcomes):
        assert isinstance(exc, kinds), f"attempt {i} was not refused: {exc!r}"
        assert match in str(exc), f"attempt {i}: {match!r} not in {exc}"


def _finished(source: str) -> RunFinished:
    return RunFinished(
        run="r", source=source, event_id=event_id("run", "r", source, "finished"), status="ok"
    )


def _step(policy: str, step: int) -> LearnerStepCompleted:
    return LearnerStepCompleted(
        run="r",
        source=policy,
        event_id=event_id("learner", "r", policy, step),
        time_ns=time.time_ns(),
        policy=policy,
        step=step,
        probe="independent",
        consumed=[],
        weights_sha256="0" * 64,
        metrics={},
    )


async def _stored(srv: EmbeddedServer) -> list[str]:
    async with open_log(info=srv.info(), config=FAST) as log:
        return [rec.event.event_id async for rec in log.read(start_seq=1)]


async def test_a_policy_publishes_on_its_own_subjects_only(
    srv: EmbeddedServer, make_rollout: MakeRollout
) -> None:
    async with open_log(info=srv.info(), user=policy_user("a"), config=FAST) as log:
        assert await log.append(make_rollout("r", "a", 1)) == 1
        assert await log.append(_step("a", 1)) == 2
        forged = (
            make_rollout("r", "b", 1),  # another policy's rollout, with the id b uses next
            _step("b", 1),  # a learner step of b
            _finished("mrl"),  # a run-level event
            _finished("a"),  # run-level even on its own source
        )
        await _all_refused([log.append(f) for f in forged], LogError, match="failed")
        async with open_log(info=srv.info(), user="reader", config=FAST) as reader:
            with pytest.raises(LogError):
                await reader.append(make_rollout("r", "a", 2))
    assert await _stored(srv) == ["r/rollout/a/1", "r/learner/a/1"]


@pytest.mark.parametrize("user", [policy_user("a"), "reader"])
async def test_writers_cannot_delete_purge_or_change_the_stream(
    srv: EmbeddedServer, make_rollout: MakeRollout, user: str
) -> None:
    from nats.js.api import StreamConfig

    async with open_log(info=srv.info(), config=FAST, create=True) as admin:
        await admin.append(make_rollout("r", "a", 1))
    async with open_log(info=srv.info(), user=user, config=FAST) as log:
        js = log.nc.jetstream(timeout=1.0)
        info = await js.stream_info("MRL_r")  # reading is allowed
        attempts: list[Any] = [
            js.delete_stream("MRL_r"),
            js.purge_stream("MRL_r"),
            js.delete_msg("MRL_r", 1),
            js.update_stream(dataclasses.replace(info.config, max_msgs=1)),
            js.add_stream(StreamConfig(name="MRL_x", subjects=["mrl.r2.>"])),
            js.delete_stream("OBJ_MRL_r_BLOBS_a"),
            js.purge_stream("OBJ_MRL_r_BLOBS_a"),
        ]
        await _all_refused(attempts)  # refused: no answer, or an API error
    assert await _stored(srv) == ["r/rollout/a/1"]
    async with open_log(info=srv.info(), config=FAST) as admin:
        info = await admin.js.stream_info("MRL_r")
        assert info.config.max_msgs == -1 and info.state.messages == 1


async def test_blobs_go_through_a_writers_user_and_back_to_the_others(
    srv: EmbeddedServer, make_rollout: MakeRollout
) -> None:
    """The claim-check path needs object-store rights: put as policy a, read as b and reader."""
    big = make_rollout("r", "a", 7, tokens=4000, group=2)  # ~50 KB, above the inline limit below
    small = msgspec.structs.replace(FAST, inline_limit=4096)
    async with open_log(info=srv.info(), user=policy_user("a"), config=small) as log:
        seq = await log.append(big)
        assert await log.append(big) == seq  # a retry: the blob is not put again, the id dedups
    for user in (policy_user("b"), "reader"):
        async with open_log(info=srv.info(), user=user, config=FAST) as log:
            assert (await log.get(seq)).event == big


async def test_a_policy_publishes_its_own_weights_and_not_a_peers(srv: EmbeddedServer) -> None:
    """Asynchronous runs: the blob through the object store, the event on `weights.<policy>`."""
    from mrl_actors.events import WeightsPublished

    async with open_log(info=srv.info(), user=policy_user("a"), config=FAST) as log:
        ref = await log.blobs.put(b"safetensors bytes of a's weights", writer="a")

        def weights(policy: str) -> WeightsPublished:
            return WeightsPublished(
                run="r",
                source=policy,
                event_id=event_id("weights", "r", policy, 1),
                policy=policy,
                version=1,
                weights_sha256="0" * 64,
                blob=ref,
            )

        assert await log.append(weights("a")) == 1
        with pytest.raises(LogError, match="failed"):
            await log.append(weights("b"))
    async with open_log(info=srv.info(), user=policy_user("b"), config=FAST) as other:
        assert await other.blobs.get(ref) == b"safetensors bytes of a's weights"
    assert await _stored(srv) == ["r/weights/a/1"]


async def test_a_policy_cannot_erase_or_rewrite_the_blob_bucket(srv: EmbeddedServer) -> None:
    """Rollup (`Nats-Rollup: all` on a chunk subject), purge, message delete, and a forged
    metadata or chunk message in a's bucket: refused by the server, for b in a's bucket and in
    its own; a's blob stays readable byte for byte, for every user, and its bucket holds
    exactly what a wrote (`test_blob_buckets` names each refusal)."""
    import base64
    import json

    import nats.errors
    from nats.js.errors import APIError

    blob = b"a's weights, version 1" * 100
    async with open_log(info=srv.info(), user=policy_user("a"), config=FAST) as log:
        ref = await log.blobs.put(blob, writer="a")
    async with open_log(info=srv.info(), config=FAST) as admin:
        before = (await admin.js.stream_info("OBJ_MRL_r_BLOBS_a")).state.messages
    async with open_log(info=srv.info(), user=policy_user("b"), config=FAST) as log:
        js = log.nc.jetstream(timeout=1.0)
        for value in ("all", "sub"):  # its own bucket: the stream refuses rollups
            with pytest.raises(APIError, match="rollup"):
                await js.publish("$O.MRL_r_BLOBS_b.C.x", b"", headers={"Nats-Rollup": value})
        meta = "$O.MRL_r_BLOBS_a.M." + base64.urlsafe_b64encode(ref.key.encode()).decode()
        info = {"name": ref.key, "bucket": "MRL_r_BLOBS_a", "nuid": "forged", "size": 9}
        forged = (
            ("$O.MRL_r_BLOBS_a.C.x", b"", {"Nats-Rollup": "all"}),  # a's bucket: no right
            ("$O.MRL_r_BLOBS_a.C.forged", b"b's bytes", {}),
            (meta, json.dumps(info).encode(), {}),
        )
        publishes = [js.publish(subject, data, headers=h) for subject, data, h in forged]
        await _all_refused(publishes, nats.errors.TimeoutError)  # a permission violation: no ack
        erasures = [
            attempt
            for stream in ("OBJ_MRL_r_BLOBS_a", "OBJ_MRL_r_BLOBS_b")
            for attempt in (js.purge_stream(stream), js.delete_msg(stream, 1))
        ]
        await _all_refused(erasures, (APIError, nats.errors.TimeoutError))
    for user in (policy_user("a"), policy_user("b"), "reader"):
        async with open_log(info=srv.info(), user=user, config=FAST) as log:
            assert await log.blobs.get(ref) == blob
    async with open_log(info=srv.info(), config=FAST) as admin:
        state = (await admin.js.stream_info("OBJ_MRL_r_BLOBS_a")).state
        assert state.messages == before == 2  # one chunk and one meta: nothing added or erased


async def test_the_reader_cannot_use_a_policys_durable_consumer(
    srv: EmbeddedServer, make_rollout: MakeRollout
) -> None:
    from nats.js.api import AckPolicy, ConsumerConfig

    async with open_log(info=srv.info(), user=policy_user("a"), config=FAST) as log:
        await log.append(make_rollout("r", "a", 1))
        await log.js.add_consumer(
            "MRL_r", ConsumerConfig(durable_name="a", ack_policy=AckPolicy.EXPLICIT)
        )
    async with open_log(info=srv.info(), user="reader", config=FAST) as log:
        js = log.nc.jetstream(timeout=1.0)
        attempts: list[Any] = [
            js.consumer_info("MRL_r", "a"),
            js.delete_consumer("MRL_r", "a"),
            log.nc.request("$JS.API.CONSUMER.MSG.NEXT.MRL_r.a", b'{"batch":1}', timeout=1.0),
        ]
        for attempt in attempts:
            with pytest.raises(Exception):  # noqa: B017 - refused: no answer, or an API error
                await attempt
        ack = "$JS.ACK.MRL_r.a.1.1.1.0.0"
        await log.nc.publish(ack, b"")  # a permission violation: dropped by the server
        await log.nc.flush()
    async with open_log(info=srv.info(), config=FAST) as admin:
        info = await admin.js.consumer_info("MRL_r", "a")
        assert info.delivered.stream_seq == 0 and info.ack_floor.stream_seq == 0
