"""A corrupt store: one byte of a finished run's `*.blk` flipped, every tool still ends.

nats-server drops a message whose block checksum fails without a log line, while the stream's
state (and so a consumer's pending count) still counts it: a read of the finished log used to
wait for it forever. Each tool must end within 60 s and name the missing sequence.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from helpers.specs import spec_toml

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOOL_TIMEOUT_S = 60


def _spec(models_dir: Path) -> str:
    return spec_toml(
        models_dir,
        run={"name": "t-corrupt", "probe": "independent", "steps": 1, "checkpoint_every": 1},
        task={"arithmetic": {"max_operand": 4, "size": 16}},
        tiny={"hidden_size": 32, "layers": 1, "heads": 2, "warm_start_steps": 10},
        max_new_tokens=3,
        pair=[("gpt2", "gpt2")],
    )


@pytest.fixture(scope="module")
def corrupt_run(
    models_dir: Path, model_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, int]:
    """A finished run copied to a temp dir with one byte of its learner step's record flipped;
    and that record's sequence."""
    from mrl_actors.run.runner import run_once
    from mrl_actors.spec import parse_spec

    root = tmp_path_factory.mktemp("corrupt")
    text = _spec(models_dir)
    anyio.run(lambda: run_once(parse_spec(text), text, root / "run"))
    seq = anyio.run(_learner_seq, root / "run")
    copy = root / "copy"
    shutil.copytree(root / "run", copy)
    blocks = sorted((copy / "nats").glob("jetstream/*/streams/MRL_t-corrupt/msgs/*.blk"))
    assert blocks, "the run's stream has no message block"
    marker = b"LearnerStepCompleted.v1"
    for blk in blocks:
        data = bytearray(blk.read_bytes())
        at = data.find(marker)
        if at >= 0:
            data[at + 3] ^= 0xFF  # inside the payload: the record's checksum no longer holds
            blk.write_bytes(bytes(data))
            break
    else:
        pytest.fail("no learner step found in the stream's blocks")
    return copy, seq


async def _learner_seq(run_dir: Path) -> int:
    from mrl_actors.events import LearnerStepCompleted
    from mrl_actors.see import EventLog
    from mrl_actors.see.connection import connect
    from mrl_actors.see.server import open_run_dir

    async with open_run_dir(run_dir) as info:
        nc = await connect(info.client())
        try:
            log = await EventLog.open(nc, "t-corrupt", create=False)
            async for rec in log.read(start_seq=1, kinds=["learner"]):
                if isinstance(rec.event, LearnerStepCompleted):
                    return rec.seq
        finally:
            await nc.close()
    raise AssertionError("no learner step in the run")


@pytest.mark.parametrize(
    "args",
    [
        ["log", "tail"],
        ["log", "stats"],
        ["report"],
        ["status"],
        ["replay"],
    ],
    ids=["log-tail", "log-stats", "report", "status", "replay"],
)
def test_each_tool_ends_and_names_the_lost_sequence(
    corrupt_run: tuple[Path, int], args: list[str], tmp_path: Path
) -> None:
    run_dir, seq = corrupt_run
    work = tmp_path / "run"
    shutil.copytree(run_dir, work)  # each tool gets its own copy: a tool may write its report
    cmd = [sys.executable, "-m", "mrl_actors.cli", *args, str(work)]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=TOOL_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(args)} did not end within {TOOL_TIMEOUT_S} s: {exc.stderr!r}")
    out = done.stdout.decode() + done.stderr.decode()
    assert f"seq={seq}" in out or f"seq {seq}" in out, out[-3000:]


@pytest.mark.anyio
@pytest.mark.parametrize("where", ["first", "last"])
async def test_an_actors_read_dead_letters_the_lost_sequence_and_goes_on(
    tmp_path: Path, where: str
) -> None:
    """Ten rollouts, the first or the last one's record corrupted: the read ends with the nine
    others and one `lost` dead letter naming the sequence."""
    from conftest import rollout

    from mrl_actors.events import DeadLettered
    from mrl_actors.see import EventLog, LogConfig
    from mrl_actors.see.connection import connect
    from mrl_actors.see.deadletter import DeadLetters
    from mrl_actors.see.server import EmbeddedServer

    store = tmp_path / "nats"
    async with EmbeddedServer(store) as srv:
        nc = await connect(srv.client())
        log = await EventLog.open(nc, "t1", LogConfig())
        events = [rollout("t1", "a", i) for i in range(1, 11)]
        await log.append_many(events)
        await nc.close()
    (blk,) = store.glob("jetstream/*/streams/MRL_t1/msgs/*.blk")
    data = bytearray(blk.read_bytes())
    marker = events[0].event_id.encode() if where == "first" else events[-1].event_id.encode()
    at = data.find(marker) if where == "first" else data.rfind(marker)
    data[at + len(marker) - 1] ^= 0xFF
    blk.write_bytes(bytes(data))
    lost_seq = 1 if where == "first" else 10
    async with EmbeddedServer(store) as srv:
        nc = await connect(srv.client())
        try:
            log = await EventLog.open(nc, "t1", LogConfig(), create=False)
            dead = DeadLetters(log, "a")
            with anyio.fail_after(TOOL_TIMEOUT_S):
                seqs = [
                    r.seq async for r in log.read(start_seq=1, kinds=["rollout"], dead_letters=dead)
                ]
            assert seqs == [s for s in range(1, 11) if s != lost_seq]
            letters = [r.event async for r in log.read(kinds=["deadletter"])]
            assert [(d.original_seq, d.error) for d in letters if isinstance(d, DeadLettered)] == [
                (lost_seq, "lost")
            ]
        finally:
            await nc.close()
