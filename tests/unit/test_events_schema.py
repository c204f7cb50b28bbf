"""`schemas/` stays true to the code: no schema drift, every frozen sample still decodes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import msgspec
import pytest

from mrl_actors import events as ev

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "schemas" / "samples"


def _gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_schemas", ROOT / "tools" / "gen_schemas.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_schema_file_matches_the_code() -> None:
    """Regression guard: change a Struct, then run `python tools/gen_schemas.py`."""
    on_disk = json.loads((ROOT / "schemas" / "events.schema.json").read_text())
    assert on_disk == ev.json_schema(), "schema drift: run python tools/gen_schemas.py"


def test_every_current_tag_has_a_frozen_sample() -> None:
    tags = {msgspec.inspect.type_info(t).tag for t in ev.EVENT_TYPES}  # type: ignore[attr-defined]
    have = {p.name.removesuffix(".msgpack") for p in SAMPLES.glob("*.msgpack")}
    assert tags <= have, f"no sample for {sorted(tags - have)}: run python tools/gen_schemas.py"


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.msgpack")), ids=lambda p: p.stem)
def test_sample_decodes(path: Path) -> None:
    tag = path.name.removesuffix(".msgpack")
    event = ev.decode(path.read_bytes())
    if tag in ev.UPCASTS:
        return  # checked by the upcast test
    assert msgspec.inspect.type_info(type(event)).tag == tag  # type: ignore[attr-defined]
    assert ev.encode(event) == path.read_bytes(), "re-encoding a released sample changed its bytes"


def test_current_samples_equal_what_the_generator_builds() -> None:
    for tag, event in _gen().samples().items():
        assert ev.decode((SAMPLES / f"{tag}.msgpack").read_bytes()) == event


def test_rollout_v0_upcasts_to_v1() -> None:
    old = (SAMPLES / "RolloutGroupCompleted.v0.msgpack").read_bytes()
    assert msgspec.msgpack.decode(old)["model"] == "qwen"
    event = ev.decode(old)
    assert isinstance(event, ev.RolloutGroupCompleted)
    assert event.policy == "qwen" and event.tokenizer_fingerprint == ""
    current = _gen().samples()["RolloutGroupCompleted.v1"]
    assert event == msgspec.structs.replace(current, tokenizer_fingerprint="")
    assert event.completions[1].token_ids_array().tolist() == [15, 1001, 50_000]


def test_broken_upcast_is_a_schema_error() -> None:
    obj = msgspec.msgpack.decode((SAMPLES / "RolloutGroupCompleted.v0.msgpack").read_bytes())
    del obj["model"]
    with pytest.raises(ev.EventDecodeError) as info:
        ev.decode(msgspec.msgpack.encode(obj))
    assert info.value.kind == "schema"  # type: ignore[attr-defined]
