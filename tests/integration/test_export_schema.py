"""`mrl log export` writes what `schemas/export.schema.json` says, checked by a real validator.

A short run of the built-in pair (nothing outside the repository) is exported and every line of
its events.jsonl is validated, with a dead letter (hex bytes) and a NaN metric (null) added to its
log so that the JSON-only corners are in it too.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import anyio
import pytest
from helpers.specs import BUILTIN, TINY32, policies_toml
from jsonschema import Draft202012Validator

from mrl_actors.cli import main
from mrl_actors.see.inspect import export_json_schema

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SPEC = """
[run]
name = "t-export"
mode = "lockstep"
probe = "sgt"
steps = 2
prompts_per_step = 4
group_size = 4
eval_every = 2
eval_size = 8
checkpoint_every = 2

[probes.sharing]
wait_for_peers_s = 20.0
""" + policies_toml("", tiny=TINY32, max_new_tokens=4, pair=BUILTIN)


def test_the_export_schema_on_disk_is_the_one_the_code_makes() -> None:
    on_disk = json.loads((ROOT / "schemas" / "export.schema.json").read_text())
    assert on_disk == export_json_schema(), "schema drift: run python tools/gen_schemas.py"
    Draft202012Validator.check_schema(on_disk)


async def _add_corners(run_dir: Path) -> None:
    """A NaN metric and a garbage message, as a diverged learner and a bad writer would leave:
    the schema refuses both (metrics maps hold finite numbers), so both become dead letters."""
    from mrl_actors.events import LearnerStepCompleted, event_id
    from mrl_actors.see import Consumer, EventLog, FoldApplier
    from mrl_actors.see.connection import connect
    from mrl_actors.see.server import open_run_dir

    async with open_run_dir(run_dir) as info:
        nc = await connect(info.client())
        try:
            log = await EventLog.open(nc, "t-export", create=False)
            await log.append(
                LearnerStepCompleted(
                    run="t-export",
                    source="gpt2",
                    event_id=event_id("learner", "t-export", "gpt2", 99),
                    policy="gpt2",
                    step=99,
                    probe="sgt",
                    consumed=[],
                    weights_sha256="00" * 32,
                    metrics={"loss": math.nan, "grad_norm": math.inf},
                )
            )
            await log.js.publish("mrl.t-export.rollout.gpt2", b"\xc1 not an event")
            applier: FoldApplier[int] = FoldApplier(lambda n, e: n + 1, 0)
            await Consumer(log, "reader").run(applier, until_idle=True, fetch_timeout=0.3)
        finally:
            await nc.close()


def test_every_exported_event_of_a_run_validates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mrl_actors.run.runner import run_once
    from mrl_actors.see.deadletter import RAW_PREFIX_BYTES
    from mrl_actors.spec import parse_spec

    monkeypatch.setenv("MRL_CACHE_DIR", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    anyio.run(lambda: run_once(parse_spec(SPEC), SPEC, run_dir))
    anyio.run(_add_corners, run_dir)
    out = tmp_path / "export"
    assert main(["log", "export", str(run_dir), "--out", str(out)]) == 0

    schema = json.loads((ROOT / "schemas" / "export.schema.json").read_text())
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    wire = Draft202012Validator(json.loads((ROOT / "schemas" / "events.schema.json").read_text()))
    raw = (out / "events.jsonl").read_bytes()
    lines = [json.loads(x) for x in raw.split(b"\n") if x]
    errors = [
        f"seq {obj.get('seq')}: {err.message[:200]} at {list(err.absolute_path)}"
        for obj in lines
        for err in validator.iter_errors(obj)
    ]
    assert errors == []
    types = {obj["event"]["type"] for obj in lines}
    for tag in ("RunStarted.v1", "PolicyRegistered.v1", "RolloutGroupCompleted.v1"):
        assert tag in types
    assert {"LearnerStepCompleted.v1", "DeadLettered.v1", "RunFinished.v1"} <= types
    assert not [o for o in lines if o["event"].get("step") == 99]  # refused, not exported
    dead = [o["event"] for o in lines if o["event"]["type"] == "DeadLettered.v1"]
    prefixes = [bytes.fromhex(d["raw_prefix"]) for d in dead]
    assert b"\xc1 not an event"[:RAW_PREFIX_BYTES] in prefixes
    assert len(dead) == 2  # the garbage and the NaN step
    # the export form is not the wire form: a rollout's packed arrays are lists here
    rollout = next(o for o in lines if o["event"]["type"] == "RolloutGroupCompleted.v1")
    assert isinstance(rollout["event"]["completions"][0]["token_ids"], list)
    assert not wire.is_valid(rollout["event"])
