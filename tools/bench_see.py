"""Typed SEE log versus plain nats-py on the same payloads: publish and consume rates.

    python tools/bench_see.py [--events 500] [--group 8] [--tokens 512] [--rounds 15]

Each event is a `RolloutGroupCompleted` of `group` completions of `tokens` tokens. The typed path
is what actors use: `EventLog.append_many` (encode, claim-check check, `Nats-Msg-Id`, pipelined
publish, every ack checked) and `Consumer.handle` (decode, idempotent apply, explicit ack). The
plain path publishes the same encoded bytes with the same `Nats-Msg-Id` through
`js.publish_async` and consumes them with a pull subscription and explicit acks, without
decoding. Both use an embedded server on a temporary store, streams with the same settings, and
alternate round by round; the table shows median rates, and the median of the ratios of
back-to-back rounds (robust to a machine whose load drifts).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
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
    for i in range(0, len(events), BATCH):
        await log.append_many(events[i : i + BATCH])
    pub = time.perf_counter() - t0
    consumer = Consumer(log, "bench")
    applier = Count()
    t0 = time.perf_counter()
    await consumer.run(applier, batch=BATCH, stop=lambda s: s.applied >= len(events))
    con = time.perf_counter() - t0
    await log.js.delete_stream(log.stream)
    return pub, con


async def plain_round(nc: Any, run: str, payloads: list[tuple[str, bytes]]) -> tuple[float, float]:
    log = await EventLog.open(nc, run)  # same stream settings as the typed path
    js = nc.jetstream()
    subject = f"mrl.{run}.rollout.qwen"
    t0 = time.perf_counter()
    for i in range(0, len(payloads), BATCH):
        futs = [
            await js.publish_async(subject, data, headers={"Nats-Msg-Id": f"{run}/{msg_id}"})
            for msg_id, data in payloads[i : i + BATCH]
        ]
        for f in futs:
            ack = await f
            assert ack.seq
    pub = time.perf_counter() - t0
    sub = await js.pull_subscribe(subject, durable="bench", stream=log.stream)
    got = 0
    t0 = time.perf_counter()
    while got < len(payloads):
        for msg in await sub.fetch(BATCH, timeout=5.0):
            await msg.ack()
            got += 1
    con = time.perf_counter() - t0
    await sub.unsubscribe()
    await js.delete_stream(log.stream)
    return pub, con


async def main_async(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-see-") as tmp:
        async with EmbeddedServer(Path(tmp) / "nats") as srv:
            nc = await connect(srv.client())
            results: dict[str, list[tuple[float, float]]] = {"typed": [], "plain": []}
            size = 0
            for r in range(args.rounds):
                run = f"typed{r}"
                events = make_events(run, args.events, args.group, args.tokens)
                payloads = [(e.event_id, ev.encode(e)) for e in events]
                size = len(payloads[0][1])
                order = ("typed", "plain") if r % 2 == 0 else ("plain", "typed")
                for path in order:
                    if path == "typed":
                        results["typed"].append(await typed_round(nc, run, events))
                    else:
                        results["plain"].append(await plain_round(nc, f"plain{r}", payloads))
            await nc.close()
    n = args.events
    med = {k: tuple(statistics.median(x[i] for x in v) for i in (0, 1)) for k, v in results.items()}
    # Ratios of the paired rounds (typed and plain back to back), so load drift cancels.
    pairs = list(zip(results["typed"], results["plain"], strict=True))
    ratio = [statistics.median(p[i] / t[i] for t, p in pairs) for i in (0, 1)]
    print(
        f"{n} events x {args.rounds} rounds; {args.group} completions x {args.tokens} tokens; "
        f"{size / 1024:.1f} KiB per event"
    )
    print(f"{'path':<10} {'publish ev/s':>13} {'MB/s':>8} {'consume ev/s':>13} {'MB/s':>8}")
    for path in ("typed", "plain"):
        p, c = med[path]
        print(
            f"{path:<10} {n / p:>13,.0f} {n * size / p / 1e6:>8.1f} "
            f"{n / c:>13,.0f} {n * size / c / 1e6:>8.1f}"
        )
    print(
        f"{'typed/plain':<10} {ratio[0]:>13.2f} {'':>8} {ratio[1]:>13.2f}"
        "   (median of paired rounds)"
    )
    return 0 if min(ratio) >= args.min_ratio else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--min-ratio", type=float, default=0.0, help="exit 1 below this ratio")
    parser.add_argument("--log-level", default="warning", help="structlog level (info: per-round)")
    args = parser.parse_args()
    from mrl_actors import logs

    logs.configure("console", args.log_level)
    return anyio.run(main_async, args)


if __name__ == "__main__":
    sys.exit(main())
