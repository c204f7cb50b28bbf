"""`mrl status`'s fold: nodes alive, dead or gone by their last sign of life; slots by the
newest epoch; versions, backlog and rates by policy."""

from __future__ import annotations

from mrl_actors import events as ev
from mrl_actors.cli.status_cmd import RunStatus

RUN = "r"
S = 1_000_000_000


def _base(kind: str, source: str, *parts: object, t: int) -> dict[str, object]:
    return {
        "run": RUN,
        "source": source,
        "event_id": ev.event_id(kind, RUN, source, *parts),
        "time_ns": t,
    }


def test_nodes_slots_versions_backlog_and_rates() -> None:
    st = RunStatus()
    st.fold(
        1,
        ev.NodeJoined(
            **_base("node", "h1", "j", t=0), node="h1", host="a", pid=1, slots=1, devices=["cpu"]
        ),
    )
    st.fold(2, ev.NodeJoined(**_base("node", "h2", "j", t=0), node="h2", host="b", pid=2, slots=2))
    st.fold(3, ev.NodeHeartbeat(**_base("node", "h1", "hb", t=50 * S), node="h1", slots=1, epoch=2))
    st.fold(
        4, ev.NodeJoined(**_base("node", "h3", "j", t=50 * S), node="h3", host="c", pid=3, slots=1)
    )
    st.fold(5, ev.NodeLeft(**_base("node", "h3", "l", t=51 * S), node="h3", reason="completed"))
    st.fold(6, ev.NodeHeartbeat(**_base("node", "h4", "hb", t=1), node="h2", slots=1))  # forged
    for epoch, policy in ((2, "b"), (1, "a")):  # an older epoch after a newer one changes nothing
        st.fold(
            7,
            ev.SlotsAssigned(
                **_base("slots", "mwra", epoch, t=0),
                epoch=epoch,
                assignments=[ev.SlotAssignment(node="h1", slot=0, policy=policy, role="learner")],
            ),
        )
    for seq in (10, 11, 12):
        st.add_group(seq, "a")
    st.fold(
        13,
        ev.LearnerStepCompleted(
            **_base("learner", "a", 1, t=0),
            policy="a",
            step=1,
            probe="independent",
            consumed=[ev.ConsumedEvent(10, "x"), ev.ConsumedEvent(11, "y")],
            weights_sha256="0" * 64,
        ),
    )
    st.fold(
        14,
        ev.ThroughputReported(
            **_base("throughput", "a", 1, t=0),
            node="h1",
            policy="a",
            role="rollout",
            window_s=1.0,
            tokens_per_s=100.0,
            samples_per_s=4.0,
        ),
    )
    view = st.view(now_ns=60 * S, liveness_s=10.0, dead_after=2.0)
    assert {n: v["state"] for n, v in view["nodes"].items()} == {
        "h1": "alive",  # 10 s since its heartbeat: within two intervals
        "h2": "dead",  # 60 s of silence
        "h3": "left",
    }
    assert view["epoch"] == 2 and view["slots"] == [
        {"node": "h1", "slot": 0, "policy": "b", "role": "learner"}
    ]
    assert view["policies"]["a"]["version"] == 1
    assert view["policies"]["a"]["backlog"] == 1  # group 12 is not consumed yet
    assert view["policies"]["a"]["rates"] == {
        "rollout@h1": {"samples_per_s": 4.0, "tokens_per_s": 100.0}
    }
    assert not view["finished"]


def test_status_shows_mode_replicas_weight_versions_staleness_wait_and_slots() -> None:
    from mrl_actors.cli.status_cmd import render

    st = RunStatus()
    spec = '[run]\nname = "r"\nmode = "async"\nrollout_replicas = 2\nmax_staleness = 1\n'
    st.fold(
        1, ev.RunStarted(**_base("run", "mrl", "s", t=0), spec_toml=spec, seed=0, code_version="x")
    )
    st.fold(
        2,
        ev.NodeJoined(
            **_base("node", "local", "j", t=0),
            node="local",
            host="a",
            pid=1,
            slots=1,
            devices=["cpu:0"],
        ),
    )
    for version in (0, 1):
        st.fold(
            3 + version,
            ev.WeightsPublished(
                **_base("weights", "a", version, t=0),
                policy="a",
                version=version,
                weights_sha256="0" * 64,
                blob=ev.BlobRef(key="0" * 64, sha256="0" * 64, size=1, store="object"),
            ),
        )
    st.fold(
        5,
        ev.LearnerStepCompleted(
            **_base("learner", "a", 1, t=0),
            policy="a",
            step=1,
            probe="independent",
            consumed=[],
            weights_sha256="0" * 64,
            metrics={"staleness_mean": 0.5, "staleness_max": 1.0, "rollout_wait_s": 0.25},
        ),
    )
    view = st.view(now_ns=S, liveness_s=10.0, dead_after=2.0)
    assert (view["mode"], view["rollout_replicas"], view["max_staleness"]) == ("async", 2, 1)
    a = view["policies"]["a"]
    assert a["weights_version"] == 1 and a["staleness_mean"] == 0.5 and a["rollout_wait_s"] == 0.25
    text = render(view)
    assert "run: running, mode async, 2 rollout replica(s) per policy, max staleness 1" in text
    assert "weights=v1 staleness=0.50/1 rollout_wait=0.25s" in text
    assert "slots (none assigned: each node hosts its policies on its first slot):" in text
    assert "local/cpu:0 a            learner + 2 rollout actor(s)" in text  # never empty


def test_a_spec_that_leaves_the_mode_out_reads_as_the_defaults() -> None:
    from mrl_actors.report.run_page import run_spec
    from mrl_actors.spec import RunSection

    d = RunSection(name="r")
    assert run_spec('[run]\nname = "r"\n') == {
        "mode": d.mode,
        "rollout_replicas": d.rollout_replicas,
        "max_staleness": d.max_staleness,
    }
