"""Mutual RL end to end on a real nats-server with tiny real models (GPT-2 and Llama-2 families).

One short two-policy run per probe is shared by the tests of this module: what each probe read
from its peers; that a peer's success on a prompt the receiver failed (built, not sampled) crosses
the THL into SGT's and PRP's learner steps, PRP's weights bounded; that replaying the logged
inputs gives the final weights bitwise; that a killed run resumes without applying an event twice;
that a stopped `--compare` sub-run resumes as itself, and a run `--out` at any depth resumes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from helpers.runs import kill_run, learner_steps, run_events
from helpers.specs import pair_spec

from mrl_actors.events import (
    Completion,
    Event,
    LearnerStepCompleted,
    RolloutGroupCompleted,
    SuccessVerified,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEPS = 3


def _run(models_dir: Path, out: Path, probe: str) -> dict[str, Any]:
    from mrl_actors.run.runner import run_once
    from mrl_actors.spec import parse_spec

    text = pair_spec(models_dir, f"t-{probe}", probe)
    spec = parse_spec(text)
    return anyio.run(lambda: run_once(spec, text, out))


@pytest.fixture(scope="module")
def runs(
    models_dir: Path, model_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for probe in ("independent", "xgrpo", "prp", "sgt"):
        out[probe] = (root / probe, _run(models_dir, root / probe, probe))
    return out


def _total(summary: dict[str, Any], key: str) -> float:
    return sum(v for p in summary["policies"].values() for _, v in p["series"].get(key, []))


@pytest.mark.parametrize("probe", ["independent", "xgrpo", "prp", "sgt"])
def test_every_probe_trains_both_policies_and_writes_the_report(
    runs: dict[str, tuple[Path, dict[str, Any]]], probe: str
) -> None:
    run_dir, summary = runs[probe]
    for name in ("gpt2", "llama"):
        p = summary["policies"][name]
        assert p["steps"] == STEPS
        assert p["final_accuracy"] is not None and p["initial_accuracy"] is not None
        assert p["probe"] == probe
    assert summary["run"]["status"] == "completed"
    assert json.loads((run_dir / "summary.json").read_text()) == json.loads(json.dumps(summary))
    page = (run_dir / "report.html").read_text()
    assert page.count("<svg") >= 2 and "gpt2" in page and "llama" in page
    assert (run_dir / "checkpoints" / "gpt2" / f"step-{STEPS}" / "model.safetensors").exists()
    offered = _total(summary, "peer_events_offered")
    if probe == "independent":
        assert offered == 0
    elif probe in ("prp", "xgrpo"):  # every peer group is offered; SGT's depend on sampling
        assert _total(summary, "peer_events_used") > 0  # peers' events reached the learner


def _peer_completion(vocab: Any, text: str, *, success: bool) -> Completion:
    """`text` as the peer would have sampled it: its own tokens, then its EOS."""
    import numpy as np

    from mrl_actors.events import pack_f32, pack_i32

    ids = [*vocab.continuation.encode(text, add_special_tokens=False).ids, vocab.eos_id]
    return Completion(
        token_ids=pack_i32(np.asarray(ids)),
        logprobs=pack_f32(np.full(len(ids), -0.5)),
        text=text,
        finish_reason="eos",
        reward=1.0 if success else 0.0,
        success=success,
    )


def _failed_group(rt: Any, item: Any, g: int) -> RolloutGroupCompleted:
    """The receiver's own group on `item`, every completion wrong."""
    from mrl_actors.events import event_id, pack_i32

    wrong = f" {int(item.answer) + 1}\n"
    return RolloutGroupCompleted(
        run=rt.spec.run.name,
        source=rt.name,
        event_id=event_id("rollout", rt.spec.run.name, rt.name, 0, item.prompt_id),
        policy=rt.name,
        policy_version=0,
        prompt_id=item.prompt_id,
        prompt_text=rt.task.prompt_text(item),
        prompt_token_ids=pack_i32(rt.render(item)),
        completions=[_peer_completion(rt.vocab, wrong, success=False)] * g,
    )


