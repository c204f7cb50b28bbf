"""`mrl run` under attack and under loss: forged writes, SIGTERM, a killed log server.

Each test drives a real `mrl run` subprocess (tiny real models, the shared warm-start cache of
`test_mrl_run`) and acts on it from outside with the credentials in its `server.json`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers.raw import blob_forgeries, raw_client
from helpers.runs import learner_steps, run_events
from helpers.specs import pair_spec

from mrl_actors.events import (
    CheckpointStored,
    LearnerStepCompleted,
    RolloutGroupCompleted,
    RunFinished,
    WeightsPublished,
    event_id,
)
from mrl_actors.see.access import open_log
from mrl_actors.see.auth import policy_user
from mrl_actors.see.config import LogConfig
from mrl_actors.see.server import SERVER_INFO, read_server_info

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# learner steps of the attacked and the clean run: enough that the attacked run is still going
# while its server answers every forgery (3 steps ended first once on a loaded CI machine)
STEPS = 5

MakeRollout = Callable[..., RolloutGroupCompleted]
StartRun = Callable[[str, int], tuple[subprocess.Popen[str], Path]]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def start_run(models_dir: Path, model_cache: Path, tmp_path: Path) -> Iterator[StartRun]:
    procs: list[subprocess.Popen[str]] = []

    def start(name: str, steps: int) -> tuple[subprocess.Popen[str], Path]:
        spec = tmp_path / f"{name}.toml"
        spec.write_text(pair_spec(models_dir, name, "independent", steps=steps))
        out = tmp_path / f"{name}-{len(procs)}"
        cmd = [sys.executable, "-m", "mrl_actors.cli", "run", str(spec), "--out", str(out)]
        proc = subprocess.Popen(
            [*cmd, "--no-progress"],
            env={**os.environ, "MRL_CACHE_DIR": str(model_cache)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc, out

    yield start
    for proc in procs:  # never leave a run behind, whatever failed
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def _wait_ready(proc: subprocess.Popen[str], out: Path, timeout: float = 240.0) -> int:
    """Wait until both policy actors are up (after the warm start); the server's pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        log = out / "run.log"
        info = read_server_info(out) if (out / SERVER_INFO).exists() else None
        if info and log.exists() and log.read_text().count('"policy_ready"') >= 2:
            return info.pid
        time.sleep(0.2)
    raise AssertionError(f"the run in {out} did not get ready within {timeout:.0f}s")


def _step(run: str, policy: str, step: int) -> LearnerStepCompleted:
    return LearnerStepCompleted(
        run=run,
        source=policy,
        event_id=event_id("learner", run, policy, step),
        policy=policy,
        step=step,
        probe="independent",
        consumed=[],
        weights_sha256="0" * 64,
        metrics={},
    )


async def _raw(info: Any, user: str, errors: list[str]) -> Any:
    return await raw_client(info, user, errors)


def test_forged_writes_are_refused_and_the_run_is_unaffected(
    start_run: StartRun, make_rollout: MakeRollout
) -> None:
    """With gpt2's and the reader's passwords, forge llama's rollouts and learner steps, end the
    run, delete and purge the stream, and (gpt2) write a chunk, a metadata message and a rollup
    in llama's blob bucket, purge it and delete its messages: the server refuses each, llama's
    bucket holds only llama's blobs, every stored weights blob reads back, and the run ends
    with the weights of the same run that nobody attacked."""
    run = "t-sec"
    proc, out = start_run(run, STEPS)
    _wait_ready(proc, out)
    info = read_server_info(out)
    assert info is not None

    async def refused(aw: Any) -> int:
        try:
            await aw
        except Exception:  # LogError for an event, a JetStream API error for stream ops
            return 1
        return 0

    async def attack() -> int:
        # every forgery at once, so that all are refused while the short run is still live
        fast = LogConfig(ack_timeout_s=1.0)
        finished = event_id("run", run, "mrl", "finished")
        async with contextlib.AsyncExitStack() as stack:
            attempts = []
            for user in (policy_user("gpt2"), "reader"):
                log = await stack.enter_async_context(open_log(info=info, user=user, config=fast))
                for forged in (
                    make_rollout(run, "llama", 0),
                    _step(run, "llama", 1),
                    _step(run, "llama", 2),
                    RunFinished(run=run, source="mrl", event_id=finished, status="completed"),
                ):
                    attempts.append(log.append(forged))
                js = log.nc.jetstream(timeout=1.0)
                attempts += [js.delete_stream(f"MRL_{run}"), js.purge_stream(f"MRL_{run}")]
                attempts += [js.purge_stream(f"OBJ_{bucket}"), js.delete_msg(f"OBJ_{bucket}", 1)]
            # publishes in llama's bucket as gpt2: the server answers each with -ERR
            raw = await _raw(info, policy_user("gpt2"), errors)
            stack.push_async_callback(raw.close)
            for subject, data, headers in blob_forgeries(bucket, "0" * 64, 9):
                await raw.publish(subject, data, headers=headers)
            await raw.flush()
            results = [0] * len(attempts)

            async def one(i: int, aw: Any) -> None:
                results[i] = await refused(aw)

            async with anyio.create_task_group() as tg:
                for i, aw in enumerate(attempts):
                    tg.start_soon(one, i, aw)
            # every attempt answered: by the run's own server, so while the run was live (the
            # bucket's -ERR lines, published before them, are read as they arrive)
            with anyio.fail_after(10):  # each -ERR names its subject
                while len([e for e in errors if "permissions violation" in e]) < 3:
                    await anyio.sleep(0.05)
        return sum(results)

    bucket = f"MRL_{run}_BLOBS_llama"
    errors: list[str] = []
    assert anyio.run(attack) == 2 * 8
    for subject in (f"$o.{bucket}.c.forged".lower(), f"$o.{bucket}.c.x".lower()):
        assert any(f'"{subject}"' in e for e in errors), errors
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    attacked = anyio.run(run_events, out, run)
    assert all(e.summary for e in attacked if isinstance(e, RunFinished))  # the run's own
    # a lockstep run keeps its weights in checkpoint directories: nothing reached llama's
    # bucket, not one forged message included
    assert anyio.run(_blobs_intact, out, run, attacked) == 0

    clean_proc, clean_out = start_run(run, STEPS)  # the same spec and run name, unattacked
    _, err = clean_proc.communicate(timeout=600)
    assert clean_proc.returncode == 0, err[-2000:]
    clean = anyio.run(run_events, clean_out, run)
    for policy in ("gpt2", "llama"):
        assert [e.step for e in learner_steps(attacked, policy)] == list(range(1, STEPS + 1))
        shas = [e.weights_sha256 for e in learner_steps(attacked, policy)]
        assert shas == [e.weights_sha256 for e in learner_steps(clean, policy)]


