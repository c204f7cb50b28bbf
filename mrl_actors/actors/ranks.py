"""An N-rank learner's side of the log: rank 0 takes the step's inputs, every rank learns on them.

Rank 0 is the learner actor's own runtime (`LeadRuntime`): it folds the log, decides a step's
inputs and appends every event, as a one-rank learner does. Before each step it sends the other
ranks the records the step consumes (the stream sequences `LearnerStepCompleted` will name, with
their events' bytes, decoded on arrival by the one typed decoder); each rank assembles them as
replay does (`split_consumed`, `assemble`) and runs the same probe and step on its share of the
micro-batches (`grpo.distributed`). The other ranks never touch the log.

`follow` is the loop of a rank > 0: it does what rank 0 announces, in order, until `Op.STOP`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import msgspec

from mrl_actors.actors.runtime import PolicyRuntime
from mrl_actors.actors.state import assemble, split_consumed
from mrl_actors.errors import EventDecodeError, MrlError
from mrl_actors.events import decode, encode
from mrl_actors.grpo.distributed import Op, Ops, ShardedGRPOLearner
from mrl_actors.logs import get_logger
from mrl_actors.probes import ProbeBatch, PromptInputs
from mrl_actors.probes.config import ProbeName
from mrl_actors.probes.registry import PROBE_NAMES
from mrl_actors.see.record import Record


class RankError(MrlError):
    """A learner rank was sent something it cannot act on."""


class RecordBytes(msgspec.Struct, frozen=True):
    seq: int
    subject: str
    time_ns: int
    event: bytes  # `events.encode` of the record's event


class StepOrder(msgspec.Struct, frozen=True):
    """One learner step's inputs, as rank 0 sends them to the other ranks."""

    probe: str
    version: int  # the learner version the step starts from
    records: list[RecordBytes]  # own groups in step order, then the peer events used


def encode_order(probe: ProbeName, version: int, inputs: list[PromptInputs]) -> bytes:
    recs: list[Record[Any]] = [i.own for i in inputs]
    for i in inputs:
        recs += [*i.peer_rollouts, *i.peer_rewards, *i.peer_successes]
    return msgspec.msgpack.encode(
        StepOrder(
            probe=probe,
            version=version,
            records=[RecordBytes(r.seq, r.subject, r.time_ns, encode(r.event)) for r in recs],
        )
    )


def decode_order(policy: str, data: bytes) -> tuple[ProbeName, int, list[PromptInputs]]:
    """The probe, the start version and the assembled inputs of a `StepOrder`."""
    try:
        order = msgspec.msgpack.decode(data, type=StepOrder)
        records = [Record(r.seq, decode(r.event), r.subject, r.time_ns) for r in order.records]
    except (msgspec.DecodeError, EventDecodeError) as exc:
        raise RankError(f"{policy}: a step order from rank 0 does not decode: {exc}") from exc
    probe = next((p for p in PROBE_NAMES if p == order.probe), None)
    if probe is None:
        raise RankError(f"{policy}: rank 0 asked for unknown probe {order.probe!r}")
    own, peers = split_consumed(policy, records)
    return probe, order.version, assemble(own, peers)


@dataclass
class LeadRuntime(PolicyRuntime):
    """Rank 0's runtime: `learn` first sends the step's inputs to the other ranks."""

    ops: Ops | None = None

    @classmethod
    def of(cls, rt: PolicyRuntime, ops: Ops) -> LeadRuntime:
        return cls(**{f.name: getattr(rt, f.name) for f in fields(PolicyRuntime)}, ops=ops)

    def learn(
        self, probe: ProbeName, inputs: list[PromptInputs], version: int
    ) -> tuple[ProbeBatch, dict[str, float]]:
        assert self.ops is not None and isinstance(self.learner, ShardedGRPOLearner)
        self.learner.push_if_changed()  # a restored checkpoint, or the run's logged version 0
        self.ops.send(Op.STEP, encode_order(probe, version, inputs))
        batch, metrics = super().learn(probe, inputs, version)
        metrics["learner_ranks"] = float(self.learner.world)
        return batch, metrics

    def stop(self) -> None:
        assert self.ops is not None
        self.ops.send(Op.STOP)


def follow(rt: PolicyRuntime, learner: ShardedGRPOLearner, ops: Ops) -> int:
    """A rank > 0: do what rank 0 announces until it says stop; returns the steps taken."""
    logger = get_logger(__name__, policy=rt.name, rank=learner.rank)
    steps = 0
    while True:
        op, payload = ops.recv()
        if op is Op.STOP:
            logger.info("rank_stopped", steps=steps)
            return steps
        if op is Op.STEP:
            probe, version, inputs = decode_order(rt.name, payload)
            learner.version = version
            rt.learn(probe, inputs, version)
            steps += 1
        elif op is Op.PUSH:
            learner.push()
        elif op is Op.OPTIM_GATHER:
            learner.gather_optimizer()
        elif op is Op.OPTIM_LOAD:
            learner.load_optimizer(None)
