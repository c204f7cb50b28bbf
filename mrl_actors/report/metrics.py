"""Prometheus metrics of a run, fed from its events.

`updates(event)` is a pure mapping from one event to the metric changes it implies; `RunMetrics`
applies them to its own registry and serves them over HTTP. A node feeds it whatever it reads
from the log (`metrics.observe(event)` per event), so the numbers are the log's, not a second
bookkeeping that could disagree with it. Replaying a log into a fresh `RunMetrics` gives the
same gauges and counters.

`serve_log(log, config)` is what a node runs (`run_node(..., metrics=config)`): it serves a fresh
`RunMetrics` on `config.host:config.port` and `follow`s the run's log into it, from the start
and then live, until it is cancelled; the HTTP server is closed when it ends. The events read
are the kinds in `FOLLOWED_KINDS`.

Series (every one labelled with `run`):

    mrl_tokens_per_second{policy,role,node}      last ThroughputReported of that node
    mrl_samples_per_second{policy,role,node}
    mrl_pending_groups{policy}                   backlog of unconsumed groups (LearnerStepTimed)
    mrl_learner_wait_seconds{policy}             the last step's wait for input
    mrl_learner_compute_seconds{policy}
    mrl_staleness_versions{policy}               mean versions between sampling and learning
    mrl_learner_version{policy}                  steps taken
    mrl_learner_step_timestamp_seconds{policy}   when the last step completed (event time)
    mrl_seconds_since_learner_step{policy}       now minus the above, computed at scrape time
    mrl_slots{policy,role}                       slots the assignment in force gives
    mrl_slots_epoch                              epoch of that assignment
    mrl_slot_moves_total{from_policy,to_policy}  measured slot moves (0 for every ordered pair
                                                 of registered policies until one is measured)
    mrl_slot_move_seconds_total{from_policy,to_policy}
    mrl_node_last_seen_timestamp_seconds{node}
    mrl_reward_mean{policy} mrl_success_rate{policy} mrl_eval_accuracy{policy}
    mrl_eval_pass1{policy} mrl_loss{policy} mrl_kl{policy} mrl_entropy{policy}
    mrl_grad_norm{policy} mrl_clip_fraction{policy} mrl_completion_length_tokens{policy}
                                                 the last learner step's metrics (`LEARNING`)
    mrl_train_tokens_per_second{policy}          its completion tokens / its step time

Sum over nodes for a policy's rate: `sum by (policy, role) (mrl_tokens_per_second)`.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Literal
from wsgiref.simple_server import WSGIServer

import anyio
import msgspec
from anyio.abc import TaskStatus
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge as PromGauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mrl_actors import events as ev
from mrl_actors.errors import ConfigError
from mrl_actors.logs import get_logger
from mrl_actors.report.scalars import latest

if TYPE_CHECKING:
    from mrl_actors.see.port import LogPort

Labels = tuple[tuple[str, str], ...]


class MetricsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where a node serves its metrics."""

    # Loopback by default: metrics name runs and policies; expose them deliberately.
    host: str = "127.0.0.1"
    # 9464 is the customary port of an application exporter; 0 picks a free one.
    port: int = 9464

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"metrics.port is {self.port}; need 0..65535")


def check_port_free(config: MetricsConfig) -> None:
    """Refuse a metrics address that cannot be bound, before a run creates anything (the run
    directory, the server): a port in use is found in a second, not after the warm start."""
    import socket

    if config.port == 0:
        return
    try:
        infos = socket.getaddrinfo(config.host, config.port, type=socket.SOCK_STREAM)
        family, kind, proto, _, addr = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the HTTP server does
            sock.bind(addr)
    except OSError as exc:
        raise ConfigError(
            f"--metrics-port {config.port}: cannot serve on {config.host}:{config.port}: "
            f"{exc.strerror or exc} (choose another port, or 0 for a free one)"
        ) from None


class Update(msgspec.Struct, frozen=True):
    """One change to one series: set a gauge, add to a counter, or clear a gauge's series."""

    metric: str
    op: Literal["set", "inc", "clear"]
    labels: Labels = ()
    value: float = 0.0


# What a researcher watches, per policy, from each LearnerStepCompleted's metrics: (metric key,
# series, help). The held-out evaluation at step 0 (`eval_accuracy_initial`) sets the same series.
LEARNING: tuple[tuple[str, str, str], ...] = (
    ("reward_mean", "mrl_reward_mean", "Mean training reward of the last step's own samples"),
    ("success_rate", "mrl_success_rate", "Share of the last step's own samples verified right"),
    ("eval_accuracy", "mrl_eval_accuracy", "Held-out accuracy (greedy) at the last evaluation"),
    ("eval_pass1", "mrl_eval_pass1", "Held-out pass@1 at the last evaluation"),
    ("loss", "mrl_loss", "Loss of the last learner step"),
    ("kl", "mrl_kl", "KL to the reference policy per token (0 with beta = 0)"),
    ("entropy", "mrl_entropy", "Mean token entropy of the last step's own samples"),
    ("grad_norm", "mrl_grad_norm", "Gradient norm of the last step, before clipping"),
    ("clip_region", "mrl_clip_fraction", "Share of tokens whose ratio was clipped"),
    ("completion_length", "mrl_completion_length_tokens", "Mean completion length, tokens"),
)

GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "mrl_tokens_per_second": ("Tokens/s a node reports", ("policy", "role", "node")),
    "mrl_samples_per_second": ("Samples/s a node reports", ("policy", "role", "node")),
    "mrl_pending_groups": ("Unconsumed rollout groups after the last learner step", ("policy",)),
    "mrl_learner_wait_seconds": ("Seconds the last learner step waited for input", ("policy",)),
    "mrl_learner_compute_seconds": ("Seconds the last learner step computed", ("policy",)),
    "mrl_staleness_versions": ("Mean versions between sampling and learning", ("policy",)),
    "mrl_learner_version": ("Learner steps taken", ("policy",)),
    "mrl_learner_step_timestamp_seconds": ("Event time of the last learner step", ("policy",)),
    "mrl_slots": ("Slots the assignment in force gives", ("policy", "role")),
    "mrl_slots_epoch": ("Epoch of the assignment in force", ()),
    "mrl_node_last_seen_timestamp_seconds": ("Event time a node was last heard from", ("node",)),
    **{name: (doc, ("policy",)) for _, name, doc in LEARNING},
    "mrl_train_tokens_per_second": (
        "Completion tokens the last learner step trained on, per second of its step",
        ("policy",),
    ),
}
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "mrl_slot_moves": ("Measured slot moves", ("from_policy", "to_policy")),
    "mrl_slot_move_seconds": ("Seconds slots spent moving", ("from_policy", "to_policy")),
}


def _seconds(time_ns: int) -> float:
    return time_ns / 1e9


def updates(event: ev.Event) -> list[Update]:
    """The metric changes one event implies (none for events that carry no metric, nor for
    one whose payload names a writer other than its subject's source)."""
    if ev.identity_error(event) is not None:
        return []
    match event:
        case ev.ThroughputReported(policy=p, role=role, node=node):
            labels: Labels = (("policy", p), ("role", role), ("node", node))
            return [
                Update("mrl_tokens_per_second", "set", labels, event.tokens_per_s),
                Update("mrl_samples_per_second", "set", labels, event.samples_per_s),
                Update(
                    "mrl_node_last_seen_timestamp_seconds",
                    "set",
                    (("node", node),),
                    _seconds(event.time_ns),
                ),
            ]
        case ev.LearnerStepTimed(policy=p):
            labels = (("policy", p),)
            return [
                Update("mrl_pending_groups", "set", labels, float(event.pending_groups)),
                Update("mrl_learner_wait_seconds", "set", labels, event.wait_s),
                Update("mrl_learner_compute_seconds", "set", labels, event.compute_s),
                Update("mrl_staleness_versions", "set", labels, event.staleness),
                *_stepped(p, event.step, event.time_ns),
            ]
        case ev.LearnerStepCompleted(policy=p, step=step):
            return [*_learning(p, event.metrics), *_stepped(p, step, event.time_ns)]
        case ev.SlotsAssigned(epoch=epoch, assignments=assignments):
            held = Counter((a.policy, a.role) for a in assignments)
            return [
                Update("mrl_slots", "clear"),
                *(
                    Update("mrl_slots", "set", (("policy", p), ("role", r)), float(n))
                    for (p, r), n in sorted(held.items())
                ),
                Update("mrl_slots_epoch", "set", (), float(epoch)),
            ]
        case ev.SlotMoveMeasured(from_policy=frm, to_policy=to, seconds=seconds):
            labels = (("from_policy", frm), ("to_policy", to))
            return [
                Update("mrl_slot_moves", "inc", labels, 1.0),
                Update("mrl_slot_move_seconds", "inc", labels, max(0.0, seconds)),
            ]
        case ev.NodeJoined(node=node) | ev.NodeHeartbeat(node=node):
            return [
                Update(
                    "mrl_node_last_seen_timestamp_seconds",
                    "set",
                    (("node", node),),
                    _seconds(event.time_ns),
                )
            ]
        case _:
            return []


def registered(known: Iterable[str], policy: str) -> list[Update]:
    """A newly registered `policy` opens its slot-move series with every `known` policy at 0,
    so a dashboard sees `mrl_slot_moves_total` before (or without) any measured move."""
    out = []
    for other in known:
        for pair in ((other, policy), (policy, other)):
            labels: Labels = (("from_policy", pair[0]), ("to_policy", pair[1]))
            out += [Update(name, "inc", labels, 0.0) for name in COUNTERS]
    return out


def _learning(policy: str, metrics: dict[str, float]) -> list[Update]:
    """The learning series a step's metrics set (finite values only; a missing key, such as
    `eval_accuracy` between evaluations, leaves its series at the last value)."""
    labels: Labels = (("policy", policy),)
    values = latest(metrics)  # the step's scalars, as the report's curves have them
    out = [Update(name, "set", labels, values[key]) for key, name, _ in LEARNING if key in values]
    if "tokens_per_s" in values:
        out.append(Update("mrl_train_tokens_per_second", "set", labels, values["tokens_per_s"]))
    return out


