"""A live run survives any bytes on any subject of its stream, and its log stays readable.

Two runs of the same tiny spec on this machine: a clean one, and one into which a client with
write permission publishes, while the actors follow the log, garbage on every kind's subject:
random bytes, invalid UTF-8 (`b"\\xa1\\xff"`, which used to end a run), unknown tags, valid
events of the wrong kind, NaN arrays, blob pointers above the size limit or with a bad key, and
a 2 MiB payload. The dirty run ends with the same final weights per policy; each bad message a
policy actor folds over becomes exactly one dead letter of that actor; and resume,
`mrl log tail|stats|export` and the report all work on that log afterwards.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from helpers.specs import TINY32, spec_toml

from mrl_actors.cli import main
from mrl_actors.events import (
    CheckpointSaved,
    DeadLettered,
    LearnerStepCompleted,
    NodeLeft,
    encode,
    event_id,
)
from mrl_actors.see import EventLog
from mrl_actors.see.connection import connect
from mrl_actors.see.server import SERVER_INFO, ServerInfo, open_run_dir

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

RUN = "garbage"
POLICIES = ("gpt2", "llama")
STEPS = 3
FOLDED = ("rollout", "reward", "success", "learner")  # what a policy actor reads
KINDS = (*FOLDED, "checkpoint", "throughput", "node", "run", "policy", "blob", "slots")


def spec_text(models_dir: Path, name: str) -> str:
    return spec_toml(
        models_dir,
        run={"name": name, "probe": "xgrpo", "steps": STEPS, "checkpoint_every": STEPS},
        probes={"sharing": {"wait_for_peers_s": 60.0}},
        tiny=TINY32,
        grpo={"lr": 1e-3},
    )


def bad_payloads(run: str, kind: str, source: str, rng: random.Random) -> list[bytes]:
    """Messages that are not valid events on `mrl.<run>.<kind>.<source>`."""
    nan = msgspec.msgpack.encode(
        {
            "type": "RewardSummary.v1",
            "run": run,
            "source": source,
            "event_id": f"{run}/reward/{source}/nan",
            "policy": source,
            "policy_version": 0,
            "prompt_id": "p",
            "rewards": b"\x00\x00\xc0\x7f" * 2,  # float32 NaN, twice
            "success_rate": 0.5,
        }
    )
    other: Any = (
        NodeLeft(run=run, source=source, event_id="x/node", node=source, reason="forged")
        if kind == "checkpoint"
        else CheckpointSaved(
            run=run,
            source=source,
            event_id=event_id("checkpoint", run, source, 99),
            policy=source,
            step=99,
            path="/nowhere",
            weights_sha256="0" * 64,
        )
    )  # a valid event, of another kind than its subject
    pointer = msgspec.msgpack.encode(
        {
            "type": "BlobPointer.v1",
            "run": run,
            "source": source,
            "event_id": f"{run}/blob/{source}/huge",
            "kind": kind,
            "ref": {"store": "object", "key": "k", "sha256": "0" * 64, "size": 1 << 40},
        }
    )
    bad_key = msgspec.msgpack.encode(
        {
            "type": "BlobPointer.v1",
            "run": run,
            "source": source,
            "event_id": f"{run}/blob/{source}/key",
            "kind": kind,
            "ref": {"store": "object", "key": "../no such key", "sha256": "0" * 64, "size": 10},
        }
    )
    return [
        bad_key,
        b"\xa1\xff",
        rng.randbytes(64),
        msgspec.msgpack.encode({"type": "Bogus.v9", "run": run}),
        encode(other),
        nan,
        pointer,
    ]


async def inject(run_dir: Path, run: str) -> dict[str, list[int]]:
    """Once the actors follow the log (a first learner step is stored), publish the garbage.

    Returns the sequences of the bad messages by subject.
    """
    with anyio.fail_after(600):
        while not (run_dir / SERVER_INFO).exists():
            await anyio.sleep(0.1)
        info = msgspec.json.decode((run_dir / SERVER_INFO).read_bytes(), type=ServerInfo)
        nc = await connect(info.client(user="admin"))
        try:
            js = nc.jetstream()
            while True:
                try:
                    await js.get_msg(f"MRL_{run}", subject=f"mrl.{run}.learner.>")
                    break
                except Exception:  # no stream yet, or no learner step yet
                    await anyio.sleep(0.2)
            rng = random.Random(7)
            bad: dict[str, list[int]] = defaultdict(list)
            for kind in KINDS:
                for source in (*POLICIES, "x", "mrl"):
                    subject = f"mrl.{run}.{kind}.{source}"
                    for data in bad_payloads(run, kind, source, rng):
                        bad[subject].append((await js.publish(subject, data)).seq)
            for policy in POLICIES:  # one large one per policy, read by both actors
                subject = f"mrl.{run}.rollout.{policy}"
                bad[subject].append((await js.publish(subject, rng.randbytes(2 << 20))).seq)
            return dict(bad)
        finally:
            await nc.close()


def _run(spec_txt: str, out: Path, *, dirty: bool) -> tuple[dict[str, Any], dict[str, list[int]]]:
    from mrl_actors.run.runner import run_once
    from mrl_actors.spec import parse_spec

    spec = parse_spec(spec_txt)
    bad: dict[str, list[int]] = {}

    async def main_() -> dict[str, Any]:
        async with anyio.create_task_group() as tg:
            if dirty:

                async def injector() -> None:
                    bad.update(await inject(out, spec.run.name))

                tg.start_soon(injector)
            summary = await run_once(spec, spec_txt, out)
        return summary

    return anyio.run(main_), bad


async def _read_all(run_dir: Path, run: str) -> list[tuple[int, str, Any]]:
    async with open_run_dir(run_dir) as info:
        nc = await connect(info.client(user="admin"))
        try:
            log = await EventLog.open(nc, run, create=False)
            return [(r.seq, r.subject, r.event) async for r in log.read(start_seq=1)]
        finally:
            await nc.close()


def _final_weights(records: list[tuple[int, str, Any]]) -> dict[str, str]:
    out = {}
    for _, _, ev in records:
        if isinstance(ev, LearnerStepCompleted) and ev.step == STEPS:
            out[ev.policy] = ev.weights_sha256
    return out


def _dead_by_reader(records: list[tuple[int, str, Any]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for _, _, ev in records:
        if isinstance(ev, DeadLettered):
            out[ev.source].append(ev.original_seq)
    return out


def test_a_run_survives_garbage_on_every_subject(
    models_dir: Path,
    model_cache: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    clean_dir, dirty_dir = tmp_path / "clean", tmp_path / "dirty"
    text = spec_text(models_dir, RUN)  # one spec, two run directories (two servers)
    clean, _ = _run(text, clean_dir, dirty=False)
    dirty, bad = _run(text, dirty_dir, dirty=True)
    assert clean["run"]["status"] == dirty["run"]["status"] == "completed"

    recs = anyio.run(_read_all, dirty_dir, RUN)
    weights = _final_weights(recs)
    assert set(weights) == set(POLICIES)
    assert weights == _final_weights(anyio.run(_read_all, clean_dir, RUN))

    # each bad message on a subject a policy folds: one dead letter from each policy actor
    folded = sorted(
        seq
        for subject, seqs in bad.items()
        for seq in seqs
        if subject.split(".")[2] in FOLDED and subject.split(".")[3] in POLICIES
    )
    assert len(folded) == len(FOLDED) * len(POLICIES) * 7 + len(POLICIES)
    dead = _dead_by_reader(recs)
    for policy in POLICIES:  # each at most once; an actor whose last step came before a bad
        # message was stored never read it (the resume below reads the whole log again)
        assert len(dead[policy]) == len(set(dead[policy])), policy
        assert set(dead[policy]) <= set(folded), policy

    # resume on that log: nothing to do, no dead letter written twice
    from mrl_actors.run.runner import resume_spec, run_once

    spec, text = resume_spec(dirty_dir)
    resumed = anyio.run(lambda: run_once(spec, text, dirty_dir))
    assert resumed["run"]["status"] == "completed"
    after = anyio.run(_read_all, dirty_dir, RUN)
    assert _final_weights(after) == weights
    dead_after = _dead_by_reader(after)
    for policy in POLICIES:
        assert sorted(dead_after[policy]) == folded, policy  # every one, once
    assert json.loads((dirty_dir / "summary.json").read_text())["run"]["status"] == "completed"
    assert "<svg" in (dirty_dir / "report.html").read_text()

    # the tools read it all, count the bad messages and go on
    capsys.readouterr()
    n_bad = sum(len(v) for v in bad.values())
    assert main(["log", "stats", str(dirty_dir), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["bad_messages"]["count"] == n_bad
    assert main(["log", "tail", str(dirty_dir), "--kind", "rollout"]) == 0
    out = capsys.readouterr()
    assert "RolloutGroupCompleted" in out.out and "bad message" in out.err
    assert main(["log", "export", str(dirty_dir), "--out", str(tmp_path / "export")]) == 0
    rows = (tmp_path / "export" / "events.jsonl").read_text(encoding="utf-8").split("\n")[:-1]
    assert len(rows) == len(anyio.run(_read_all, dirty_dir, RUN))  # every valid event, no more
