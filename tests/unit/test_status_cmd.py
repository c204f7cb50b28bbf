"""`mrl status`'s fold: nodes alive, dead or gone by their last sign of life; slots by the
newest epoch; versions, backlog and rates by policy."""

from __future__ import annotations

from helpers import events as E

from mrl_actors import events as ev
from mrl_actors.cli.status_cmd import RunStatus

RUN = E.RUN
S = 1_000_000_000


def test_nodes_slots_versions_backlog_and_rates() -> None:
    st = RunStatus()
    st.fold(1, E.joined("h1", 1, host="a", devices=["cpu"]))
    st.fold(2, E.joined("h2", 2, host="b", pid=2))
    st.fold(3, E.heartbeat("h1", 1, epoch=2, time_ns=50 * S))
    st.fold(4, E.joined("h3", 1, host="c", pid=3, time_ns=50 * S))
    st.fold(
        5,
        ev.NodeLeft(
            run=RUN, source="h3", event_id="l", time_ns=51 * S, node="h3", reason="completed"
        ),
    )
    st.fold(6, E.heartbeat("h2", 1, source="h4", time_ns=1))  # forged
    for epoch, policy in ((2, "b"), (1, "a")):  # an older epoch after a newer one changes nothing
        st.fold(7, E.assigned(epoch, [("h1", 0, policy, "learner")], time_ns=0))
    for seq in (10, 11, 12):
        st.add_group(seq, "a")
    st.fold(
        13, E.learner_step("a", 1, consumed=[ev.ConsumedEvent(10, "x"), ev.ConsumedEvent(11, "y")])
    )
    st.fold(14, E.throughput("a", node="h1", window_s=1.0, samples_per_s=4.0, tokens_per_s=100.0))
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
        1,
        ev.RunStarted(
            run=RUN, source="mrl", event_id="s", spec_toml=spec, seed=0, code_version="x"
        ),
    )
    st.fold(2, E.joined("local", 1, host="a", devices=["cpu:0"]))
    for version in (0, 1):
        st.fold(
            3 + version,
            ev.WeightsPublished(
                run=RUN,
                source="a",
                event_id=f"w{version}",
                policy="a",
                version=version,
                weights_sha256="0" * 64,
                blob=ev.BlobRef(key="0" * 64, sha256="0" * 64, size=1, store="object"),
            ),
        )
    metrics = {"staleness_mean": 0.5, "staleness_max": 1.0, "rollout_wait_s": 0.25}
    st.fold(5, E.learner_step("a", 1, metrics=metrics))
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
