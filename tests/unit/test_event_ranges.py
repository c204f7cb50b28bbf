"""Counters, list sizes and metrics have ranges in the schema; payload identities are bound.

The decoder is where every reader meets these bounds: an out-of-range value is an
`EventDecodeError` (so a dead letter), never a number a fold goes on with.
"""

from __future__ import annotations

import math

import pytest
from helpers import events as E

from mrl_actors import events as ev
from mrl_actors.errors import EventDecodeError

RUN = E.RUN
BIG = 2**64 - 1


def _learner(**changes: object) -> ev.LearnerStepCompleted:
    consumed = [ev.ConsumedEvent(3, "x")]
    return E.replaced(
        E.learner_step("gpt2", 1, consumed=consumed, metrics={"loss": 0.5}), **changes
    )  # type: ignore[return-value]


def _slots(epoch: int, assignments: list[ev.SlotAssignment]) -> ev.SlotsAssigned:
    return E.assigned(epoch, assignments)


def _one(slot: int = 0) -> ev.SlotAssignment:
    return ev.SlotAssignment(node="h1", slot=slot, policy="gpt2", role="learner")


def _rollout(version: int) -> ev.RolloutGroupCompleted:
    return ev.RolloutGroupCompleted(
        run=RUN,
        source="gpt2",
        event_id="g",
        policy="gpt2",
        policy_version=version,
        prompt_id="p",
        prompt_text="1+1",
        completions=[],
    )


def test_in_range_values_decode() -> None:
    top = 2**63 - 1
    assert ev.decode(ev.encode(_learner(step=top))).step == top  # type: ignore[union-attr]
    assert ev.decode(ev.encode(_slots(top, []))).epoch == top  # type: ignore[union-attr]


@pytest.mark.parametrize("value", [-1, 2**63, BIG])
@pytest.mark.parametrize(
    "build",
    [
        lambda v: _learner(step=v),
        lambda v: _rollout(v),
        lambda v: _slots(v, [_one()]),
        lambda v: _slots(1, [_one(v)]),
        lambda v: E.heartbeat("h1", v),
        lambda v: _learner(consumed=[ev.ConsumedEvent(v, "x")]),
    ],
    ids=["step", "policy_version", "epoch", "slot", "slots", "consumed_seq"],
)
def test_out_of_range_counters_are_refused(build: object, value: int) -> None:
    data = ev.encode(build(value))  # type: ignore[operator]
    with pytest.raises(EventDecodeError):
        ev.decode(data)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_metrics_are_refused(bad: float) -> None:
    with pytest.raises(EventDecodeError):
        ev.decode(ev.encode(_learner(metrics={"loss": bad})))


def test_an_assignment_list_is_bounded() -> None:
    many = [_one(i) for i in range(100_000)]
    with pytest.raises(EventDecodeError):
        ev.decode(ev.encode(_slots(2, many)))
    ok = [_one(i) for i in range(ev.MAX_ASSIGNMENTS)]
    assert len(ev.decode(ev.encode(_slots(2, ok))).assignments) == ev.MAX_ASSIGNMENTS  # type: ignore[union-attr]


def test_the_schema_bounds_every_integer_field() -> None:
    """Regression guard: every integer of every event has a minimum and a maximum (-1 only
    where it is the field's default and means "none")."""
    schema = ev.json_schema()

    def walk(node: object, where: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "integer":
                assert node.get("minimum") == (-1 if node.get("default") == -1 else 0), where
                assert node.get("maximum") == 2**63 - 1, where
            for k, v in node.items():
                walk(v, f"{where}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]")

    walk(schema["$defs"], "$defs")


def test_payload_identity_must_be_the_subject_source() -> None:
    honest = E.throughput("gpt2", node="h1", window_s=1.0, tokens_per_s=1.0)
    assert ev.identity_error(honest) is None
    assert "llama" in (ev.identity_error(E.replaced(honest, policy="llama")) or "")
    assert "h9" in (ev.identity_error(E.heartbeat("h9", 4096, source="h1")) or "")
    assert ev.identity_error(E.learner_timed("llama", 1, source="gpt2", samples=4)) is not None


def test_every_kind_has_one_writer_role() -> None:
    assert set(ev.WRITER_ROLES) == ev.KINDS - {"blob"}
