"""Typed SEE log versus plain nats-py on the same payloads: publish and consume rates.

    python tools/bench_see.py [--events 500] [--group 8] [--tokens 512] [--rounds 9]

Each event is a `RolloutGroupCompleted` of `group` completions of `tokens` tokens. The typed path
is what actors use: `EventLog.append_many` (encode, claim-check check, `Nats-Msg-Id`, pipelined
publish, every ack checked) and `Consumer.handle` (decode, idempotent apply, explicit ack). The
plain path encodes the same events with msgspec in its publish loop (as an application would),
publishes them with the same `Nats-Msg-Id` through `js.publish_async` and consumes them with a
pull subscription and explicit acks, without decoding; a third arm publishes bytes encoded before
the clock starts (serialization at no cost), printed beside it. Every round checks that every
event was stored once and consumed, and fails loudly otherwise. All use an embedded server on a
temporary store, streams with the same settings, and take turns round by round after one untimed
warm-up round; the table shows median rates, and the median (and spread) of the ratios of
back-to-back rounds (robust to a machine whose load drifts).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import msgspec
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mrl_actors import events as ev  # noqa: E402
from mrl_actors.see import Consumer, EventLog, Record  # noqa: E402
from mrl_actors.see.connection import connect  # noqa: E402
from mrl_actors.see.server import EmbeddedServer  # noqa: E402

BATCH = 256


def make_events(run: str, n: int, group: int, tokens: int) -> list[ev.RolloutGroupCompleted]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        comps = [
            ev.Completion(
                token_ids=ev.pack_i32(rng.integers(0, 150_000, tokens)),
                logprobs=ev.pack_f32(-rng.random(tokens, dtype=np.float32)),
                text="x" * (tokens * 3),
                finish_reason="length",
                reward=float(g % 2),
                success=bool(g % 2),
            )
            for g in range(group)
        ]
        out.append(
            ev.RolloutGroupCompleted(
                run=run,
                source="qwen",
                event_id=ev.event_id("rollout", run, "qwen", i),
                policy="qwen",
                policy_version=0,
                prompt_id=f"p{i}",
                prompt_text="prompt",
                completions=comps,
            )
        )
    return out


class Count:
    last_seq = 0
    n = 0

    async def apply(self, record: Record) -> None:
        self.n += 1
        self.last_seq = record.seq


async def typed_round(
    nc: Any, run: str, events: list[ev.RolloutGroupCompleted]
) -> tuple[float, float]:
    log = await EventLog.open(nc, run)
    t0 = time.perf_counter()
    seqs: list[int] = []
    for i in range(0, len(events), BATCH):
        seqs.extend(await log.append_many(events[i : i + BATCH]))
    pub = time.perf_counter() - t0
    consumer = Consumer(log, "bench")
    applier = Count()
    t0 = time.perf_counter()
    await consumer.run(applier, batch=BATCH, stop=lambda s: s.applied >= len(events))
    con = time.perf_counter() - t0
    info = await log.js.stream_info(log.stream)
    await log.js.delete_stream(log.stream)
    # What was measured happened: every event stored once, every one applied.
    if len(set(seqs)) != len(events) or info.state.messages != len(events):
        raise SystemExit(f"typed round {run}: {info.state.messages} stored of {len(events)}")
    if applier.n != len(events):
        raise SystemExit(f"typed round {run}: {applier.n} applied of {len(events)}")
    return pub, con


async def plain_round(
    nc: Any, run: str, events: list[ev.RolloutGroupCompleted], pre: list[bytes] | None
) -> tuple[float, float]:
    """Plain nats-py: msgspec encoding in the publish loop (as an application would), or, with
    `pre`, bytes encoded before the clock starts (serialization at no cost)."""
    log = await EventLog.open(nc, run)  # same stream settings as the typed path
    js = nc.jetstream()
    subject = f"mrl.{run}.rollout.qwen"
    encoder = msgspec.msgpack.Encoder()
    t0 = time.perf_counter()
    for i in range(0, len(events), BATCH):
        futs = []
        for j, e in enumerate(events[i : i + BATCH]):
            data = pre[i + j] if pre is not None else encoder.encode(e)
            futs.append(
                await js.publish_async(
                    subject, data, headers={"Nats-Msg-Id": f"{run}/{e.event_id}"}
                )
            )
        for f in futs:
            ack = await f
            assert ack.seq and not ack.duplicate
    pub = time.perf_counter() - t0
    sub = await js.pull_subscribe(subject, durable="bench", stream=log.stream)
    got = 0
    t0 = time.perf_counter()
    while got < len(events):
        for msg in await sub.fetch(BATCH, timeout=5.0):
            await msg.ack()
            got += 1
    con = time.perf_counter() - t0
    await sub.unsubscribe()
    info = await js.stream_info(log.stream)
    await js.delete_stream(log.stream)
    if info.state.messages != len(events) or got != len(events):
        raise SystemExit(f"plain round {run}: {info.state.messages} stored, {got} consumed")
    return pub, con


async def main_async(args: argparse.Namespace) -> int:
    arms = ("typed", "plain", "pre-encoded")
    with tempfile.TemporaryDirectory(prefix="bench-see-") as tmp:
        async with EmbeddedServer(Path(tmp) / "nats") as srv:
            nc = await connect(srv.client())
            results: dict[str, list[tuple[float, float]]] = {a: [] for a in arms}
            size = 0
            for r in range(-1, args.rounds):  # round -1: untimed warm-up of every arm
                order = arms if r % 2 == 0 else arms[::-1]
                for arm in order:
                    run = f"{arm.replace('-', '')}{r + 1}"
                    evs = make_events(run, args.events, args.group, args.tokens)
                    size = len(ev.encode(evs[0]))
                    if arm == "typed":
                        got = await typed_round(nc, run, evs)
                    else:
                        got = await plain_round(
                            nc, run, evs, [ev.encode(e) for e in evs] if arm != "plain" else None
                        )
                    if r >= 0:
                        results[arm].append(got)
            await nc.close()
    n = args.events
    med = {k: tuple(statistics.median(x[i] for x in v) for i in (0, 1)) for k, v in results.items()}
    print(
        f"{n} events x {args.rounds} paired rounds (+1 warm-up); {args.group} completions x "
        f"{args.tokens} tokens; {size / 1024:.1f} KiB per event; load avg "
        f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus"
    )
    print(f"{'path':<12} {'publish ev/s':>13} {'MB/s':>8} {'consume ev/s':>13} {'MB/s':>8}")
    for arm in arms:
        p, c = med[arm]
        print(
            f"{arm:<12} {n / p:>13,.0f} {n * size / p / 1e6:>8.1f} "
            f"{n / c:>13,.0f} {n * size / c / 1e6:>8.1f}"
        )
    # Ratios of the paired rounds (the arms back to back), so load drift cancels.
    worst = 1e9
    for base in ("plain", "pre-encoded"):
        pairs = list(zip(results["typed"], results[base], strict=True))
        parts = []
        for i in (0, 1):
            rs = [b[i] / t[i] for t, b in pairs]
            parts.append(f"{statistics.median(rs):>5.2f} ({min(rs):.2f}-{max(rs):.2f})")
            if base == "plain":
                worst = min(worst, statistics.median(rs))
        print(f"typed/{base:<12} publish {parts[0]}   consume {parts[1]}   (median, spread)")
    return 0 if worst >= args.min_ratio else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=9, help="paired rounds (median taken)")
    parser.add_argument("--min-ratio", type=float, default=0.0, help="exit 1 below this ratio")
    parser.add_argument("--log-level", default="warning", help="structlog level (info: per-round)")
    args = parser.parse_args()
    from mrl_actors import logs

    logs.configure("console", args.log_level)
    return anyio.run(main_async, args)


if __name__ == "__main__":
    sys.exit(main())
