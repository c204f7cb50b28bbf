"""A node user's forged run-level writes, against a real server: stored, and ignored.

Any node may start a run and hold MWRA's lease, so the server lets every node user write the
start subjects and `slots.mwra`. What it stores there cannot steer an honest node: the node's
fold (`run.node._Assigned`, with `mwra.validate.DecisionCheck`) reads the same log with and
without the forgeries and ends in the same state, and the report keeps the first registration.
And end to end: two `mrl-node` processes run a placed lockstep spec over a log holding the
forgeries (written as `node-h1` after the honest start, before either node reads the log) and
end with the final weights, bit for bit, of the same spec run over a log without them.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers.specs import TINY16, slots, spec_toml

from mrl_actors import events as ev
from mrl_actors.report.summary import summarize
from mrl_actors.run.node import _Assigned
from mrl_actors.run.placement import default_slots, initial_assignment
from mrl_actors.run.start import record_start
from mrl_actors.see.access import open_log
from mrl_actors.see.auth import node_permissions
from mrl_actors.see.server import EmbeddedServer
from mrl_actors.see.stream import LogConfig
from mrl_actors.spec import parse_spec

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

RUN = "r"
CFG = LogConfig(ack_timeout_s=2.0)


def _spec(models_dir: Path) -> Any:
    return parse_spec(
        f"""
[run]
name = "{RUN}"
mode = "lockstep"
probe = "independent"
steps = 2

[[placement.slots]]
node = "h1"
slot = "cpu:0"
policy = "a"
role = "learner"

[[placement.slots]]
node = "h2"
slot = "cpu:0"
policy = "b"
role = "learner"

[[policies]]
name = "a"
model = "{models_dir / "gpt2"}"

[[policies]]
name = "b"
model = "{models_dir / "gpt2"}"
"""
    )


def _registered(policy: str, model: str) -> ev.PolicyRegistered:
    return ev.PolicyRegistered(
        run=RUN,
        source=policy,
        event_id=ev.event_id("policy", RUN, policy, "registered", model),
        policy=policy,
        family="gpt2",
        model_path=model,
        tokenizer_fingerprint="f",
        probe="independent",
    )


def _slots(
    source: str, epoch: int, assignments: list[ev.SlotAssignment], run: str = RUN
) -> ev.SlotsAssigned:
    return ev.SlotsAssigned(
        run=run,
        source=source,
        event_id=ev.event_id("slots", run, source, "forged", epoch),
        epoch=epoch,
        assignments=assignments,
        seen_seq=1,
    )


async def _fold(log: Any, spec: Any, node: str) -> _Assigned:
    seen = _Assigned(log, spec, node, default_slots())
    async for rec in log.read(start_seq=1, kinds=["slots", "learner", "run", "policy", "node"]):
        seen.fold(rec)
    return seen


@pytest.mark.parametrize("attacked", [False, True], ids=["unattacked", "attacked"])
async def test_a_node_users_forgeries_do_not_steer_an_honest_node(
    tmp_path: Path, models_dir: Path, attacked: bool
) -> None:
    spec = _spec(models_dir)
    nodes = {
        f"node-{n}": node_permissions(RUN, n, [p], ["a", "b"], user=f"node-{n}")
        for n, p in (("h1", "a"), ("h2", "b"))
    }
    async with EmbeddedServer(
        tmp_path / "nats", run=RUN, policies=["a", "b"], extra_users=nodes
    ) as srv:
        async with open_log(info=srv.info(), config=CFG, create=True):
            pass
        info = srv.info()
        async with open_log(info=info, user="node-h2", config=CFG) as h2:
            # the honest start, as the first node writes it
            for e in (_registered("a", "gpt2"), _registered("b", "gpt2")):
                assert await h2.append_first(e) is not None
            placement = initial_assignment(spec)
            assert placement is not None and await h2.append_first(placement) is not None
        if attacked:
            steal = [
                ev.SlotAssignment(node="h1", slot=s, policy=p, role="learner")
                for s, p in ((0, "a"), (1, "b"))
            ]
            forged: list[ev.Event] = [
                _slots("mwra", 10**9, steal),
                _slots("mwra", 2**63 - 1, []),
                _slots("mwra", 2, steal),
                _slots("placement", 2, steal),
                ev.RunFinished(run=RUN, source="mrl", event_id="r/run/mrl/forged", status="failed"),
                _registered("b", "/evil/model"),
            ]
            async with open_log(info=info, user="node-h1", config=CFG) as h1:
                for e in forged:
                    await h1.append(e)  # the server stores each: a node may write there
        async with open_log(info=info, user="reader", config=CFG) as reader:
            honest = await _fold(reader, spec, "h2")
            events = [r.event async for r in reader.read(start_seq=1)]
    assert honest.state.epoch == 1
    assert {(h.slot, h.policy, h.role) for h in honest.state.hosted} == {(0, "b", "learner")}
    assert not honest.done  # a RunFinished does not end a node: the log's learner steps do
    assert honest.check.refused == (4 if attacked else 0)
    assert summarize(events)["policies"]["b"]["model_path"] == "gpt2"


# --------------------------------------------------------------------------- end to end

LIVE = "t-forge"
STEPS = 2
NODES = {"h1": "gpt2", "h2": "llama"}  # node -> the policy its user may host


def _live_spec(models_dir: Path) -> str:
    return spec_toml(
        models_dir,
        run={"name": LIVE, "probe": "independent", "steps": STEPS},
        placement=slots(("h1", "cpu:0", "gpt2", "learner"), ("h2", "cpu:0", "llama", "learner")),
        tiny=TINY16,
    )


def _live_forgeries() -> list[ev.Event]:
    """As node-h1: both learners to h1 (epoch 10**9), an empty epoch 2**63-1, a second
    placement, the run's end, and llama registered with another model."""
    steal = [
        ev.SlotAssignment(node="h1", slot=s, policy=p, role="learner")
        for s, p in ((0, "gpt2"), (1, "llama"))
    ]

    return [
        _slots("mwra", 10**9, steal, run=LIVE),
        _slots("mwra", 2**63 - 1, [], run=LIVE),
        _slots("placement", 2, steal, run=LIVE),
        ev.RunFinished(run=LIVE, source="mrl", event_id=f"{LIVE}/run/mrl/forged", status="failed"),
        ev.PolicyRegistered(
            run=LIVE,
            source="llama",
            event_id=ev.event_id("policy", LIVE, "llama", "registered", "evil"),
            policy="llama",
            family="llama",
            model_path="/evil/model",
            tokenizer_fingerprint="f",
            probe="independent",
        ),
    ]


