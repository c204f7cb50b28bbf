"""A toy run alone, and the same run while an outside client floods its stream: the slowdown.

    python tools/bench_flood.py [--rate 6000] [--rounds 3] [--steps 4] [--unfiltered]

The flood is valid `RewardSummary`, `RolloutGroupCompleted` and `SuccessVerified` events (the
kinds policy actors fold) from a source that is not one of the run's policies, published by a
separate process at `--rate` events/s from the moment the run's server is up until the run ends.
The flooder connects as the run server's `admin` user (user and password, the one user that may
write a foreign source's subjects; a policy user may write only its own), so every flooded event
is stored. Policy actors ask the server only for their own and their peers' subjects, so these
events should cost them little. A third arm, `flooded elsewhere`, sends the same flood into
another run's stream on the same server (subjects no actor reads): it carries the cost of a busy
server and a busy publisher on the same cores, and what `flooded` costs beyond it is the readers'
share, printed last. `--unfiltered` adds a column where the actors read every source of their
kinds (the behaviour before server-side source filters) for comparison.

After one untimed warm-up run (which also builds the warm-started tiny models), the arms
alternate `--rounds` times (at least 3); the table shows the median wall time of each, the
slowdown of the medians and its spread over the paired rounds. The script checks that what it
measures happened and exits 1 otherwise: every run took all its steps for every policy, no plain
or elsewhere-flooded run stored a foreign event in its stream, and every flooded run stored at
least `--min-stored` foreign events per second of flooding (counted in the stream afterwards).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = Path(os.environ.get("MRL_MODELS_DIR", ROOT.parent / "shared" / "models"))
INTRUDER = "intruder"


def spec_text(name: str, steps: int) -> str:
    policies = ""
    for pname, model in (("gpt2", "gpt2"), ("llama", "llama2-7b")):
        policies += f"""
[[policies]]
name = "{pname}"
model = "{MODELS / model}"
tiny = {{ hidden_size = 32, layers = 1, heads = 2, warm_start_steps = 20 }}
[policies.engine.sampling]
max_new_tokens = 4
"""
    return f"""
[run]
name = "{name}"
seed = 0
probe = "xgrpo"
mode = "lockstep"
steps = {steps}
prompts_per_step = 2
group_size = 4
eval_every = {steps}
eval_size = 4
checkpoint_every = {steps}