@pytest.mark.parametrize(("receiver", "peer"), [("gpt2", "llama"), ("llama", "gpt2")])
def test_sgt_and_prp_carry_a_peer_success_through_the_thl_into_a_learner_step(
    runs: dict[str, tuple[Path, dict[str, Any]]], receiver: str, peer: str
) -> None:
    """The situation is built, not sampled: the receiver failed a prompt its peer solved.

    The receiver is the run's real runtime (its step-0 weights, both real tokenizers), so the
    peer's success crosses GPT-2 <-> Llama-2 tokens through the THL and enters a learner step.
    """
    from mrl_actors.actors.runtime import build_runtime, checkpoint_dir
    from mrl_actors.events import event_id
    from mrl_actors.probes import PromptInputs, Seen
    from mrl_actors.spec import load_spec
    from mrl_actors.tasks import make_task

    run_dir, _ = runs["prp"]
    spec, _ = load_spec(run_dir / "spec.toml")
    task = make_task(spec.task)
    policy = next(p for p in spec.policies if p.name == receiver)
    item = task.items(spec.run.seed)[0]
    answer = task.target_text(item)  # " 7\n": one GPT-2 token, two Llama-2 tokens

    for probe in ("sgt", "prp"):
        rt = build_runtime(spec, policy, task, weights_dir=checkpoint_dir(run_dir, receiver, 0))
        own = Seen(1, _failed_group(rt, item, spec.run.group_size))
        success = _peer_completion(rt.peer_vocabs[peer], answer, success=True)
        assert task.verify(success.text, item).success
        if probe == "sgt":
            ev: Any = SuccessVerified(
                run=spec.run.name,
                source=peer,
                event_id=event_id("success", spec.run.name, peer, 0, item.prompt_id, 0),
                policy=peer,
                policy_version=0,
                prompt_id=item.prompt_id,
                prompt_text=task.prompt_text(item),
                completion_index=0,
                completion=success,
            )
            inputs = PromptInputs(own=own, peer_successes=[Seen(2, ev)])
        else:
            wrong = own.event.completions[0].text
            group = [success, _peer_completion(rt.peer_vocabs[peer], wrong, success=False)]
            ev = msgspec.structs.replace(
                own.event,
                source=peer,
                policy=peer,
                event_id=event_id("rollout", spec.run.name, peer, 0, item.prompt_id),
                prompt_token_ids=b"",
                completions=group,
            )
            inputs = PromptInputs(own=own, peer_rollouts=[Seen(2, ev)])

        before = rt.learner.state_dict_sha256()
        batch, metrics = rt.learn(probe, [inputs], version=0)

        assert rt.learner.state_dict_sha256() != before, probe  # the step took them
        assert metrics["off_policy_samples"] == len(batch.off_policy) > 0, probe
        assert metrics["thl_exact_share"] == 1.0, probe  # the peer's bytes, exactly
        assert 0.0 < metrics["thl_nm_byte_share"] <= 1.0, probe  # " 7": 1 token vs 2 tokens
        assert 0.0 <= metrics["thl_one_to_one_share"] < 1.0, probe
        sample = batch.off_policy[0]  # the success, in the receiver's own tokens
        assert int(sample.completion_ids[-1]) == rt.vocab.eos_id, probe
        assert rt.vocab.ids_to_bytes(sample.completion_ids[:-1]) == answer.encode(), probe
        if probe == "sgt":
            assert metrics["prompts_rescued_share"] == 1.0
            # the default loss is a fixed-weight NLL of the success; the failed group keeps its
            # plain GRPO advantages (all zero: every reward is 0)
            assert batch.off_policy_loss is not None and batch.off_policy_loss.kind == "nll"
            assert sample.advantage > 0 and all(s.advantage == 0 for s in batch.on_policy)
        else:  # [probes.prp] cap = 1.0 by default
            assert len(batch.off_policy) == 2
            assert 0.0 < metrics["is_off_applied_max"] <= 1.0 + 1e-6


def test_replaying_the_logged_inputs_gives_the_final_weights_bitwise(
    runs: dict[str, tuple[Path, dict[str, Any]]],
) -> None:
    from mrl_actors.actors.replay import replay
    from mrl_actors.actors.runtime import build_runtime, checkpoint_dir
    from mrl_actors.models.load import load_model, weights_sha256
    from mrl_actors.spec import load_spec
    from mrl_actors.tasks import make_task

    run_dir, _ = runs["prp"]
    spec, _ = load_spec(run_dir / "spec.toml")
    events = anyio.run(run_events, run_dir, spec.run.name)

    async def replay_all(policy: str) -> str:
        from mrl_actors.see.access import open_log

        p = next(x for x in spec.policies if x.name == policy)
        rt = build_runtime(
            spec, p, make_task(spec.task), weights_dir=checkpoint_dir(run_dir, policy, 0)
        )
        async with open_log(run_dir=run_dir, run=spec.run.name) as log:
            assert await replay(log, rt) == STEPS  # checks every step's checksum on the way
        return rt.learner.state_dict_sha256()

    for policy in ("gpt2", "llama"):
        logged = learner_steps(events, policy)[-1].weights_sha256
        final, _ = load_model(checkpoint_dir(run_dir, policy, STEPS))
        assert weights_sha256(final) == logged
        assert anyio.run(replay_all, policy) == logged


