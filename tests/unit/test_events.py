"""Events: packed arrays, round trips, and every kind of bad input classified for dead letters."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mrl_actors import events as ev


def _completion(ids: list[int], lps: list[float], reward: float = 1.0) -> ev.Completion:
    return ev.Completion(
        token_ids=ev.pack_i32(ids),
        logprobs=ev.pack_f32(lps),
        text="x",
        finish_reason="stop",
        reward=reward,
        success=reward > 0,
    )


def _rollout(comps: list[ev.Completion]) -> ev.RolloutGroupCompleted:
    return ev.RolloutGroupCompleted(
        run="r",
        source="qwen",
        event_id=ev.event_id("rollout", "r", "qwen", 0, "p"),
        policy="qwen",
        policy_version=0,
        prompt_id="p",
        prompt_text="q",
        completions=comps,
    )


finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(-(2**31), 2**31 - 1), finite32), max_size=20),
        min_size=1,
        max_size=4,
    )
)
def test_rollout_round_trips_bit_exactly(groups: list[list[tuple[int, float]]]) -> None:
    comps = [_completion([i for i, _ in g], [f for _, f in g]) for g in groups]
    event = _rollout(comps)
    back = ev.decode(ev.encode(event))
    assert back == event
    for c, g in zip(back.completions, groups, strict=True):  # type: ignore[union-attr]
        assert c.token_ids_array().tolist() == [i for i, _ in g]
        assert c.logprobs_array().dtype == np.float32
        np.testing.assert_array_equal(c.logprobs_array(), np.array([f for _, f in g], np.float32))


def test_packed_arrays_are_little_endian_and_read_only() -> None:
    assert ev.pack_i32([1, -1]) == b"\x01\x00\x00\x00\xff\xff\xff\xff"
    arr = ev.unpack_f32(ev.pack_f32([0.5]))
    assert arr.tolist() == [0.5] and not arr.flags.writeable


def test_constructing_non_finite_or_ragged_events_fails_early() -> None:
    with pytest.raises(ValueError, match=r"completions\[1\].logprobs\[0\] is .*nan"):
        _rollout([_completion([1], [0.0]), _completion([1], [math.nan])])
    _rollout([_completion([1, 2], [3e38, 3e38])])  # huge but finite
    with pytest.raises(ValueError, match=r"completions\[0\]: token_ids has 2 entries"):
        _rollout([_completion([1, 2], [0.0])])
    with pytest.raises(ValueError, match=r"completions\[0\].reward is inf"):
        _rollout([_completion([1], [0.0], reward=math.inf)])


def _payload(**changes: object) -> bytes:
    obj = msgspec.msgpack.decode(ev.encode(_rollout([_completion([1, 2], [-0.5, -0.25])])))
    obj.update(changes)
    return msgspec.msgpack.encode(obj)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\xc1\xc1\xc1", "garbage"),
        (b"", "garbage"),
        (_payload()[:-3], "garbage"),
        (_payload(type="Mystery.v1"), "unknown_tag"),
        (msgspec.msgpack.encode([1, 2, 3]), "unknown_tag"),
        (_payload(policy_version="seven"), "schema"),
        (_payload(completions="none"), "schema"),
        (_payload(prompt_token_ids=b"abc"), "schema"),
        (_payload(temperature=math.nan), "non_finite"),
        (
            _payload(
                completions=[
                    {
                        "token_ids": ev.pack_i32([1]),
                        "logprobs": ev.pack_f32([math.inf]),
                        "text": "",
                        "finish_reason": "stop",
                        "reward": 0.0,
                        "success": False,
                    }
                ]
            ),
            "non_finite",
        ),
    ],
)
def test_bad_payloads_are_classified(data: bytes, kind: str) -> None:
    with pytest.raises(ev.EventDecodeError) as info:
        ev.decode(data)
    assert info.value.kind == kind  # type: ignore[attr-defined]


def test_oversized_payload_is_refused_before_decoding() -> None:
    data = _payload()
    with pytest.raises(ev.EventDecodeError) as info:
        ev.decode(data, max_bytes=len(data) - 1)
    assert info.value.kind == "oversized"  # type: ignore[attr-defined]


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    event = ev.decode(_payload(added_in_v1_1="x"))
    assert isinstance(event, ev.RolloutGroupCompleted)


def test_subjects_and_ids_are_deterministic() -> None:
    event = _rollout([])
    assert event.subject() == "mrl.r.rollout.qwen"
    assert event.event_id == "r/rollout/qwen/0/p"
    assert {"rollout", "reward", "success", "learner", "deadletter", "blob"} <= ev.KINDS


def test_to_builtins_unpacks_arrays_for_json() -> None:
    obj = ev.to_builtins(_rollout([_completion([7], [-0.5])]))
    assert obj["completions"][0]["token_ids"] == [7]
    assert obj["completions"][0]["logprobs"] == [-0.5]
    assert obj["type"] == "RolloutGroupCompleted.v1"
