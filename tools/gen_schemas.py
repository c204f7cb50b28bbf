"""Write `schemas/`: the JSON Schemas of every event, and one encoded sample per released tag.

    python tools/gen_schemas.py           # write the schemas, add samples for new tags
    python tools/gen_schemas.py --check   # exit 1 if a schema file drifted from the code

`events.schema.json` is the wire form (msgpack, as msgspec encodes it: packed arrays are bytes,
base64 in JSON); `export.schema.json` is one line of `mrl log export`'s events.jsonl (packed arrays
as lists of numbers, other bytes as hex, in a record envelope).

Samples are frozen once written: a sample of a released version is never regenerated, so a code
change that stops it decoding fails `tests/unit/test_events_schema.py`. A new tag (a new event or
a `.v2`) gets its sample the next time this script runs. `RolloutGroupCompleted.v0` is the older
version kept to show the upcast working; it is written from a hand-built payload.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mrl_actors import events as ev  # noqa: E402

SCHEMA = ROOT / "schemas" / "events.schema.json"
EXPORT_SCHEMA = ROOT / "schemas" / "export.schema.json"
SAMPLES = ROOT / "schemas" / "samples"

RUN = "sample-run"


def _completion(i: int) -> ev.Completion:
    return ev.Completion(
        token_ids=ev.pack_i32([15, 1000 + i, 50_000]),
        logprobs=ev.pack_f32([-0.25, -1.5, -0.125]),
        text=f" 4{i}",
        finish_reason="stop",
        reward=float(i % 2),
        success=bool(i % 2),
        verdict="match" if i % 2 else "wrong answer",
    )


def samples() -> dict[str, ev.Event]:
    """One deterministic instance of every current event type, keyed by its tag."""
    base: dict[str, Any] = {"run": RUN, "time_ns": 1_790_000_000_000_000_000}

    def eid(kind: str, source: str, *key: object) -> str:
        return ev.event_id(kind, RUN, source, *key)

    items: list[ev.Event] = [
        ev.RunStarted(
            **base,
            source="node0",
            event_id=eid("run", "node0"),
            spec_toml="[run]\nseed = 7\n",
            seed=7,
            code_version="0.1.0+abc123",
            probes=["independent", "sgt"],
        ),
        ev.PolicyRegistered(
            **base,
            source="qwen",
            event_id=eid("policy", "qwen"),
            policy="qwen",
            family="qwen2",
            model_path="/models/qwen",
            tokenizer_fingerprint="sha256:0f",
            probe="sgt",
            options={"lambda": 0.5},
        ),
        ev.RolloutGroupCompleted(
            **base,
            source="qwen",
            event_id=eid("rollout", "qwen", 3, "p17"),
            policy="qwen",
            policy_version=3,
            prompt_id="p17",
            prompt_text="What is 6*7?",
            prompt_token_ids=ev.pack_i32([3838, 374, 220]),
            temperature=1.0,
            tokenizer_fingerprint="sha256:0f",
            completions=[_completion(0), _completion(1)],
        ),
        ev.RewardSummary(
            **base,
            source="qwen",
            event_id=eid("reward", "qwen", 3, "p17"),
            policy="qwen",
            policy_version=3,
            prompt_id="p17",
            rewards=ev.pack_f32([0.0, 1.0]),
            success_rate=0.5,
        ),
        ev.SuccessVerified(
            **base,
            source="qwen",
            event_id=eid("success", "qwen", 3, "p17", 1),
            policy="qwen",
            policy_version=3,
            prompt_id="p17",
            prompt_text="What is 6*7?",
            completion_index=1,
            completion=_completion(1),
            tokenizer_fingerprint="sha256:0f",
        ),
        ev.LearnerStepCompleted(
            **base,
            source="qwen",
            event_id=eid("learner", "qwen", 4),
            policy="qwen",
            step=4,
            probe="sgt",
            consumed=[ev.ConsumedEvent(12, eid("rollout", "qwen", 3, "p17"))],
            weights_sha256="ab" * 32,
            metrics={"loss": 0.125},
        ),
        ev.CheckpointSaved(
            **base,
            source="qwen",
            event_id=eid("checkpoint", "qwen", 4),
            policy="qwen",
            step=4,
            path="runs/x/ckpt/qwen/4",
            weights_sha256="ab" * 32,
        ),
        ev.ThroughputReported(
            **base,
            source="node0",
            event_id=eid("throughput", "node0", "qwen", 1),
            node="node0",
            policy="qwen",
            role="rollout",
            window_s=10.0,
            tokens_per_s=1234.5,
            samples_per_s=8.0,
        ),
        ev.SlotsAssigned(
            **base,
            source="mwra",
            event_id=eid("slots", "mwra", 1),
            epoch=1,
            assignments=[ev.SlotAssignment(node="node0", slot=0, policy="qwen", role="learner")],
            reason="initial",
        ),
        ev.NodeJoined(
            **base,
            source="node0",
            event_id=eid("node", "node0", "joined"),
            node="node0",
            host="gpu-1",
            pid=4242,
            slots=1,
            devices=["cpu"],
        ),
        ev.NodeLeft(
            **base,
            source="node0",
            event_id=eid("node", "node0", "left"),
            node="node0",
            reason="shutdown",
        ),
        ev.RunFinished(
            **base,
            source="node0",
            event_id=eid("run", "node0", "finished"),
            status="completed",
            summary={"steps": 4},
        ),
        ev.DeadLettered(
            **base,
            source="learner",
            event_id=eid("deadletter", "learner", 9),
            original_subject=f"mrl.{RUN}.rollout.qwen",
            original_seq=9,
            error="garbage",
            reason="not a msgpack event",
            raw_prefix=b"\xc1\x00",
            raw_size=2,
        ),
        ev.BlobPointer(
            **base,
            source="qwen",
            event_id=eid("rollout", "qwen", 5, "p1"),
            kind="rollout",
            ref=ev.BlobRef(store="object", key="cd" * 32, sha256="cd" * 32, size=9_000_000),
        ),
        ev.NodeHeartbeat(
            **base,
            source="node0",
            event_id=eid("node", "node0", "heartbeat", 3),
            node="node0",
            slots=8,
            epoch=2,
        ),
        ev.SlotMoveMeasured(
            **base,
            source="node0",
            event_id=eid("slots", "node0", "moved", 2, 5),
            node="node0",
            slot=5,
            epoch=2,
            from_policy="qwen",
            to_policy="llama",
            seconds=41.5,
        ),
        ev.LearnerStepTimed(
            **base,
            source="qwen",
            event_id=eid("learner", "qwen", 4, "timed"),
            policy="qwen",
            step=4,
            wait_s=1.5,
            compute_s=12.25,
            samples=64,
            pending_groups=3,
            staleness=0.5,
        ),
        ev.WeightsPublished(
            **base,
            source="qwen",
            event_id=eid("weights", "qwen", 4),
            policy="qwen",
            version=4,
            weights_sha256="ef" * 32,
            blob=ev.BlobRef(store="object", key="ab" * 32, sha256="ab" * 32, size=25_000_000),
        ),
        ev.CheckpointStored(
            **base,
            source="qwen",
            event_id=eid("checkpoint", "qwen", "stored", 4),
            policy="qwen",
            step=4,
            weights_sha256="ef" * 32,
            weights=ev.BlobRef(store="object", key="ab" * 32, sha256="ab" * 32, size=25_000_000),
            optimizer=ev.BlobRef(store="object", key="12" * 32, sha256="12" * 32, size=50_000_000),
        ),
    ]
    return {msgspec.inspect.type_info(type(e)).tag: e for e in items}  # type: ignore[attr-defined]


def rollout_v0() -> bytes:
    """The v0 wire form: `model` instead of `policy`, no `tokenizer_fingerprint`."""
    current = samples()["RolloutGroupCompleted.v1"]
    obj = msgspec.msgpack.decode(ev.encode(current))
    obj["type"] = "RolloutGroupCompleted.v0"
    obj["model"] = obj.pop("policy")
    obj.pop("tokenizer_fingerprint")
    return msgspec.msgpack.encode(obj)


def schema_text() -> str:
    return json.dumps(ev.json_schema(), indent=2, sort_keys=True) + "\n"


def export_schema_text() -> str:
    from mrl_actors.see.inspect import export_json_schema

    return json.dumps(export_json_schema(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check for schema drift")
    args = parser.parse_args(argv)
    texts = {SCHEMA: schema_text(), EXPORT_SCHEMA: export_schema_text()}
    if args.check:
        drifted = False
        for path, text in texts.items():
            drift = not path.exists() or path.read_text() != text
            print(f"{path.relative_to(ROOT)}: {'DRIFT' if drift else 'ok'}")
            drifted = drifted or drift
        return 1 if drifted else 0
    SCHEMA.parent.mkdir(parents=True, exist_ok=True)
    SAMPLES.mkdir(parents=True, exist_ok=True)
    for path, text in texts.items():
        path.write_text(text)
    wanted = {tag: ev.encode(e) for tag, e in samples().items()}
    wanted["RolloutGroupCompleted.v0"] = rollout_v0()
    print(f"{'sample':<32} {'bytes':>7}  status")
    for tag, data in sorted(wanted.items()):
        path = SAMPLES / f"{tag}.msgpack"
        status = "kept (frozen)" if path.exists() else "written"
        if not path.exists():
            path.write_bytes(data)
        print(f"{tag:<32} {path.stat().st_size:>7}  {status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
