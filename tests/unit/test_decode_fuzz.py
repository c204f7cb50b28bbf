"""`events.decode` is total: whatever the bytes, only `EventDecodeError` leaves it.

Every reader of the log dead-letters an `EventDecodeError` and goes on, so any other exception
escaping `decode` is a message that can stop a run. Before this was guarded, `b"\\xa1\\xff"` (a
msgpack string of invalid UTF-8) raised `UnicodeDecodeError`: 20% of random byte strings and 65%
of byte-mutated valid events escaped that way.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mrl_actors.errors import EventDecodeError
from mrl_actors.events import decode

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "schemas" / "samples").glob("*.msgpack"))
KINDS = {"garbage", "unknown_tag", "schema", "oversized", "non_finite"}  # `DeadLettered.error`


def _decodes_or_refuses(data: bytes) -> None:
    try:
        decode(data)
    except EventDecodeError as exc:
        assert getattr(exc, "kind", None) in KINDS, exc


def test_samples_cover_every_tag() -> None:
    assert len(SAMPLES) >= 15
    for path in SAMPLES:
        decode(path.read_bytes())


def test_invalid_utf8_string_is_a_decode_error() -> None:
    """Regression: this published on `mrl.<run>.rollout.x` ended a live run."""
    with pytest.raises(EventDecodeError) as info:
        decode(b"\xa1\xff")
    assert info.value.kind == "garbage"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        b"\x91" * 100_000,  # nested arrays, deeper than the interpreter's recursion limit
        b"\xdd\xff\xff\xff\xff",  # an array claiming 4 G elements
        msgspec.msgpack.encode({"type": "RolloutGroupCompleted.v0"}),  # upcast: no `model`
        msgspec.msgpack.encode({"type": "RolloutGroupCompleted.v0", "model": [1]}),
        msgspec.msgpack.encode({"type": "RolloutGroupCompleted.v0", "model": "m", "run": 3}),
        msgspec.msgpack.encode({"type": ["RunStarted.v1"] * 1000}),
        msgspec.msgpack.encode([1, 2, 3]),
    ],
)
def test_known_failure_modes_are_decode_errors(data: bytes) -> None:
    _decodes_or_refuses(data)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_decode_errors(data: bytes) -> None:
    _decodes_or_refuses(data)


@st.composite
def mutated_sample(draw: st.DrawFn) -> bytes:
    """A valid event of any type (v0 included), with bytes overwritten, inserted or cut."""
    data = bytearray(draw(st.sampled_from(SAMPLES)).read_bytes())
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "set" and data:
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[i : i + draw(st.integers(1, 8))]
        else:
            data = data[:i]
    return bytes(data)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_sample())
def test_mutated_valid_events_raise_only_decode_errors(data: bytes) -> None:
    _decodes_or_refuses(data)