def _stepped(policy: str, step: int, time_ns: int) -> list[Update]:
    labels = (("policy", policy),)
    out = [Update("mrl_learner_version", "set", labels, float(step))]
    if time_ns:
        out.append(Update("mrl_learner_step_timestamp_seconds", "set", labels, _seconds(time_ns)))
    return out


class _SinceLastStep(Collector):
    """`mrl_seconds_since_learner_step`: the one series that depends on the clock at scrape."""

    def __init__(self, metrics: RunMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "mrl_seconds_since_learner_step",
            "Seconds since the last learner step (event time)",
            labels=["run", "policy"],
        )
        now = self._metrics.clock()
        with self._metrics.lock:  # the node's event loop writes it while this thread scrapes
            last = sorted(self._metrics.last_step_s.items())
        for (run, policy), at in last:
            family.add_metric([run, policy], max(0.0, now - at))
        yield family


class RunMetrics:
    """A registry of one node's view of one or more runs, updated from events."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry()
        self.clock = clock
        self.last_step_s: dict[tuple[str, str], float] = {}
        self.policies: dict[str, list[str]] = {}  # registered policies by run
        self.lock = threading.Lock()
        self._gauges = {
            name: PromGauge(name, doc, ["run", *labels], registry=self.registry)
            for name, (doc, labels) in GAUGES.items()
        }
        self._counters = {
            name: PromCounter(name, doc, ["run", *labels], registry=self.registry)
            for name, (doc, labels) in COUNTERS.items()
        }
        self.registry.register(_SinceLastStep(self))
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def observe(self, event: ev.Event) -> None:
        changes = updates(event)
        if isinstance(event, ev.PolicyRegistered):
            known = self.policies.setdefault(event.run, [])
            if event.policy not in known:
                changes += registered(known, event.policy)
                known.append(event.policy)
        self.apply(event.run, changes)

    def observe_all(self, events: Iterable[ev.Event]) -> None:
        for event in events:
            self.observe(event)

    def apply(self, run: str, changes: Iterable[Update]) -> None:
        with self.lock:
            for u in changes:
                values = [run, *(v for _, v in u.labels)]
                if u.op == "inc":
                    self._counters[u.metric].labels(*values).inc(u.value)
                elif u.op == "clear":
                    self._clear_run(u.metric, run)
                else:
                    self._gauges[u.metric].labels(*values).set(u.value)
                    if u.metric == "mrl_learner_step_timestamp_seconds":
                        self.last_step_s[(run, u.labels[0][1])] = u.value

    def _clear_run(self, metric: str, run: str) -> None:
        """Drop one run's series of a gauge (a new assignment replaces the old one whole)."""
        gauge = self._gauges[metric]
        names = ("run", *GAUGES[metric][1])
        for family in list(gauge.collect()):
            for sample in family.samples:
                if sample.labels.get("run") == run:
                    gauge.remove(*(sample.labels[n] for n in names))

    # ------------------------------------------------------------------ serving

    def serve(self, config: MetricsConfig) -> int:
        """Serve `/metrics` on `config.host:config.port` in a daemon thread; the bound port."""
        if self._server is not None:
            raise ConfigError("metrics are already served by this RunMetrics")
        try:
            server, thread = start_http_server(config.port, config.host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(
                f"metrics: cannot serve on {config.host}:{config.port}: {exc.strerror or exc} "
                "(choose another metrics port, or 0 for a free one)"
            ) from exc
        self._server, self._thread = server, thread
        return int(server.server_port)

    def close(self) -> None:
        """Stop serving and free the port (waits for the server thread; idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = self._thread = None


# ---------------------------------------------------------------------- a node's metrics

# The kinds `updates` maps, plus `policy` (registrations open the slot-move series).
FOLLOWED_KINDS = ("policy", "throughput", "learner", "slots", "node")


async def follow(
    log: LogPort, metrics: RunMetrics, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Feed `metrics` the run's events of `FOLLOWED_KINDS`: the log from its start (so the
    numbers are the log's wherever the node joins), then live, until cancelled."""
    task_status.started()
    async for rec in log.read(start_seq=1, kinds=FOLLOWED_KINDS, follow=True):
        metrics.observe(rec.event)


async def serve_log(
    log: LogPort, config: MetricsConfig, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Serve a run's metrics on `config` while following its log; started with the bound port.

    Runs until cancelled (the node's end); the HTTP server and its thread are closed then, so
    the port is free again when this returns. A port in use is a `ConfigError` at start.
    """
    metrics = RunMetrics()
    port = metrics.serve(config)
    try:
        get_logger(__name__, run=log.run).info("metrics_served", host=config.host, port=port)
        task_status.started(port)
        await follow(log, metrics)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(metrics.close)
