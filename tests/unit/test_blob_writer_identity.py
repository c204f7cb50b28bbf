"""A blob ref names the bucket it is read from (`BlobRef.writer`): always its event's source."""

from __future__ import annotations

import msgspec
import pytest

from mrl_actors import events as ev
from mrl_actors.errors import EventDecodeError


def _ref(writer: str) -> ev.BlobRef:
    return ev.BlobRef(store="object", key="ab" * 32, sha256="ab" * 32, size=3, writer=writer)


def _weights(source: str, writer: str) -> ev.WeightsPublished:
    return ev.WeightsPublished(
        run="r",
        source=source,
        event_id=ev.event_id("weights", "r", source, 1),
        policy=source,
        version=1,
        weights_sha256="0" * 64,
        blob=_ref(writer),
    )


def test_a_ref_into_another_writers_bucket_is_an_identity_error() -> None:
    assert ev.identity_error(_weights("a", "a")) is None
    assert ev.identity_error(_weights("a", "")) is None  # the shared bucket of an older run
    why = ev.identity_error(_weights("a", "b"))
    assert why is not None and "'b'" in why
    ck = ev.CheckpointStored(
        run="r",
        source="a",
        event_id=ev.event_id("checkpoint", "r", "a", "stored", 2),
        policy="a",
        step=2,
        weights_sha256="0" * 64,
        weights=_ref("a"),
        optimizer=_ref("b"),
    )
    assert ev.identity_error(ck) is not None


def test_a_writer_that_is_not_a_name_does_not_decode() -> None:
    good = ev.encode(_weights("a", "a"))
    assert ev.decode(good) == _weights("a", "a")
    raw = msgspec.msgpack.decode(good)
    raw["blob"]["writer"] = "a.>"  # would be a subject wildcard in a bucket name
    with pytest.raises(EventDecodeError):
        ev.decode(msgspec.msgpack.encode(raw))


def test_a_ref_without_a_writer_keeps_the_bytes_it_had_before_the_field() -> None:
    ref = _ref("")
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(ref)) == {
        "store": "object",
        "key": ref.key,
        "sha256": ref.sha256,
        "size": 3,
    }
