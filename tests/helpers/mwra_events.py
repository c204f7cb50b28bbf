"""Events MWRA folds, built for tests of its fold and rule (run "r", times in seconds)."""

from __future__ import annotations

from helpers import events as E
from mrl_actors import events as ev

RUN = E.RUN
S = 1_000_000_000  # ns per second


def _ns(t: float) -> int:
    return int(t * S)


def joined(node: str, slots: int, t: float = 0.0) -> ev.NodeJoined:
    return E.joined(node, slots, time_ns=_ns(t))


def heartbeat(node: str, slots: int, t: float) -> ev.NodeHeartbeat:
    return E.heartbeat(node, slots, time_ns=_ns(t))


def registered(policy: str) -> ev.PolicyRegistered:
    return E.registered(policy)


def throughput(
    node: str, policy: str, sps: float, t: float, *, window_s: float = 10.0
) -> ev.ThroughputReported:
    """One rollout slot's report: `sps` samples/s while generating (a policy's rollout actor
    writes it, naming the node it runs on)."""
    return E.throughput(policy, node=node, samples_per_s=sps, time_ns=_ns(t), window_s=window_s)


def stepped(
    policy: str, step: int, t: float, *, compute_s: float = 1.0, samples: int = 64
) -> ev.LearnerStepTimed:
    return E.learner_timed(policy, step, time_ns=_ns(t), compute_s=compute_s, samples=samples)


def moved(seconds: float, t: float) -> ev.SlotMoveMeasured:
    return E.moved(seconds, time_ns=_ns(t))