async def _blobs_intact(out: Path, run: str, events: list[Any]) -> int:
    """Every stored checkpoint's blobs read back as the reader (hash-checked), and llama's
    bucket holds llama's blobs only: one meta each, none of the forged subjects. The number of
    messages in llama's bucket."""
    stored = [e for e in events if isinstance(e, CheckpointStored | WeightsPublished)]
    refs = [r for e in stored for r in _refs(e)]
    async with open_log(run_dir=out, run=run, user="reader", policies=["gpt2", "llama"]) as log:
        for ref in refs:
            assert len(await log.blobs.get(ref)) == ref.size  # its sha256 checked by get
        bucket = f"MRL_{run}_BLOBS_llama"
        state = (await log.js.stream_info(f"OBJ_{bucket}", subjects_filter=">")).state
    subjects = dict(state.subjects or {})
    metas = {s: n for s, n in subjects.items() if s.startswith(f"$O.{bucket}.M.")}
    assert set(metas.values()) <= {1}
    assert not {f"$O.{bucket}.C.forged", f"$O.{bucket}.C.x"} & set(subjects)
    assert len(metas) == len({r.key for r in refs if r.writer == "llama"})  # llama's only
    return int(state.messages)


def _refs(e: CheckpointStored | WeightsPublished) -> list[Any]:
    if isinstance(e, WeightsPublished):
        return [r for r in (e.blob, e.base) if r is not None]
    return [r for r in (e.weights, e.optimizer, e.weights_base) if r is not None]


@pytest.mark.parametrize(
    ("signum", "code", "said"),
    [(signal.SIGTERM, 143, "mrl: terminated"), (signal.SIGINT, 130, "mrl: interrupted")],
    ids=["SIGTERM", "SIGINT"],
)
def test_a_signal_stops_the_run_and_its_server(
    start_run: StartRun, signum: int, code: int, said: str
) -> None:
    proc, out = start_run("t-term", 50)
    server_pid = _wait_ready(proc, out)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert "Traceback" not in err and said in err
    assert not (out / SERVER_INFO).exists()
    for _ in range(100):
        if not _alive(server_pid):
            break
        time.sleep(0.05)
    assert not _alive(server_pid)


def test_a_killed_log_server_ends_the_run_with_one_clean_line(start_run: StartRun) -> None:
    proc, out = start_run("t-lost", 50)
    server_pid = _wait_ready(proc, out)
    os.kill(server_pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=120)  # bounded: a few reconnect attempts, then the end
    assert proc.returncode == 2, err[-2000:]
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("mrl: error:")]
    assert len(errors) == 1, err[-2000:]
    assert "lost the log server" in errors[0]
    assert errors[0].endswith(f"resume with: mrl run --resume {out}")
    assert not (out / SERVER_INFO).exists()
    summary = out / "summary.json"
    assert not summary.exists() or json.loads(summary.read_text())