def test_a_killed_run_resumes_and_applies_no_event_twice(
    models_dir: Path, model_cache: Path, tmp_path: Path
) -> None:
    steps = 4
    spec = tmp_path / "spec.toml"
    spec.write_text(pair_spec(models_dir, "t-resume", "sgt", steps=steps))
    run_dir = tmp_path / "run"
    env = {**os.environ, "MRL_CACHE_DIR": str(model_cache)}
    cmd = [sys.executable, "-m", "mrl_actors.cli", "run", "--no-progress"]
    proc = subprocess.Popen([*cmd, str(spec), "--out", str(run_dir)], env=env)
    try:
        # kill it as soon as a learner step of each policy is on disk (mid-run, mid-step)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if all((run_dir / "checkpoints" / p / "step-0").exists() for p in ("gpt2", "llama")):
                events = anyio.run(run_events, run_dir, "t-resume")
                if all(len(learner_steps(events, p)) >= 1 for p in ("gpt2", "llama")):
                    break
            time.sleep(0.5)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        before = {
            p: len(learner_steps(anyio.run(run_events, run_dir, "t-resume"), p))
            for p in ("gpt2", "llama")
        }
        assert all(0 < n < steps for n in before.values())

        resumed = subprocess.run([*cmd, "--resume", str(run_dir)], env=env, timeout=300)
        assert resumed.returncode == 0
    finally:
        kill_run(run_dir, proc)

    events = anyio.run(run_events, run_dir, "t-resume")
    for policy in ("gpt2", "llama"):
        taken = learner_steps(events, policy)
        assert [e.step for e in taken] == list(range(1, steps + 1))  # same number of steps
        seqs = [c.seq for e in taken for c in e.consumed]
        assert len(seqs) == len(set(seqs))  # no event applied twice
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["run"]["status"] == "completed"


