"""`mrl status RUN_DIR|--server URL`: a run's nodes, slots, policy versions, backlog and rates.

Everything comes from the log: nodes from `NodeJoined`/`NodeHeartbeat`/`NodeLeft` (alive while
their last sign of life is younger than `--dead-after` heartbeat intervals), slots from the
newest `SlotsAssigned`, each policy's version from its last learner step, its backlog from the
rollout groups no learner step of it consumed yet, its rates from the last `ThroughputReported`
of each (node, role).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mrl_actors.cli import args as types

if TYPE_CHECKING:
    from mrl_actors.report.slots import SlotFold
    from mrl_actors.see.port import LogPort


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="nodes, slots, versions, backlog and rates of a run")
    p.add_argument("run_dir", nargs="?", type=Path, help="run directory (holds nats/)")
    p.add_argument("--server", metavar="URL", type=types.server_urls, help="NATS URL(s)")
    p.add_argument("--run", type=types.token, help="run id (default: the only one there)")
    p.add_argument(
        "--liveness-s", type=float, default=10.0, help="the nodes' heartbeat interval (seconds)"
    )
    p.add_argument(
        "--dead-after",
        type=float,
        default=2.0,
        help="a node silent this many heartbeat intervals is dead",
    )
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(handler=_status)


@dataclass
class RunStatus:
    """The fold: what `mrl status` prints."""

    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    epoch: int = 0
    slots: list[dict[str, Any]] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)
    groups: dict[str, set[int]] = field(default_factory=dict)  # policy -> rollout group seqs
    consumed: set[int] = field(default_factory=set)
    rates: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    finished: bool = False
    system: dict[str, Any] = field(default_factory=dict)  # mode, replicas, staleness bound
    weights: dict[str, int] = field(default_factory=dict)  # policy -> newest published version
    learning: dict[str, dict[str, float]] = field(default_factory=dict)  # last step's timings
    where: SlotFold = field(default_factory=lambda: _slot_fold())  # the report's slot table

    def fold(self, seq: int, event: Any) -> None:
        from mrl_actors import events as ev

        if ev.identity_error(event) is not None:  # a payload naming another writer
            return
        self.where.fold(event)
        match event:
            case ev.NodeJoined(node=n) if n == event.source:
                self.nodes[n] = {
                    "host": event.host,
                    "slots": event.slots,
                    "devices": list(event.devices),
                    "last_seen_ns": event.time_ns,
                    "left": "",
                }
            case ev.NodeHeartbeat(node=n) if n == event.source:
                node = self.nodes.setdefault(n, {"host": "", "slots": event.slots, "devices": []})
                node.update(last_seen_ns=event.time_ns, left="", epoch=event.epoch)
            case ev.NodeLeft(node=n) if n == event.source and n in self.nodes:
                self.nodes[n]["left"] = event.reason
            case ev.SlotsAssigned(epoch=e) if e > self.epoch:
                self.epoch = e
                self.slots = [
                    {"node": a.node, "slot": a.slot, "policy": a.policy, "role": a.role}
                    for a in event.assignments
                ]
            case ev.LearnerStepCompleted(policy=p) if p == event.source:
                self.versions[p] = max(self.versions.get(p, 0), event.step)
                self.consumed.update(c.seq for c in event.consumed)
                keys = ("staleness_mean", "staleness_max", "rollout_wait_s", "step_time_s")
                self.learning[p] = {k: event.metrics[k] for k in keys if k in event.metrics}
            case ev.WeightsPublished(policy=p) if p == event.source:
                self.weights[p] = max(self.weights.get(p, 0), event.version)
            case ev.RunStarted():
                from mrl_actors.report.run_page import run_spec

                self.system = run_spec(event.spec_toml, event.run_mode)
            case ev.ThroughputReported(policy=p) if p == event.source:
                self.rates.setdefault(p, {})[f"{event.role}@{event.node}"] = {
                    "samples_per_s": event.samples_per_s,
                    "tokens_per_s": event.tokens_per_s,
                }
            case ev.RunFinished():
                self.finished = True
            case _:
                pass

    def add_group(self, seq: int, policy: str) -> None:
        self.groups.setdefault(policy, set()).add(seq)

    def view(self, now_ns: int, liveness_s: float, dead_after: float) -> dict[str, Any]:
        nodes = {}
        for name, n in sorted(self.nodes.items()):
            age = (now_ns - n.get("last_seen_ns", 0)) / 1e9
            state = (
                "left" if n.get("left") else "alive" if age < dead_after * liveness_s else "dead"
            )
            nodes[name] = {**n, "state": state, "age_s": round(age, 1)}
        policies = {
            p: {
                "version": self.versions.get(p, 0),
                "weights_version": self.weights.get(p),
                "backlog": len(self.groups.get(p, set()) - self.consumed),
                "rates": self.rates.get(p, {}),
                **self.learning.get(p, {}),
            }
            for p in sorted(set(self.versions) | set(self.groups) | set(self.rates))
        }
        mode = self.system.get("mode", "?")
        replicas = self.system.get("rollout_replicas", 1)
        return {
            "finished": self.finished,
            "mode": mode,
            "rollout_replicas": replicas,
            "max_staleness": self.system.get("max_staleness"),
            "nodes": nodes,
            "epoch": self.epoch,
            "slots": self.slots,
            "slot_table": self.where.view(mode, replicas, list(policies)),
            "policies": policies,
        }


def _slot_fold() -> SlotFold:
    from mrl_actors.report.slots import SlotFold  # events (numpy) only when a status is read

    return SlotFold()


_KINDS = ["node", "slots", "learner", "throughput", "run", "weights"]


async def fold_log(log: LogPort, policies: Iterable[str] = ()) -> RunStatus:
    """Fold the run's log; rollout groups are counted by subject, never decoded."""
    from mrl_actors.see.inspect import kind_source, tool_dead_letters

    st = RunStatus()
    for p in policies:
        st.groups.setdefault(p, set())
    async for rec in log.read(start_seq=1, kinds=_KINDS, dead_letters=tool_dead_letters(log)):
        st.fold(rec.seq, rec.event)
    async for seq, subject, _, _ in log.read_raw(start_seq=1, kinds=["rollout"]):
        st.add_group(seq, kind_source(subject)[1])
    return st


