"""A node user's forged run-level writes, against a real server: stored, and ignored.

Any node may start a run and hold MWRA's lease, so the server lets every node user write the
start subjects and `slots.mwra`. What it stores there cannot steer an honest node: the node's
fold (`run.node._Assigned`, with `mwra.validate.DecisionCheck`) reads the same log with and
without the forgeries and ends in the same state, and the report keeps the first registration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mrl_actors import events as ev
from mrl_actors.report.summary import summarize
from mrl_actors.run.node import _Assigned
from mrl_actors.run.placement import default_slots, initial_assignment
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


def _slots(source: str, epoch: int, assignments: list[ev.SlotAssignment]) -> ev.SlotsAssigned:
    return ev.SlotsAssigned(
        run=RUN,
        source=source,
        event_id=ev.event_id("slots", RUN, source, "forged", epoch),
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