async def _run_nodes(
    tmp: Path, spec_path: Path, text: str, cache: Path, attacked: bool
) -> tuple[list[Any], dict[int, ev.Event], dict[str, str]]:
    """One placed run on its own server: the honest start (as node-h2), the forgeries (as
    node-h1) when `attacked`, then both nodes. Its records, the forgeries stored (seq ->
    event, read back before the nodes start), and each node's output."""
    spec = parse_spec(text)
    names = [p.name for p in spec.policies]
    users = {
        f"node-{n}": node_permissions(LIVE, n, [p], names, user=f"node-{n}")
        for n, p in NODES.items()
    }
    async with EmbeddedServer(tmp / "nats", run=LIVE, policies=names, extra_users=users) as srv:
        info = srv.info()
        async with open_log(info=info, config=CFG, create=True):
            pass  # the admin: the stream, the lease and each policy's blob bucket
        async with open_log(info=info, user="node-h2", config=CFG) as h2:
            await record_start(h2, spec, text)  # as the first node to start writes it
        stored: dict[int, ev.Event] = {}
        if attacked:
            async with open_log(info=info, user="node-h1", config=CFG) as h1:
                for e in _live_forgeries():
                    stored[await h1.append(e)] = e  # a node may write there: each is stored
        async with open_log(info=info, user="reader", config=CFG) as reader:
            for seq, e in stored.items():  # in the log before any node reads it
                assert (await reader.get(seq)).event == e

        outs: dict[str, str] = {}

        async def node(name: str) -> None:
            env = {**os.environ, "MRL_CACHE_DIR": str(cache), "MRL_NATS_USER": f"node-{name}"}
            env["MRL_NATS_PASSWORD"] = srv.users[f"node-{name}"]
            cmd = [sys.executable, "-m", "mrl_actors.cli.mrl_node", str(spec_path)]
            cmd += ["--node", name, "--run-dir", str(tmp / name), "--server", srv.url]
            cmd += ["--slots", "cpu:1", "--liveness-s", "1"]
            with anyio.fail_after(600):
                done = await anyio.run_process(cmd, env=env, check=False, stderr=subprocess.STDOUT)
            outs[name] = done.stdout.decode(errors="replace")
            assert done.returncode == 0, f"node {name}:\n{outs[name][-3000:]}"

        async with anyio.create_task_group() as tg:
            for name in NODES:
                tg.start_soon(node, name)
        async with open_log(info=info, user="reader", config=CFG) as reader:
            records = [rec async for rec in reader.read(start_seq=1)]
    return records, stored, outs


def _final_weights(tmp: Path) -> dict[str, str]:
    """sha256 of each policy's last checkpoint file, on the node it was placed on."""
    out = {}
    for node, policy in NODES.items():
        path = tmp / node / "checkpoints" / policy / f"step-{STEPS}" / "model.safetensors"
        out[policy] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_a_run_over_a_node_users_forgeries_ends_with_the_unattacked_weights(
    tmp_path: Path, models_dir: Path, model_cache: Path
) -> None:
    text = _live_spec(models_dir)
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(text)
    runs: dict[bool, tuple[list[Any], dict[int, ev.Event], dict[str, str]]] = {}
    weights: dict[bool, dict[str, str]] = {}
    for attacked in (True, False):
        tmp = tmp_path / ("attacked" if attacked else "clean")
        runs[attacked] = anyio.run(_run_nodes, tmp, spec_path, text, model_cache, attacked)
        weights[attacked] = _final_weights(tmp)
        for node, policy in NODES.items():  # each learner stayed where it was placed
            other = "h2" if node == "h1" else "h1"
            assert not (tmp / other / "checkpoints" / policy).exists()
    (records, stored, outs), (clean, none, _) = runs[True], runs[False]
    assert len(stored) == len(_live_forgeries()) and not none
    for node in NODES:  # every node's fold met each forged decision and refused it
        assert outs[node].count("assignment_refused") >= 3, outs[node][-3000:]

    def steps(of: list[Any], policy: str) -> list[ev.LearnerStepCompleted]:
        return [
            r.event
            for r in of
            if isinstance(r.event, ev.LearnerStepCompleted) and r.event.policy == policy
        ]

    for policy in NODES.values():
        assert [e.step for e in steps(records, policy)] == list(range(1, STEPS + 1))
        shas = [e.weights_sha256 for e in steps(records, policy)]
        assert shas == [e.weights_sha256 for e in steps(clean, policy)]
    assert weights[True] == weights[False]  # the final weights files, bit for bit
    summary = summarize([r.event for r in records])
    assert summary["policies"]["llama"]["model_path"] == str(models_dir / "mistral-7b")
