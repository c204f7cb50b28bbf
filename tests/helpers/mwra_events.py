"""Events MWRA folds, built for tests of its fold and rule (run "r", times in seconds)."""

from __future__ import annotations

from mrl_actors import events as ev

RUN = "r"
S = 1_000_000_000  # ns per second


def joined(node: str, slots: int, t: float = 0.0) -> ev.NodeJoined:
    return ev.NodeJoined(
        run=RUN,
        source=node,
        event_id=ev.event_id("node", RUN, node, "joined"),
        time_ns=int(t * S),
        node=node,
        host="h",
        pid=1,
        slots=slots,
    )


def heartbeat(node: str, slots: int, t: float) -> ev.NodeHeartbeat:
    return ev.NodeHeartbeat(
        run=RUN,
        source=node,
        event_id=ev.event_id("node", RUN, node, "hb", t),
        time_ns=int(t * S),
        node=node,
        slots=slots,
    )


def registered(policy: str) -> ev.PolicyRegistered:
    return ev.PolicyRegistered(
        run=RUN,
        source=policy,
        event_id=ev.event_id("policy", RUN, policy),
        policy=policy,
        family="gpt2",
        model_path="/m",
        tokenizer_fingerprint="f",
        probe="independent",
    )


def throughput(
    node: str, policy: str, sps: float, t: float, *, window_s: float = 10.0
) -> ev.ThroughputReported:
    """One rollout slot's report: `sps` samples/s while generating."""
    return ev.ThroughputReported(
        run=RUN,
        source=policy,  # a policy's rollout actor writes it, naming the node it runs on
        event_id=ev.event_id("throughput", RUN, policy, node, t),
        time_ns=int(t * S),
        node=node,
        policy=policy,
        role="rollout",
        window_s=window_s,
        tokens_per_s=sps * 100,
        samples_per_s=sps,
    )


def stepped(
    policy: str, step: int, t: float, *, compute_s: float = 1.0, samples: int = 64
) -> ev.LearnerStepTimed:
    return ev.LearnerStepTimed(
        run=RUN,
        source=policy,
        event_id=ev.event_id("learner", RUN, policy, step, "timed"),
        time_ns=int(t * S),
        policy=policy,
        step=step,
        wait_s=0.0,
        compute_s=compute_s,
        samples=samples,
        pending_groups=0,
    )


def moved(seconds: float, t: float) -> ev.SlotMoveMeasured:
    return ev.SlotMoveMeasured(
        run=RUN,
        source="n0",
        event_id=ev.event_id("slots", RUN, "n0", "moved", t),
        time_ns=int(t * S),
        node="n0",
        slot=0,
        epoch=1,
        from_policy="a",
        to_policy="b",
        seconds=seconds,
    )
