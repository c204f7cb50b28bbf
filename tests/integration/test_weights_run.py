"""An asynchronous run whose weights travel by memory map, as deltas, with retention.

One policy, stopped after three learner steps and resumed to the end: its rollout actors load
every version from the `mmap` store (full every second version, deltas between), the learner
restored after the stop writes a full version next and still names its deltas' base, and the
versions retention no longer needs are gone from the store while the kept ones load.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from helpers.runs import run_events
from helpers.specs import TINY16, spec_toml

from mrl_actors.events import LearnerStepCompleted, WeightsPublished

pytestmark = [pytest.mark.integration]

RUN = "t-wrun"
STEPS = 5


def spec_text(models_dir: Path) -> str:
    return spec_toml(
        models_dir,
        run={"name": RUN, "mode": "async", "steps": STEPS, "group_size": 4},
        weights={"store": "mmap", "full_every": 2, "keep": 2},
        tiny=TINY16,
        grpo={"lr": 1e-3, "weight_decay": 0.1},  # every step changes the weights
        pair=[("gpt2", "gpt2")],
    )


def test_an_mmap_delta_run_resumes_and_keeps_only_what_it_needs(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mrl_actors.actors.roles import rollout_runtime
    from mrl_actors.models.load import weights_sha256
    from mrl_actors.models.weights import WeightsIO
    from mrl_actors.run.runner import run_once
    from mrl_actors.see.access import open_log
    from mrl_actors.spec import parse_spec

    monkeypatch.setenv("MRL_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    text = spec_text(models_dir)
    spec = parse_spec(text)
    anyio.run(lambda: run_once(spec, text, out, stop_after=3))
    anyio.run(lambda: run_once(spec, text, out))
    events = anyio.run(run_events, out, RUN)
    steps = [e.step for e in events if isinstance(e, LearnerStepCompleted)]
    assert sorted(set(steps)) == list(range(1, STEPS + 1))
    weights = {e.version: e for e in events if isinstance(e, WeightsPublished)}
    assert sorted(weights) == list(range(STEPS + 1))
    assert all(e.blob.store == "mmap" for e in weights.values())
    assert weights[1].base_version == 0 and weights[2].base_version == -1
    assert any(e.base_version >= 0 for v, e in weights.items() if v > 3)  # after the resume
    files = {p.name for p in (out / "weights").rglob("*") if p.is_file()}
    kept = {0, STEPS - 1, STEPS, 4}  # v0, the newest two, the newest checkpoint's (4)
    for v, e in weights.items():
        needed = v in kept or any(k.base == e.blob for k in map(weights.get, kept) if k)
        assert (e.blob.key in files) == needed, v

    async def load_kept() -> None:
        rt = rollout_runtime(spec, "gpt2", out)
        async with open_log(run_dir=out, run=RUN) as log:
            wio = WeightsIO.of(log, spec, out, "gpt2")
            for v in sorted(kept):
                await wio.load(weights[v], rt.model)  # every hash checked
                assert weights_sha256(rt.model) == weights[v].weights_sha256

    anyio.run(load_kept)