def render(view: dict[str, Any]) -> str:
    from mrl_actors.report.slots import slot_lines, system_text

    system = "mode " + system_text(
        view.get("mode", "?"),
        view.get("rollout_replicas", 1),
        view.get("max_staleness"),
        view["slot_table"],
    )
    state = "finished" if view["finished"] else "running"
    lines = [f"run: {state}, {system}", "", "nodes:"]
    for name, n in view["nodes"].items():
        devices = ",".join(n.get("devices") or []) or "-"
        lines.append(
            f"  {name:<16} {n['state']:<6} last seen {n['age_s']:>7.1f}s ago  "
            f"slots={n.get('slots', 0)} devices={devices} host={n.get('host') or '-'}"
        )
    lines += ["", *slot_lines(view["slot_table"]), "", "policies:"]
    for p, v in view["policies"].items():
        rates = "; ".join(
            f"{k}{_actors(view, p, k)} {r['samples_per_s']:.2f} samples/s "
            f"{r['tokens_per_s']:.0f} tok/s"
            for k, r in sorted(v["rates"].items())
        )
        weights = v.get("weights_version")
        extra = f" weights=v{weights}" if weights is not None else ""
        if "staleness_mean" in v:
            extra += f" staleness={v['staleness_mean']:.2f}/{v.get('staleness_max', 0):.0f}"
        if "rollout_wait_s" in v:
            extra += f" rollout_wait={v['rollout_wait_s']:.2f}s"
        lines.append(
            f"  {p:<16} version={v['version']:<5} backlog={v['backlog']:<4}{extra} "
            f"{rates or 'no rates'}"
        )
    return "\n".join(lines)


def _actors(view: dict[str, Any], policy: str, key: str) -> str:
    """ " (N actors, last report)" when `key` ("role@node") stands for several actors of the
    policy: their `ThroughputReported` name the node and role, not the slot or replica."""
    role, _, node = key.partition("@")
    table = view["slot_table"]
    if table["placed"]:
        n = sum(
            1
            for a in table["assignments"]
            if (a["policy"], a["role"], a["node"]) == (policy, role, node)
        )
    else:
        n = view.get("rollout_replicas", 1) if role == "rollout" else 1
    return f" ({n} actors, last report)" if n > 1 else ""


def _status(args: argparse.Namespace) -> int:
    import json

    import anyio

    from mrl_actors.errors import ConfigError
    from mrl_actors.see.access import open_log

    if (args.run_dir is None) == (args.server is None):
        raise ConfigError("give a run directory or --server URL (one of them)")
    if not (args.liveness_s > 0 and args.dead_after > 0):
        raise ConfigError("--liveness-s and --dead-after must be positive")

    async def main() -> dict[str, Any]:
        async with open_log(run_dir=args.run_dir, server=args.server, run=args.run) as log:
            st = await fold_log(log)
        return st.view(time.time_ns(), args.liveness_s, args.dead_after)

    view = anyio.run(main)
    print(json.dumps(view, indent=2) if args.json else render(view))
    return 0
