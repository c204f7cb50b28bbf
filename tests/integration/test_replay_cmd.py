"""`mrl replay`: exact replay checks every logged weights sha256; `--probe` writes its report.

One short two-policy run (GPT-2 and Llama-2 families, probe independent) is shared by the tests.
Altering the run (a forged learner step in the log, an edited start checkpoint) must make the
replay fail naming the policy and the step.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers.specs import TINY64, spec_toml

from mrl_actors.cli import main
from mrl_actors.events import LearnerStepCompleted, event_id

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEPS = 2


def _spec(models_dir: Path) -> str:
    return spec_toml(
        models_dir,
        run={
            "name": "t-replay",
            "probe": "independent",
            "steps": STEPS,
            "prompts_per_step": 4,
            "group_size": 4,
            "eval_size": 8,
            "checkpoint_every": STEPS,
        },
        task={"arithmetic": {"max_operand": 4, "size": 64}},
        tiny=TINY64,
        max_new_tokens=5,
        grpo={"lr": 1e-3},
    )


@pytest.fixture(scope="module")
def finished_run(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import os

    from mrl_actors.run.runner import run_once
    from mrl_actors.spec import parse_spec

    root = tmp_path_factory.mktemp("replay")
    old = os.environ.get("MRL_CACHE_DIR")
    os.environ["MRL_CACHE_DIR"] = str(root / "cache")
    try:
        text = _spec(models_dir)
        anyio.run(lambda: run_once(parse_spec(text), text, root / "run"))
    finally:
        if old is None:
            os.environ.pop("MRL_CACHE_DIR", None)
        else:
            os.environ["MRL_CACHE_DIR"] = old
    return root / "run"


def _admin(info: Any) -> Any:
    """The server's admin credentials: forging needs them (a policy's user may not)."""
    return info.client()


async def _with_admin_log(run_dir: Path, fn: Any) -> Any:
    """Run `fn(log)` on the run's log with the server's admin credentials."""
    from mrl_actors.see import EventLog
    from mrl_actors.see.connection import connect
    from mrl_actors.see.server import open_run_dir

    async with open_run_dir(run_dir) as info:
        nc = await connect(_admin(info))
        try:
            return await fn(await EventLog.open(nc, "t-replay", create=False))
        finally:
            await nc.close()


def test_exact_replay_reads_the_log_from_a_server_url(finished_run: Path) -> None:
    """`--server URL`: the log comes from a running server (credentials from MRL_NATS_*)."""
    import os
    import sys

    from mrl_actors.see.server import open_run_dir

    async def check() -> Any:
        async with open_run_dir(finished_run) as info:
            admin = _admin(info)
            env = {**os.environ, "MRL_NATS_USER": admin.user, "MRL_NATS_PASSWORD": admin.password}
            cmd = [sys.executable, "-m", "mrl_actors.cli", "replay", str(finished_run)]
            return await anyio.run_process(
                [*cmd, "--server", info.url, "--policy", "gpt2"], env=env, check=False
            )

    done = anyio.run(check)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert f"gpt2: {STEPS} steps replayed, every weights sha256" in done.stdout.decode()


def test_exact_replay_verifies_every_step_of_every_policy(
    finished_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", str(finished_run)]) == 0
    out = capsys.readouterr().out
    assert f"gpt2: {STEPS} steps replayed, every weights sha256 matches the log" in out
    assert f"llama: {STEPS} steps replayed" in out


def test_counterfactual_replay_writes_its_report(
    finished_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", str(finished_run), "--probe", "sgt", "--policy", "llama"]) == 0
    page = json.loads((finished_run / "counterfactual-sgt.json").read_text())
    (r,) = page["policies"]
    assert (r["policy"], r["logged_probe"], r["probe"]) == ("llama", "independent", "sgt")
    assert [s["step"] for s in r["steps"]] == [1.0, 2.0]
    for s in r["steps"]:
        assert s["distance"] >= 0 and s["grad_norm"] >= 0 and s["logged_grad_norm"] >= 0
    assert set(r["final"]["logged"]) >= {"eval_accuracy", "eval_pass1", "eval_pass8"}
    html = (finished_run / "counterfactual-sgt.html").read_text()
    assert html.count("<svg") == 3 and "L2 distance" in html
    # the same probe as logged, with the peers' events it never read: independent ignores them,
    # so the counterfactual is the logged run itself, weight for weight
    assert main(["replay", str(finished_run), "--probe", "independent"]) == 0
    same = json.loads((finished_run / "counterfactual-independent.json").read_text())
    assert all(s["distance"] == 0.0 for r in same["policies"] for s in r["steps"])
    assert "report:" in capsys.readouterr().out


def test_replay_fails_naming_the_step_of_a_forged_learner_event(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    forged_dir = tmp_path / "forged"
    shutil.copytree(finished_run, forged_dir, ignore=shutil.ignore_patterns("server.json"))

    async def forge(log: Any) -> None:
        from mrl_actors.actors.replay import learner_steps

        first = (await learner_steps(log, "gpt2"))[0]
        await log.append(
            LearnerStepCompleted(
                run=first.run,
                source="gpt2",
                event_id=event_id("learner", first.run, "gpt2", "forged"),
                policy="gpt2",
                step=STEPS + 1,
                probe=first.probe,
                consumed=first.consumed,  # the same inputs again: other weights than logged
                weights_sha256="0" * 64,
                metrics={},
            )
        )

    anyio.run(_with_admin_log, forged_dir, forge)
    assert main(["replay", str(forged_dir), "--policy", "gpt2"]) == 2
    err = capsys.readouterr().err
    assert "\nmrl: error: gpt2 step 3: replayed weights" in f"\n{err}", err


def test_replay_fails_at_step_one_when_the_start_checkpoint_was_altered(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    altered = tmp_path / "altered"
    shutil.copytree(finished_run, altered, ignore=shutil.ignore_patterns("server.json"))
    path = altered / "checkpoints" / "llama" / "step-0" / "model.safetensors"
    tensors = load_file(str(path))
    name = sorted(tensors)[-1]
    tensors[name] = tensors[name] + torch.full_like(tensors[name], 1e-3)
    save_file(tensors, str(path), metadata={"format": "pt"})
    assert main(["replay", str(altered), "--policy", "llama"]) == 2
    err = capsys.readouterr().err
    assert "\nmrl: error: llama step 1: replayed weights" in f"\n{err}", err
    assert main(["replay", str(altered), "--policy", "llama", "--no-verify"]) == 0
    assert main(["replay", str(altered), "--policy", "nope"]) == 2
    assert "mrl: error: --policy 'nope'" in capsys.readouterr().err