[probes.sharing]
wait_for_peers_s = 60.0
{policies}"""


# --------------------------------------------------------------------------- the flooder process


def flood(url: str, run: str, rate: float, target: str) -> None:
    """Publish folded-kind events from a foreign source at `rate`/s until killed, on the
    subjects of run `target`: `run` itself, or another run whose stream it creates first."""
    from mrl_actors import events as ev
    from mrl_actors import logs
    from mrl_actors.see.connection import ConnectionConfig

    logs.configure("console", "error")  # the run's server stops before this process does

    def payloads() -> list[tuple[str, bytes]]:
        comp = ev.Completion(
            token_ids=ev.pack_i32([1, 2, 3, 4]),
            logprobs=ev.pack_f32([-0.5] * 4),
            text="1234",
            finish_reason="stop",
            reward=1.0,
            success=True,
        )
        common = {"run": run, "source": INTRUDER, "policy": INTRUDER, "policy_version": 0}
        out = []
        for i in range(64):  # prompt ids the policies also draw (p0..): worst case for a fold
            pid = f"p{i}"
            out += [
                (
                    "rollout",
                    ev.RolloutGroupCompleted(
                        event_id=f"flood/r/{i}",
                        prompt_id=pid,
                        prompt_text="q",
                        completions=[comp] * 4,
                        **common,
                    ),
                ),
                (
                    "reward",
                    ev.RewardSummary(
                        event_id=f"flood/w/{i}",
                        prompt_id=pid,
                        rewards=ev.pack_f32([1.0] * 4),
                        success_rate=1.0,
                        **common,
                    ),
                ),
                (
                    "success",
                    ev.SuccessVerified(
                        event_id=f"flood/s/{i}",
                        prompt_id=pid,
                        prompt_text="q",
                        completion_index=0,
                        completion=comp,
                        **common,
                    ),
                ),
            ]
        return [(f"mrl.{target}.{kind}.{INTRUDER}", ev.encode(e)) for kind, e in out]

    async def main() -> None:
        """The NATS client protocol itself, with the PUB commands built once: the flood's cost
        on the cores is then the server's (storing, filtering), not a Python client's per
        message. CONNECT carries the user and password; the server's `-ERR` (a refused
        publish or login) ends this process with an error, which fails the run."""
        import asyncio
        import json
        from urllib.parse import urlparse

        import msgspec

        cfg = msgspec.json.decode(os.environ["MRL_BENCH_CONN"], type=ConnectionConfig)
        if target != run:  # the other run's stream, on the same server and disk as the run's
            from mrl_actors.see.connection import connect
            from mrl_actors.see.stream import EventLog

            nc = await connect(cfg)
            await EventLog.open(nc, target, create=True)
            await nc.close()
        url = urlparse(cfg.url.split(",")[0])
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        info = await reader.readline()
        if not info.startswith(b"INFO"):
            raise SystemExit(f"flooder: no INFO from the server: {info[:80]!r}")
        hello = {"verbose": False, "pedantic": False, "user": cfg.user, "pass": cfg.password}
        hello |= {"name": "flooder", "lang": "python", "version": "0", "protocol": 1}
        writer.write(b"CONNECT " + json.dumps(hello).encode() + b"\r\nPING\r\n")
        while (line := await reader.readline()) and not line.startswith(b"PONG"):
            if line.startswith(b"-ERR"):
                raise SystemExit(f"flooder: the server refused the login: {line.strip()!r}")
        cmds = [b"PUB %s %d\r\n%s\r\n" % (s.encode(), len(d), d) for s, d in payloads()]

        async def answer() -> str | None:
            """PONG to the server's PINGs; why the flood must stop when the server refused it,
            None when the server closed the connection (it stops when the run ends)."""
            try:
                while line := await reader.readline():
                    if line.startswith(b"PING"):
                        writer.write(b"PONG\r\n")
                    elif line.startswith(b"-ERR"):
                        return f"flooder: the server refused: {line.strip()!r}"
            except ConnectionError:  # closed or reset: the run's server stopped
                pass
            return None

        task = asyncio.ensure_future(answer())
        sent, t0 = 0, time.monotonic()
        Path(os.environ["MRL_BENCH_STARTED"]).write_text(repr(t0))  # CLOCK_MONOTONIC: system-wide
        while not task.done():
            due = int((time.monotonic() - t0) * rate)
            if due > sent:
                writer.write(b"".join(cmds[i % len(cmds)] for i in range(sent, due)))
                sent = due
                try:
                    await writer.drain()  # a server too busy to read: wait, then catch up
                except ConnectionError:  # the run's server stopped: the reader says why
                    await task
                    break
            await asyncio.sleep(0.005)
        raise SystemExit(task.result())

    anyio.run(main)


# --------------------------------------------------------------------------- the timed runs


@contextmanager
def flooder(
    run_dir: Path, run: str, rate: float, target: str, started: Path, died: list[str]
) -> Iterator[None]:
    """Start the flooding process once the run's server is up; stop it (by pid) at the end.

    The flooder writes the monotonic time of its first publish to `started`; a flooder that
    stopped before the run ended is named in `died`."""
    proc: subprocess.Popen[bytes] | None = None
    stop = False

    def start_when_ready() -> None:
        nonlocal proc
        import msgspec

        from mrl_actors.see.server import SERVER_INFO, ServerInfo

        while not stop and not (run_dir / SERVER_INFO).exists():
            time.sleep(0.05)
        if stop:
            return
        info = msgspec.json.decode((run_dir / SERVER_INFO).read_bytes(), type=ServerInfo)
        cfg = info.client(user="admin")
        env = {
            **os.environ,
            "MRL_BENCH_CONN": msgspec.json.encode(cfg).decode(),
            "MRL_BENCH_STARTED": str(started),
        }
        proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--flood",
                cfg.url,
                "--run",
                run,
                "--rate",
                str(rate),
                "--target",
                target,
            ],
            env=env,
        )

    import threading

    waiter = threading.Thread(target=start_when_ready, daemon=True)
    waiter.start()
    try:
        yield
    finally:
        stop = True
        waiter.join()
        if proc is not None:
            if proc.poll():  # 0: the server closed the connection as the run ended
                died.append(f"the flooder exited early with status {proc.returncode}")
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def unfiltered_actors() -> Any:
    """Make policy actors read every source of their kinds (the old read), for comparison."""
    from mrl_actors.actors import policy
    from mrl_actors.actors.state import FOLDED_KINDS

    original = policy.PolicyActor._read

    def read_all(self: Any, *, start_seq: int, follow: bool) -> Any:
        return self.log.read(
            start_seq=start_seq,
            kinds=FOLDED_KINDS,
            follow=follow,
            dead_letters=self.dead_letters,
        )

    policy.PolicyActor._read = read_all  # type: ignore[method-assign]
    return original


def timed_run(
    root: Path, name: str, steps: int, rate: float, elsewhere: bool = False
) -> tuple[float, int, int, float]:
    """Wall time of one run (s), the foreign events its stream stored, those the other run's
    stream stored (the flood `elsewhere`: same server, same disk, subjects no actor reads), and
    the seconds the flood ran for (0 without one). Raises SystemExit when a policy did not take
    all its steps or the flooder stopped early."""
    from mrl_actors.run.runner import run_once
    from mrl_actors.spec import parse_spec

    text = spec_text(name, steps)
    spec = parse_spec(text)
    run_dir = root / name
    started = root / f"{name}.flood-started"
    done: dict[str, int] = {}
    died: list[str] = []

    def on_step(policy: str, step: int, _metrics: dict[str, float]) -> None:
        done[policy] = max(done.get(policy, 0), step)

    t0 = time.perf_counter()
    if rate > 0:
        target = f"{name}-x" if elsewhere else name
        with flooder(run_dir, name, rate, target, started, died):
            anyio.run(lambda: run_once(spec, text, run_dir, on_step=on_step))
            end = time.monotonic()
    else:
        anyio.run(lambda: run_once(spec, text, run_dir, on_step=on_step))
        end = time.monotonic()
    wall = time.perf_counter() - t0
    want = {p.name: steps for p in spec.policies}
    if done != want:
        raise SystemExit(f"run {name}: steps taken {done}, expected {want}")
    if died:
        raise SystemExit(f"run {name}: {died[0]}")
    flood_s = end - float(started.read_text()) if rate > 0 and started.exists() else 0.0
    other = anyio.run(count_foreign, run_dir, f"{name}-x") if elsewhere else 0
    return wall, anyio.run(count_foreign, run_dir, name), other, flood_s


async def count_foreign(run_dir: Path, run: str) -> int:
    from mrl_actors.see.connection import connect
    from mrl_actors.see.server import open_run_dir
    from mrl_actors.see.subjects import stream_name

    async with open_run_dir(run_dir) as info:
        nc = await connect(info.client(user="admin"))
        try:
            js = nc.jetstream()
            st = await js.stream_info(stream_name(run), subjects_filter=f"mrl.{run}.*.{INTRUDER}")
            return sum((st.state.subjects or {}).values())
        finally:
            await nc.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=6000.0, help="flood events per second")
    p.add_argument("--rounds", type=int, default=3, help="paired rounds (median taken), >= 3")
    p.add_argument(
        "--min-stored", type=float, default=5000.0, help="foreign events/s the flood must store"
    )
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--unfiltered", action="store_true", help="also time unfiltered actors")
    p.add_argument("--flood", metavar="URL", help=argparse.SUPPRESS)
    p.add_argument("--run", help=argparse.SUPPRESS)
    p.add_argument("--target", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.flood:
        flood(args.flood, args.run, args.rate, args.target)
        return
    if args.rounds < 3:
        p.error("--rounds must be at least 3 (a median of paired rounds)")

    from mrl_actors import logs

    logs.configure("console", "error")
    with tempfile.TemporaryDirectory(prefix="mrl-flood-") as tmp:
        root = Path(tmp)
        os.environ.setdefault("MRL_CACHE_DIR", str(root / "cache"))
        t0 = time.perf_counter()
        timed_run(root, "warmup", args.steps, 0)
        print(f"warm-up run (builds the tiny models): {time.perf_counter() - t0:.1f} s")
        # "flooded elsewhere": the same flood into another run's stream on the same server, so
        # that what "flooded" costs beyond it is the readers' (the flood's own CPU is in both)
        cols: dict[str, list[float]] = {"plain": [], "flooded elsewhere": [], "flooded": []}
        stored: dict[str, list[float]] = {c: [] for c in cols}  # foreign events/s stored
        if args.unfiltered:
            cols["flooded, unfiltered"], stored["flooded, unfiltered"] = [], []
        problems: list[str] = []
        for r in range(args.rounds):
            order = list(cols) if r % 2 == 0 else list(cols)[::-1]
            for col in order:
                rate = 0.0 if col == "plain" else args.rate
                restore = unfiltered_actors() if col == "flooded, unfiltered" else None
                try:
                    name = f"{col.split(',')[0].replace(' ', '-')}{'-u' if restore else ''}-{r}"
                    elsewhere = col == "flooded elsewhere"
                    wall, n, other, flood_s = timed_run(root, name, args.steps, rate, elsewhere)
                finally:
                    if restore is not None:
                        from mrl_actors.actors import policy

                        policy.PolicyActor._read = restore  # type: ignore[method-assign]
                ev_s = (other if elsewhere else n) / flood_s if flood_s > 0 else 0.0
                cols[col].append(wall)
                stored[col].append(ev_s)
                print(
                    f"round {r}: {col:<20} {wall:6.1f} s, foreign events stored: {n:,} "
                    f"({ev_s:,.0f}/s over {flood_s:.1f} s of flooding)"
                )
                if (rate == 0 or elsewhere) and n:
                    problems.append(f"{name}: {n} foreign events in a run nobody flooded")
                if rate > 0 and ev_s < args.min_stored:
                    problems.append(
                        f"{name}: the flood stored {ev_s:,.0f} foreign events/s, "
                        f"below --min-stored {args.min_stored:,.0f}"
                    )
        base = statistics.median(cols["plain"])
        print()
        print(
            f"{'run':<20} {'median s':>9} {'slowdown':>9} {'paired spread':>15} "
            f"{'foreign ev/s':>13}   (load avg {os.getloadavg()[0]:.2f}, {os.cpu_count()} cpus)"
        )
        for col, walls in cols.items():
            med = statistics.median(walls)
            paired = [w / b - 1 for w, b in zip(walls, cols["plain"], strict=True)]
            spread = f"{min(paired):+.1%}..{max(paired):+.1%}"
            ev_s = statistics.median(stored[col])
            print(f"{col:<20} {med:>9.1f} {med / base - 1:>+9.1%} {spread:>15} {ev_s:>13,.0f}")
        there, here = cols["flooded elsewhere"], cols["flooded"]
        paired = [h / t - 1 for h, t in zip(here, there, strict=True)]
        print(
            f"the readers' share (flooded against flooded elsewhere): "
            f"{statistics.median(here) / statistics.median(there) - 1:+.1%} "
            f"(paired {min(paired):+.1%}..{max(paired):+.1%})"
        )
        if problems:
            print("\nFAILED: the benchmark did not measure what it says:\n" + "\n".join(problems))
            sys.exit(1)


if __name__ == "__main__":
    main()
