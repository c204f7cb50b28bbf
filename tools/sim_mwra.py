"""Discrete-event simulation of MWRA against static slot splits, driving the real MWRA code.

    python tools/sim_mwra.py                      # 8, 64 and 1024 slots, one simulated hour each
    python tools/sim_mwra.py --slots 8 --hours 0.5 --seed 3
    python tools/sim_mwra.py --drift 0 --noise 0   # a stationary, noise-free cluster

Simulated nodes own slots; each slot hosts one policy's rollout worker or a share of its learner.
The cost model, per policy: decode tokens/s per slot fall with parameter count, completion
lengths are lognormal, a learner step trains on `samples_per_step` completions at ten times the
decode rate per learner slot, loading a policy onto a slot takes 20 s + 6 s per billion parameters
(±20%). Rollout runs ahead of the learner by at most two steps of samples (bounded staleness);
past that a rollout slot idles. Production is a fluid between events; what MWRA sees is noisy the
way a real rollout actor's reports are: each `ThroughputReported` is one slot's rate while
generating (here the node's mean over its slots of that policy), measured over the completions
finished in the window, times a lognormal wobble (`--noise`, default sigma 0.2); completion
lengths drift ±10% over 20 minutes, the two policies in antiphase (`--drift`), as lengths do
while a policy learns.

MWRA runs exactly as an actor would: it folds the same events (`NodeJoined`, `NodeHeartbeat`,
`ThroughputReported`, `LearnerStepTimed`, `SlotMoveMeasured`) through `mrl_actors.mwra` and is
asked for a decision after every learner step and every `config.tick_s`; its `SlotsAssigned` are
applied to the simulated slots (a changed slot is out of work for its load time, then reports a
`SlotMoveMeasured`).

Rows per cluster size: a 50/50 static split of the rollout slots, the best static split (searched
on the same simulator, maximising the balanced rate: the steps/h of the policy that took fewest,
the objective for an equal ratio), MWRA, MWRA without the cost gate, and MWRA with neither gate
nor hysteresis. Ratios are on that balanced rate (`min/...`), and on the slow policy alone.
A second table kills the last node half-way and reports how long until its slots were reassigned.
"""

from __future__ import annotations

import argparse
import heapq
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mrl_actors import events as ev
from mrl_actors.mwra import MwraConfig
from mrl_actors.mwra.replay import Allocator, check

RUN = "sim"
NS = 1_000_000_000
DECODE_TOKS_PER_S_PER_B = 3600.0  # decode tokens/s of one slot for a 1B-parameter policy
TRAIN_OVER_DECODE = 10.0  # a learner slot trains this many times faster than it decodes
GROUP = 8  # completions per group
DRIFT_PERIOD_S = 1200.0  # completion lengths drift with this period
DRIFT_TICK_S = 10.0
# A backlog this close to a batch is a batch. The tolerance must survive the clock's float
# resolution: past an hour, a gap of 1e-9 samples is less than one ulp of time at any rate, and
# the learner's readiness check would be re-scheduled at the same instant for ever.
EPS_SAMPLES = 1e-6


@dataclass(frozen=True)
class PolicyModel:
    name: str
    params_b: float
    mean_len: float  # completion tokens, lognormal mean
    len_sigma: float = 0.6

    @property
    def decode_tps(self) -> float:
        return DECODE_TOKS_PER_S_PER_B / self.params_b

    @property
    def train_tps(self) -> float:
        return TRAIN_OVER_DECODE * self.decode_tps

    @property
    def load_s(self) -> float:
        return 20.0 + 6.0 * self.params_b


# A 4x-skewed pair: equal completion lengths, four times the parameters.
PAIR = (PolicyModel("fast", 1.8, 300.0), PolicyModel("slow", 7.2, 300.0))


