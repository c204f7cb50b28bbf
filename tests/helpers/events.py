"""Events as unit tests build them: one factory per kind, every field a test does not care about
at a plain default, any field changed by keyword (`learner_step("a", 3, probe="sgt")`).

Event ids derive from the kind, the source and what tells two events of a test apart (step,
node, time), so two calls with different arguments never collide in a fold that dedupes by id;
pass `event_id=` where a test needs a particular one. Times are server nanoseconds (`time_ns`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import msgspec
import numpy as np

from mrl_actors import events as ev

RUN = "r"

Role = Literal["rollout", "learner"]


def _made(cls: type[Any], kind: str, source: str, parts: tuple[object, ...], **fields: Any) -> Any:
    fields.setdefault("run", RUN)
    fields.setdefault("event_id", ev.event_id(kind, fields["run"], source, *parts))
    return cls(source=source, **fields)


def registered(policy: str, **changes: Any) -> ev.PolicyRegistered:
    """`policy` registered by itself, a GPT-2-family model under the independent probe."""
    source = changes.pop("source", policy)
    fields = {"family": "gpt2", "model_path": "/m", "tokenizer_fingerprint": "f", **changes}
    fields.setdefault("probe", "independent")
    return _made(ev.PolicyRegistered, "policy", source, (), policy=policy, **fields)


def learner_step(
    policy: str,
    step: int,
    *,
    metrics: Mapping[str, float] | None = None,
    consumed: Iterable[ev.ConsumedEvent] = (),
    **changes: Any,
) -> ev.LearnerStepCompleted:
    """`policy`'s learner step `step`, written by its own learner unless `source=` says who."""
    source = changes.pop("source", policy)
    fields = {"probe": "independent", "weights_sha256": "0" * 64, **changes}
    return _made(
        ev.LearnerStepCompleted,
        "learner",
        source,
        (policy, step),
        policy=policy,
        step=step,
        consumed=list(consumed),
        metrics=dict(metrics or {}),
        **fields,
    )


def learner_timed(policy: str, step: int, **changes: Any) -> ev.LearnerStepTimed:
    """The timing of `policy`'s step `step`: 1 s of compute on 64 samples, no wait, no backlog."""
    source = changes.pop("source", policy)
    fields = {"wait_s": 0.0, "compute_s": 1.0, "samples": 64, "pending_groups": 0, **changes}
    return _made(
        ev.LearnerStepTimed,
        "learner",
        source,
        (policy, step, "timed"),
        policy=policy,
        step=step,
        **fields,
    )


def throughput(
    policy: str,
    *,
    node: str = "n0",
    samples_per_s: float = 1.0,
    role: Role = "rollout",
    **changes: Any,
) -> ev.ThroughputReported:
    """One slot's report over a 10 s window; written by the policy unless `source=` says who."""
    source = changes.pop("source", policy)
    fields = {"window_s": 10.0, "tokens_per_s": samples_per_s * 100, **changes}
    parts = (policy, node, role, fields.get("time_ns", 0))
    return _made(
        ev.ThroughputReported,
        "throughput",
        source,
        parts,
        node=node,
        policy=policy,
        role=role,
        samples_per_s=samples_per_s,
        **fields,
    )


def joined(node: str, slots: int, **changes: Any) -> ev.NodeJoined:
    fields = {"host": "h", "pid": 1, **changes}
    return _made(ev.NodeJoined, "node", node, (node, "joined"), node=node, slots=slots, **fields)


def heartbeat(node: str, slots: int, **changes: Any) -> ev.NodeHeartbeat:
    """`node`'s heartbeat, on its own subject unless `source=` forges another's."""
    source = changes.pop("source", node)
    parts = (node, "hb", changes.get("time_ns", 0))
    return _made(ev.NodeHeartbeat, "node", source, parts, node=node, slots=slots, **changes)


def assigned(
    epoch: int, placed: Iterable[tuple[str, int, str, Role] | ev.SlotAssignment], **changes: Any
) -> ev.SlotsAssigned:
    """The allocator's epoch `epoch`: `placed` as (node, slot, policy, role) or assignments."""
    source = changes.pop("source", "mwra")
    slots = [
        p
        if isinstance(p, ev.SlotAssignment)
        else ev.SlotAssignment(node=p[0], slot=p[1], policy=p[2], role=p[3])
        for p in placed
    ]
    return _made(
        ev.SlotsAssigned, "slots", source, (epoch,), epoch=epoch, assignments=slots, **changes
    )


def moved(seconds: float, **changes: Any) -> ev.SlotMoveMeasured:
    """n0's slot 0 moved from a to b at epoch 1, in `seconds`."""
    fields = {"node": "n0", "slot": 0, "epoch": 1, "from_policy": "a", "to_policy": "b", **changes}
    parts = ("moved", fields["node"], fields["slot"], fields["epoch"], changes.get("time_ns", 0))
    return _made(ev.SlotMoveMeasured, "slots", fields["node"], parts, seconds=seconds, **fields)


def completion(
    reward: float,
    ids: Sequence[int] = (1, 2),
    *,
    logprob: float = -0.5,
    text: str | None = None,
    success: bool | None = None,
) -> ev.Completion:
    """A finished completion of `ids`, each token at `logprob`; a success when reward > 0.5."""
    return ev.Completion(
        token_ids=ev.pack_i32(list(ids)),
        logprobs=ev.pack_f32(np.full(len(ids), logprob)),
        text="x" * len(ids) if text is None else text,
        finish_reason="stop",
        reward=reward,
        success=reward > 0.5 if success is None else success,
    )


def _experience(
    cls: type[Any], kind: str, policy: str, version: int, prompt: str, *parts: object, **fields: Any
) -> Any:
    """An experience event of `policy` on `prompt`, sampled at `version`, on its own subject."""
    ids = (policy, version, prompt, *parts)
    return _made(
        cls, kind, policy, ids, policy=policy, policy_version=version, prompt_id=prompt, **fields
    )


def group(
    policy: str, version: int, prompt: str, completions: Iterable[ev.Completion], **changes: Any
) -> ev.RolloutGroupCompleted:
    fields = {"prompt_text": "q", **changes}
    return _experience(
        ev.RolloutGroupCompleted,
        "rollout",
        policy,
        version,
        prompt,
        completions=list(completions),
        **fields,
    )


def reward_summary(
    policy: str, version: int, prompt: str, rewards: Sequence[float], **changes: Any
) -> ev.RewardSummary:
    """Successes are rewards above 0.5."""
    fields = {"success_rate": float(np.mean(np.asarray(rewards) > 0.5)), **changes}
    return _experience(
        ev.RewardSummary,
        "reward",
        policy,
        version,
        prompt,
        rewards=ev.pack_f32(list(rewards)),
        **fields,
    )


def success(
    policy: str, version: int, prompt: str, done: ev.Completion, *, index: int = 0, **changes: Any
) -> ev.SuccessVerified:
    """Completion `index` of `policy`'s group on `prompt`, verified."""
    fields = {"prompt_text": "q", "completion_index": index, "completion": done, **changes}
    return _experience(ev.SuccessVerified, "success", policy, version, prompt, index, **fields)


def replaced(event: ev.Event, **changes: Any) -> ev.Event:
    """`event` with some fields changed (a forgery of an honest event, an out-of-range value)."""
    return msgspec.structs.replace(event, **changes)