def test_a_malformed_spec_is_refused_with_the_field_named(tmp_path: Path, models_dir: Path) -> None:
    bad = pair_spec(models_dir, "t-bad", "sgt").replace("lr = 0.001", 'lr = "fast"', 1)
    path = tmp_path / "bad.toml"
    path.write_text(bad)
    out = subprocess.run(
        [sys.executable, "-m", "mrl_actors.cli", "run", str(path), "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "policies[0].grpo.lr" in out.stderr and str(path) in out.stderr


def test_mrl_node_hosts_its_policies_against_a_server_by_url(
    models_dir: Path, model_cache: Path, tmp_path: Path
) -> None:
    """The multi-host path: a node joins a live server by URL as its own user (from the
    environment), with the rights `auth.node_permissions` gives it; the admin made the stream."""
    from mrl_actors.see.auth import node_permissions
    from mrl_actors.see.server import EmbeddedServer

    spec = tmp_path / "spec.toml"
    spec.write_text(pair_spec(models_dir, "t-node", "independent", steps=2))
    perms = node_permissions("t-node", "h1", ["llama"], ["gpt2", "llama"], user="node-h1")

    async def serve_and_read() -> list[Event]:
        from mrl_actors.see.access import open_log

        store = tmp_path / "nats"
        async with EmbeddedServer(store, extra_users={"node-h1": perms}) as srv:
            async with open_log(
                info=srv.info(), run="t-node", create=True, policies=["gpt2", "llama"]
            ):
                pass
            env = {**os.environ, "MRL_CACHE_DIR": str(model_cache), "MRL_NATS_USER": "node-h1"}
            env["MRL_NATS_PASSWORD"] = srv.users["node-h1"]
            cmd = [sys.executable, "-m", "mrl_actors.cli.mrl_node", str(spec), "--node", "h1"]
            cmd += ["--run-dir", str(tmp_path / "node"), "--server", srv.url, "--policies", "llama"]
            proc = await anyio.run_process(cmd, env=env, check=False)
            assert proc.returncode == 0, proc.stderr.decode()[-2000:]
            async with open_log(info=srv.info(), run="t-node") as log:
                return [rec.event async for rec in log.read(start_seq=1)]

    events = anyio.run(serve_and_read)
    assert [e.step for e in learner_steps(events, "llama")] == [1, 2]
    assert learner_steps(events, "gpt2") == []  # not hosted by this node
    membership = [type(e).__name__ for e in events if e.KIND == "node"]
    assert [m for m in membership if m != "NodeHeartbeat"] == ["NodeJoined", "NodeLeft"]
    assert (tmp_path / "node" / "checkpoints" / "llama" / "step-2" / "model.safetensors").exists()


def test_compare_runs_every_probe_and_prints_the_table(
    models_dir: Path, model_cache: Path, tmp_path: Path
) -> None:
    spec = tmp_path / "spec.toml"
    # the spec says seed 1, `--seeds 0` overrides it (seed 0: the session's warm starts, cached)
    spec.write_text(pair_spec(models_dir, "t-cmp", "sgt", steps=1, seed=1))
    cmd = [sys.executable, "-m", "mrl_actors.cli", "run", str(spec), "--compare", "--seeds", "0"]
    out = subprocess.run(
        [*cmd, "--out", str(tmp_path / "cmp"), "--no-progress"],
        env={**os.environ, "MRL_CACHE_DIR": str(model_cache)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert table in out.stdout
    for probe in ("independent", "prp", "xgrpo", "sgt"):
        summary = json.loads((tmp_path / "cmp" / f"{probe}-s0" / "summary.json").read_text())
        assert summary["run"]["probe"] == probe and summary["run"]["seed"] == 0
        rows = sum(f"| {probe} |" in line for line in table.splitlines())
        # acc and pass@1 over seeds; then each probe - independent paired by seed (acc, pass@1,
        # pass@8)
        assert rows == (2 if probe == "independent" else 5), (probe, table)
    assert "| probe | gpt2 | llama | average | seeds |" in table
    assert "| probe − independent | gpt2 | llama | average | paired seeds |" in table
    paired = json.loads((tmp_path / "cmp" / "compare_paired.json").read_text())
    assert {(d["probe"], d["metric"]) for d in paired} == {
        (p, m)
        for p in ("prp", "xgrpo", "sgt")
        for m in ("eval_accuracy", "eval_pass1", "eval_pass8")
    }
    assert (tmp_path / "cmp" / "compare.html").exists()


def _learner_probes(events: list[Event]) -> set[str]:
    return {e.probe for e in events if isinstance(e, LearnerStepCompleted)}


def test_a_stopped_compare_sub_run_resumes_under_its_own_probe_seed_and_steps(
    models_dir: Path, model_cache: Path, tmp_path: Path
) -> None:
    """The base spec says sgt, seed 1, 3 steps; the sub-run is xgrpo, seed 0, 2 steps."""
    from mrl_actors.run.runner import compare
    from mrl_actors.spec import parse_spec

    text = pair_spec(models_dir, "t-cr", "sgt", steps=3, seed=1)
    base = parse_spec(text)
    spec = msgspec.structs.replace(base, run=msgspec.structs.replace(base.run, steps=2))  # --steps
    out = tmp_path / "cmp"
    anyio.run(lambda: compare(spec, text, out, seeds=[0], probes=["xgrpo"], stop_after=1))
    sub = out / "xgrpo-s0"
    name = "t-cr-xgrpo-s0"
    events = anyio.run(run_events, sub, name)
    assert [len(learner_steps(events, p)) for p in ("gpt2", "llama")] == [1, 1]

    resumed = subprocess.run(
        [sys.executable, "-m", "mrl_actors.cli", "run", "--no-progress", "--resume", str(sub)],
        env={**os.environ, "MRL_CACHE_DIR": str(model_cache)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    events = anyio.run(run_events, sub, name)
    for policy in ("gpt2", "llama"):
        assert [e.step for e in learner_steps(events, policy)] == [1, 2]
    assert _learner_probes(events) == {"xgrpo"}
    summary = json.loads((sub / "summary.json").read_text())
    assert summary["run"]["status"] == "completed"
    assert summary["run"]["probe"] == "xgrpo" and summary["run"]["seed"] == 0


def test_a_run_three_directories_deep_with_relative_model_paths_resumes(
    models_dir: Path, model_cache: Path, tmp_path: Path
) -> None:
    """Model paths relative to the spec file; the run directory at another depth entirely."""
    spec = tmp_path / "specs" / "spec.toml"
    spec.parent.mkdir()
    spec.write_text(pair_spec(os.path.relpath(models_dir, spec.parent), "t-deep", "prp", steps=2))
    run_dir = tmp_path / "a" / "b" / "c"
    run_dir.parent.mkdir(parents=True)
    env = {**os.environ, "MRL_CACHE_DIR": str(model_cache)}
    cmd = [sys.executable, "-m", "mrl_actors.cli", "run", "--no-progress"]
    first = subprocess.run(
        [*cmd, str(spec), "--out", str(run_dir), "--stop-after", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path / "a",  # neither the spec's directory nor the run's
    )
    assert first.returncode == 0, first.stderr[-2000:]
    resumed = subprocess.run(
        [*cmd, "--resume", str(run_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=run_dir,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    events = anyio.run(run_events, run_dir, "t-deep")
    for policy in ("gpt2", "llama"):
        assert [e.step for e in learner_steps(events, policy)] == [1, 2]
    assert json.loads((run_dir / "summary.json").read_text())["run"]["status"] == "completed"