@dataclass(frozen=True)
class Scenario:
    slots: int
    hours: float = 1.0
    seed: int = 0
    fail_at_s: float | None = None  # the last node stops at this time
    policies: tuple[PolicyModel, ...] = PAIR
    report_s: float = 10.0  # node report and heartbeat period (= MWRA's liveness interval)
    backlog_steps: float = 2.0  # rollout runs at most this many steps ahead
    drift: float = 0.0  # amplitude of the completion-length drift (0.1: ±10%)
    noise: float = 0.0  # sigma of a lognormal factor on each node report (0.2: about ±20%)

    @property
    def slots_per_node(self) -> int:
        return 4 if self.slots <= 8 else 8

    @property
    def learner_slots(self) -> int:  # per policy: a quarter of the cluster trains
        return self.slots // 8

    @property
    def samples_per_step(self) -> int:  # per policy; the batch grows with the learner
        return 256 * self.learner_slots


@dataclass
class PolicySim:
    model: PolicyModel
    backlog: float = 0.0  # samples produced and not consumed
    steps: int = 0
    learner_until: float | None = None  # end of the running step; None while waiting
    wait_since: float = 0.0
    compute_s: float = 0.0
    wait_s: float = 0.0
    check_token: int = 0
    check_at: float = -1.0


@dataclass
class Result:
    steps_per_h: dict[str, float]
    idle_share: float
    moves: int
    reassign_s: float | None = None
    split: dict[str, int] = field(default_factory=dict)
    replay_ok: bool = True

    @property
    def balanced(self) -> float:
        """Steps/h of the policy that took fewest: the objective for an equal ratio."""
        return min(self.steps_per_h.values())


