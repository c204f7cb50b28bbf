"""The reader printed in docs/wire-format.md, run as printed (plain nats-py and msgspec, no
project import) against a finished run's store served by a bare `nats-server` as that page says.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from mrl_actors.events import (
    ConsumedEvent,
    LearnerStepCompleted,
    RolloutGroupCompleted,
    RunFinished,
    RunStarted,
)
from mrl_actors.see import EventLog
from mrl_actors.see.connection import connect
from mrl_actors.see.server import EmbeddedServer, free_port, nats_server_binary

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "wire-format.md"
RUN = "wire"


def reader_source() -> str:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## A reader", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)  # type: ignore[union-attr]


def test_the_documented_reader_reads_a_finished_run(
    tmp_path: Path, make_rollout: Callable[..., RolloutGroupCompleted]
) -> None:
    source = reader_source()
    assert "mrl_actors" not in source  # a reader in another language would have nothing else
    (tmp_path / "reader.py").write_text(source)
    store = tmp_path / "run" / "nats"
    groups = [make_rollout(RUN, "gpt2", i, tokens=5, group=2) for i in range(2)]

    async def finished_run() -> None:  # a run's events, written by the project's own log
        async with EmbeddedServer(store) as srv:
            nc = await connect(srv.client())
            log = await EventLog.open(nc, RUN)
            base = {"run": RUN, "time_ns": 1}
            await log.append(
                RunStarted(
                    **base, source="mrl", event_id="s", spec_toml="", seed=0, code_version="x"
                )
            )
            seqs = [await log.append(g) for g in groups]
            await log.append(
                LearnerStepCompleted(
                    **base,
                    source="gpt2",
                    event_id="l1",
                    policy="gpt2",
                    step=1,
                    probe="independent",
                    consumed=[
                        ConsumedEvent(s, g.event_id) for s, g in zip(seqs, groups, strict=True)
                    ],
                    weights_sha256="0" * 64,
                )
            )
            await log.js.publish(f"mrl.{RUN}.rollout.gpt2", b"\xc1 garbage")
            await log.append(RunFinished(**base, source="mrl", event_id="f", status="completed"))
            await nc.close()

    anyio.run(finished_run)
    port = free_port()
    cmd = [nats_server_binary(), "-js", "-sd", str(store), "-a", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        done = None
        for _ in range(50):  # until the server listens (bounded)
            if server.poll() is not None:  # its port was taken after free_port chose it
                port = free_port()
                cmd[-1] = str(port)
                server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            done = subprocess.run(
                [sys.executable, str(tmp_path / "reader.py"), f"nats://127.0.0.1:{port}", RUN],
                capture_output=True,
                text=True,
                timeout=60,
            )
            if done.returncode == 0:
                break
            anyio.run(anyio.sleep, 0.2)
        assert done is not None and done.returncode == 0, done.stderr if done else ""
    finally:
        server.terminate()
        server.wait(timeout=30)
    lines = done.stdout.splitlines()
    assert lines[0] == f"1 mrl.{RUN}.run.mrl RunStarted.v1"
    for line, g in zip(lines[1:3], groups, strict=True):
        lp = float(sum(c.logprobs_array().astype("float64").sum() for c in g.completions))
        assert f"RolloutGroupCompleted.v1 policy=gpt2 v0 prompt={g.prompt_id} G=2 tokens=10" in line
        assert f"logprob_sum={lp:.3f}" in line and "rewards=[0.0, 1.0]" in line
    assert lines[3].endswith("LearnerStepCompleted.v1 policy=gpt2 step=1 consumed=2")
    assert lines[4] == f"5 mrl.{RUN}.rollout.gpt2 not an event"
    assert lines[5] == f"6 mrl.{RUN}.run.mrl RunFinished.v1" and len(lines) == 6