class Sim:
    def __init__(
        self,
        sc: Scenario,
        *,
        static: dict[str, int] | None = None,
        config: MwraConfig | None = None,
    ) -> None:
        self.sc = sc
        self.rng = np.random.default_rng(sc.seed)
        self.t = 0.0
        self.end = sc.hours * 3600.0
        self.pol = {m.name: PolicySim(m, wait_since=0.0) for m in sc.policies}
        n_nodes = sc.slots // sc.slots_per_node
        self.nodes = [f"n{i:04d}" for i in range(n_nodes)]
        self.alive = dict.fromkeys(self.nodes, True)
        self.owner: dict[tuple[str, int], tuple[str, str] | None] = {
            (n, i): None for n in self.nodes for i in range(sc.slots_per_node)
        }
        self.loading_until: dict[tuple[str, int], float] = {}
        self.move_started: dict[tuple[str, int], float] = {}
        self.moves = 0
        self.busy_slot_s = 0.0
        self.heap: list[tuple[float, int, str, object]] = []
        self.seq = 0
        self.log: list[ev.Event] = []
        self.reassign_s: float | None = None
        self.alloc = Allocator(config) if config is not None else None
        if static is not None:
            self._place_static(static)
        self._active: dict[str, int] = {}
        self._recount()

    # ------------------------------------------------------------------ set-up

    def _place_static(self, rollout: dict[str, int]) -> None:
        free = sorted(self.owner)
        for m in self.sc.policies:
            for _ in range(self.sc.learner_slots):
                self.owner[free.pop(0)] = (m.name, "learner")
        for m in self.sc.policies:
            for _ in range(rollout[m.name]):
                self.owner[free.pop(0)] = (m.name, "rollout")

    def _push(self, at: float, kind: str, arg: object = None) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (at, self.seq, kind, arg))

    def _emit(self, event: ev.Event) -> None:
        if self.alloc is not None:
            self.log.append(event)
            self.alloc.observe(event)

    def _ask(self) -> None:
        if self.alloc is None:
            return
        decision = self.alloc.step(int(self.t * NS))
        if decision is not None:
            self.log.append(decision)
            self._apply(decision)

    # ------------------------------------------------------------------ the fluid

    def _recount(self) -> None:
        """Active rollout slots per policy: alive, assigned, not loading."""
        active = dict.fromkeys(self.pol, 0)
        for slot, own in self.owner.items():
            working = self.loading_until.get(slot, 0.0) <= self.t
            if own and own[1] == "rollout" and self.alive[slot[0]] and working:
                active[own[0]] += 1
        self._active = active

    def _rate(self, name: str) -> float:
        m = self.pol[name].model
        return self._active[name] * m.decode_tps / self._len(name)  # samples/s

    def _len(self, name: str) -> float:
        """Mean completion length now: drifts as learning changes how long answers are.

        Piecewise constant between drift ticks (every `DRIFT_TICK_S`); policies in antiphase.
        """
        m = self.pol[name].model
        if not self.sc.drift:
            return m.mean_len
        k = list(self.pol).index(name)
        t = self.t - self.t % DRIFT_TICK_S
        return m.mean_len * (1 + self.sc.drift * np.sin(2 * np.pi * t / DRIFT_PERIOD_S + k * np.pi))

    def _advance(self, to: float) -> None:
        dt = to - self.t
        if dt <= 0:
            return
        for name, p in self.pol.items():
            rate = self._rate(name)
            if rate <= 0:
                continue
            cap = self.sc.backlog_steps * self.sc.samples_per_step
            made = min(rate * dt, max(0.0, cap - p.backlog))
            p.backlog += made
            self.busy_slot_s += self._active[name] * made / rate
        self.t = to

    def _learners(self, name: str) -> int:
        return sum(1 for s, o in self.owner.items() if o == (name, "learner") and self.alive[s[0]])

    def _try_start(self, name: str) -> None:
        p = self.pol[name]
        need = self.sc.samples_per_step
        width = self._learners(name)
        if p.learner_until is not None or p.backlog < need - EPS_SAMPLES or width == 0:
            return
        p.backlog -= need
        p.wait_s = self.t - p.wait_since
        base = need * self._len(name) / (p.model.train_tps * width)
        p.compute_s = base * float(self.rng.uniform(0.95, 1.05))
        p.learner_until = self.t + p.compute_s
        self.busy_slot_s += width * max(0.0, min(p.learner_until, self.end) - self.t)
        self._push(p.learner_until, "step", name)

    def _schedule_checks(self) -> None:
        """For each waiting learner, the moment its backlog reaches a batch at current rates."""
        for name, p in self.pol.items():
            if p.learner_until is not None:
                continue
            rate = self._rate(name)
            short = self.sc.samples_per_step - p.backlog
            at = max(self.t + short / rate, math.nextafter(self.t, math.inf)) if rate > 0 else -1.0
            if short <= EPS_SAMPLES:
                at = self.t
            if at != p.check_at:
                p.check_token += 1
                p.check_at = at
                if at >= 0:
                    self._push(at, "check", (name, p.check_token))

    # ------------------------------------------------------------------ MWRA's effects

    def _apply(self, decision: ev.SlotsAssigned) -> None:
        new: dict[tuple[str, int], tuple[str, str]] = {
            (a.node, a.slot): (a.policy, a.role) for a in decision.assignments
        }
        for slot in self.owner:
            before, after = self.owner[slot], new.get(slot)
            if before == after:
                continue
            self.owner[slot] = after
            if before is not None and after is not None and self.alive[slot[0]]:
                self.moves += 1
                model = self.pol[after[0]].model
                took = model.load_s * float(self.rng.uniform(0.8, 1.2))
                self.loading_until[slot] = self.t + took
                self.move_started[slot] = self.t
                self._push(self.t + took, "loaded", (slot, decision.epoch, before[0], after[0]))
        if "lost" in decision.reason and self.reassign_s is None and self.sc.fail_at_s:
            self.reassign_s = self.t - self.sc.fail_at_s
        self._recount()

    def _report(self, node: str) -> None:
        """One node's heartbeat and its rollout throughput while generating."""
        t_ns = int(self.t * NS)
        per_node = self.sc.slots_per_node
        self._emit(
            ev.NodeHeartbeat(
                run=RUN,
                source=node,
                event_id=ev.event_id("node", RUN, node, "hb", t_ns),
                time_ns=t_ns,
                node=node,
                slots=per_node,
            )
        )
        for name, p in self.pol.items():
            n = sum(
                1
                for i in range(per_node)
                if self.owner[(node, i)] == (name, "rollout")
                and self.loading_until.get((node, i), 0.0) <= self.t
            )
            if n == 0:
                continue
            m = p.model
            tps = n * m.decode_tps
            mean_len = self._len(name)
            finished = max(1, int(tps * self.sc.report_s / mean_len))
            mu = np.log(mean_len) - m.len_sigma**2 / 2
            lengths = self.rng.lognormal(mu, m.len_sigma, size=min(finished, 4096))
            # Interference, stragglers, cache hits: a node's rate wobbles beyond length noise.
            noise = float(self.rng.lognormal(0.0, self.sc.noise)) if self.sc.noise else 1.0
            self._emit(
                ev.ThroughputReported(
                    run=RUN,
                    source=name,  # a policy's rollout actor, naming its node
                    event_id=ev.event_id("throughput", RUN, name, node, t_ns),
                    time_ns=t_ns,
                    node=node,
                    policy=name,
                    role="rollout",
                    window_s=self.sc.report_s,
                    tokens_per_s=tps / n,  # one slot's rate, as a rollout actor reports it
                    samples_per_s=tps / n / float(lengths.mean()) * noise,
                )
            )

    # ------------------------------------------------------------------ the loop

    def run(self) -> Result:
        if self.alloc is not None:
            for m in self.sc.policies:
                self._emit(
                    ev.PolicyRegistered(
                        run=RUN,
                        source=m.name,
                        event_id=ev.event_id("policy", RUN, m.name),
                        policy=m.name,
                        family="sim",
                        model_path=f"sim/{m.name}",
                        tokenizer_fingerprint="sim",
                        probe="independent",
                    )
                )
            for node in self.nodes:
                self._emit(
                    ev.NodeJoined(
                        run=RUN,
                        source=node,
                        event_id=ev.event_id("node", RUN, node, "joined"),
                        node=node,
                        host=node,
                        pid=1,
                        slots=self.sc.slots_per_node,
                    )
                )
            self._ask()
            self.loading_until.clear()  # the first placement loads before the clock starts
            self._recount()
            tick = self.alloc.config.tick_s
            self._push(tick, "tick")
            for i, node in enumerate(self.nodes):
                self._push(self.sc.report_s * i / len(self.nodes), "report", node)
        if self.sc.fail_at_s is not None:
            self._push(self.sc.fail_at_s, "fail", self.nodes[-1])
        if self.sc.drift:
            self._push(DRIFT_TICK_S, "drift")
        self._schedule_checks()
        while self.heap:
            at, _, kind, arg = heapq.heappop(self.heap)
            if at > self.end:
                break
            self._advance(at)
            self._handle(kind, arg)
            self._schedule_checks()
        self._advance(self.end)
        hours = self.sc.hours
        replay_ok = True
        if self.alloc is not None:
            replay_ok = check(self.log, self.alloc.config) == []
        split = {
            name: sum(1 for o in self.owner.values() if o == (name, "rollout")) for name in self.pol
        }
        return Result(
            steps_per_h={name: p.steps / hours for name, p in self.pol.items()},
            idle_share=1.0 - self.busy_slot_s / (self.sc.slots * self.end),
            moves=self.moves,
            reassign_s=self.reassign_s,
            split=split,
            replay_ok=replay_ok,
        )

    def _handle(self, kind: str, arg: object) -> None:
        if kind == "step":
            name = str(arg)
            p = self.pol[name]
            p.steps += 1
            p.learner_until = None
            p.wait_since = self.t
            t_ns = int(self.t * NS)
            self._emit(
                ev.LearnerStepTimed(
                    run=RUN,
                    source=name,
                    event_id=ev.event_id("learner", RUN, name, p.steps, "timed"),
                    time_ns=t_ns,
                    policy=name,
                    step=p.steps,
                    wait_s=p.wait_s,
                    compute_s=p.compute_s,
                    samples=self.sc.samples_per_step,
                    pending_groups=int(p.backlog // GROUP),
                )
            )
            self._ask()
            self._try_start(name)
        elif kind == "check":
            name, token = arg  # type: ignore[misc]
            if token == self.pol[name].check_token:
                self.pol[name].check_at = -1.0
                self._try_start(name)
        elif kind == "tick":
            self._ask()
            assert self.alloc is not None
            self._push(self.t + self.alloc.config.tick_s, "tick")
        elif kind == "report":
            node = str(arg)
            if self.alive[node]:
                self._report(node)
                self._push(self.t + self.sc.report_s, "report", node)
        elif kind == "loaded":
            slot, epoch, frm, to = arg  # type: ignore[misc]
            if self.loading_until.get(slot, 0.0) <= self.t + 1e-9 and slot in self.move_started:
                self._recount()
                started = self.move_started.pop(slot)
                if self.alive[slot[0]]:
                    self._emit(
                        ev.SlotMoveMeasured(
                            run=RUN,
                            source=slot[0],
                            event_id=ev.event_id("slots", RUN, slot[0], "moved", epoch, slot[1]),
                            time_ns=int(self.t * NS),
                            node=slot[0],
                            slot=slot[1],
                            epoch=epoch,
                            from_policy=frm,
                            to_policy=to,
                            seconds=self.t - started,
                        )
                    )
        elif kind == "drift":
            self._push(self.t + DRIFT_TICK_S, "drift")
        elif kind == "fail":
            self.alive[str(arg)] = False
            self._recount()


# ---------------------------------------------------------------------- comparisons


def rollout_total(sc: Scenario) -> int:
    return sc.slots - sc.learner_slots * len(sc.policies)


def static(sc: Scenario, fast: int) -> Result:
    fast_name, slow_name = (m.name for m in sc.policies)
    return Sim(sc, static={fast_name: fast, slow_name: rollout_total(sc) - fast}).run()


def best_static(sc: Scenario) -> tuple[int, Result]:
    """The split maximising the balanced rate (steps/h of the policy that took fewest), searched.

    Ties go to the split with fewer slots for the fast policy.
    """

    def score(r: Result) -> float:
        return r.balanced

    total = rollout_total(sc)
    cache: dict[int, Result] = {}

    def f(n: int) -> float:
        if n not in cache:
            cache[n] = static(sc, n)
        return score(cache[n])

    lo, hi = 1, total - 1
    while hi - lo > 4:  # ternary search on a unimodal score, then a scan of what is left
        m1, m2 = lo + (hi - lo) // 3, hi - (hi - lo) // 3
        if f(m1) < f(m2):
            lo = m1 + 1
        else:
            hi = m2
    best = max(range(lo, hi + 1), key=lambda n: (f(n), -n))
    return best, cache[best]


def mwra_config(sc: Scenario, **changes: object) -> MwraConfig:
    """MWRA's defaults, with the scenario's learner width and liveness interval."""
    return MwraConfig(
        learner_slots={m.name: sc.learner_slots for m in sc.policies},
        liveness_interval_s=sc.report_s,
        **changes,  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class Row:
    name: str
    result: Result
    seconds: float


def compare(
    slots: int, hours: float, seed: int, drift: float, noise: float
) -> tuple[list[Row], list[Row]]:
    sc = Scenario(slots=slots, hours=hours, seed=seed, drift=drift, noise=noise)
    rows: list[Row] = []

    def timed(name: str, fn: object) -> Result:
        t0 = time.perf_counter()
        r = fn()  # type: ignore[operator]
        rows.append(Row(name, r, time.perf_counter() - t0))
        return r

    timed("static 50/50", lambda: static(sc, rollout_total(sc) // 2))
    t0 = time.perf_counter()
    n, r = best_static(sc)
    rows.append(Row(f"best static {n}/{rollout_total(sc) - n}", r, time.perf_counter() - t0))
    timed("MWRA", lambda: Sim(sc, config=mwra_config(sc)).run())
    timed("MWRA, no cost gate", lambda: Sim(sc, config=mwra_config(sc, cost_gate=False)).run())
    timed(
        "MWRA, no gate, no hysteresis",
        lambda: Sim(sc, config=mwra_config(sc, cost_gate=False, hysteresis=0.0)).run(),
    )
    loss = replace(sc, fail_at_s=hours * 1800)
    fails: list[Row] = []
    for name, cfg in (("MWRA", mwra_config(loss)), ("static 50/50", None)):
        t0 = time.perf_counter()
        r = static(loss, rollout_total(loss) // 2) if cfg is None else Sim(loss, config=cfg).run()
        fails.append(Row(name, r, time.perf_counter() - t0))
    return rows, fails


def print_tables(slots: int, rows: list[Row], fails: list[Row]) -> None:
    """`min` is the balanced rate (steps/h of the policy that took fewest, the objective of the
    best static search); `slow/best` compares the slow policy alone."""
    names = list(rows[0].result.steps_per_h)
    slow = names[-1]
    half = rows[0].result.balanced
    best = rows[1].result
    head = f"{'slots':>5} {'strategy':<30}" + "".join(f" {n + ' st/h':>11}" for n in names)
    print(
        head + f" {'min/50-50':>9} {'min/best':>8} {'slow/best':>9} {'idle':>6} {'moves':>6}"
        f" {'split':>9}"
    )
    for row in rows:
        r = row.result
        split = "/".join(str(r.split[n]) for n in names)
        print(
            f"{slots:>5} {row.name:<30}"
            + "".join(f" {r.steps_per_h[n]:>11.1f}" for n in names)
            + f" {r.balanced / half:>9.2f} {r.balanced / best.balanced:>8.3f}"
            + f" {r.steps_per_h[slow] / best.steps_per_h[slow]:>9.3f}"
            + f" {r.idle_share:>6.1%} {r.moves:>6} {split:>9}"
            + ("" if r.replay_ok else "  REPLAY MISMATCH")
        )
    for row in fails:
        r = row.result
        rec = "never" if r.reassign_s is None else f"{r.reassign_s:.1f} s"
        print(
            f"{slots:>5} {'node loss at 1/2: ' + row.name:<30}"
            + "".join(f" {r.steps_per_h[n]:>11.1f}" for n in names)
            + f" {'':>9} {'':>8} {'':>9} {r.idle_share:>6.1%} {r.moves:>6}"
            + (f"  reassigned after {rec}" if row.name == "MWRA" else "")
            + ("" if r.replay_ok else "  REPLAY MISMATCH")
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slots", type=int, nargs="+", default=[8, 64, 1024])
    parser.add_argument("--hours", type=float, default=1.0, help="simulated hours per run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--drift", type=float, default=0.1, help="completion-length drift amplitude (0: none)"
    )
    parser.add_argument(
        "--noise", type=float, default=0.2, help="sigma of per-report throughput noise (0: none)"
    )
    args = parser.parse_args(argv)
    for slots in args.slots:
        if slots < 8 or slots % 8:
            parser.error(f"--slots {slots}: use a multiple of 8")
    t0 = time.perf_counter()
    for slots in args.slots:
        rows, fails = compare(slots, args.hours, args.seed, args.drift, args.noise)
        print_tables(slots, rows, fails)
        print()
    wall = time.perf_counter() - t0
    print(
        f"drift {args.drift:g}; noise {args.noise:g}; "
        f"liveness interval {Scenario(8).report_s:g} s; wall {wall:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
