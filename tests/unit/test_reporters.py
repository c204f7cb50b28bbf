"""`[run] report_to` and `mrl report --to`: a run's events folded into tracking backends
(`mrl_actors.report.reporters`), each read back with its own reader, offline.

Events are built here, so the scalars are known: each policy's learner steps, the step-0
evaluation in its first step. A finished real run goes through the same fold in
tests/integration/test_report_to.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.reporting import as_logged, expected, need, read_back

from mrl_actors.errors import ConfigError
from mrl_actors.events import (
    ConsumedEvent,
    Event,
    LearnerStepCompleted,
    PolicyRegistered,
    RunFinished,
    RunStarted,
    event_id,
)
from mrl_actors.report import reporters
from mrl_actors.report.reporters import LogReport, check_installed, open_reporter
from mrl_actors.report.tensorboard import spec_hparams
from mrl_actors.spec import parse_spec

SPEC = """[run]
name = "r"
steps = 3
probe = "sgt"
[[policies]]
name = "gpt2"
model = "builtin:gpt2-bpe"
tiny = { hidden_size = 16, layers = 1, heads = 2 }
[policies.grpo]
lr = 0.0005
[[policies]]
name = "llama"
model = "builtin:llama-sp"
tiny = { hidden_size = 16, layers = 1, heads = 2 }
"""


def _step(name: str, step: int, metrics: dict[str, float], source: str | None = None) -> Event:
    return LearnerStepCompleted(
        run="r",
        source=source or name,
        event_id=event_id("learner", "r", name, step),
        policy=name,
        step=step,
        probe="sgt",
        consumed=[ConsumedEvent(step, "e")],
        weights_sha256="w",
        metrics=metrics,
    )


def _events() -> list[Event]:
    out: list[Event] = [
        RunStarted(run="r", source="mrl", event_id="s", spec_toml=SPEC, seed=0, code_version="x")
    ]
    for i, name in enumerate(("gpt2", "llama")):
        out.append(
            PolicyRegistered(
                run="r",
                source=name,
                event_id=f"p-{name}",
                policy=name,
                family=name,
                model_path="m",
                tokenizer_fingerprint="f",
                probe="sgt",
            )
        )
        for step in (1, 2, 3):
            metrics = {
                "loss": 0.5 / step + i,
                "reward_mean": 0.25 * step,
                "kl": 0.01 * step,
                "grad_norm": 1.5,
                "tokens": 96.0,
                "step_time_s": 2.0 * step,
            }
            if step == 1:
                metrics["eval_accuracy_initial"] = 0.125 + i
            if step == 3:
                metrics["eval_accuracy"] = 0.375 + i
            out.append(_step(name, step, metrics))
    out.append(RunFinished(run="r", source="mrl", event_id="f", status="completed"))
    return out


def _send(backends: list[str], out: Path, events: list[Event]) -> None:
    spec = parse_spec(SPEC)
    report = LogReport(
        [open_reporter(b, out, "r") for b in backends],
        spec_of=lambda _: spec,
        hparams=spec_hparams,
    )
    for e in events:
        report.feed(e)
    report.finish()


@pytest.mark.parametrize("backend", ["tensorboard", "wandb", "mlflow", "trackio"])
def test_every_policy_s_scalars_and_hyperparameters_are_read_back(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need(backend)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("TRACKIO_PROJECT", f"mrl-test-{tmp_path.name}")
    events = _events()
    # a redelivered step and a step forged from another subject change nothing
    events.insert(5, events[4])
    events.insert(6, _step("llama", 2, {"loss": 99.0}, source="gpt2"))
    _send([backend], tmp_path, events)
    spec = parse_spec(SPEC)
    for name in ("gpt2", "llama"):
        hparams, scalars = read_back(backend, tmp_path, "r", name)
        want = expected(_events(), name)
        assert scalars == pytest.approx(want, rel=1e-6), name
        assert ("eval_accuracy", 0) in scalars and ("tokens_per_s", 2) in scalars
        assert scalars[("tokens_per_s", 2)] == pytest.approx(24.0)
        for key, value in spec_hparams(spec, name).items():
            assert hparams[key] == as_logged(backend, value), (name, key)
    assert read_back(backend, tmp_path, "r", "gpt2")[0]["grpo.lr"] == as_logged(backend, 0.0005)


def test_a_failing_backend_is_dropped_in_a_live_run_and_raised_after_the_fact(
    tmp_path: Path,
) -> None:
    (tmp_path / "tensorboard" / "gpt2").mkdir(parents=True)
    (tmp_path / "tensorboard" / "gpt2" / "events.out.tfevents.1.h").write_bytes(b"")
    with pytest.raises(ConfigError, match="already holds TensorBoard event files"):
        _send(["tensorboard"], tmp_path, _events())
    report = LogReport([open_reporter("tensorboard", tmp_path, "r")], keep_going=True)
    for e in _events():
        report.feed(e)  # the error is logged, the backend dropped, the fold goes on
    report.finish()
    assert report.reporters == []


def test_report_to_is_checked_like_every_field() -> None:
    def spec(line: str) -> str:
        return SPEC.replace('probe = "sgt"\n', f'probe = "sgt"\nreport_to = {line}\n')

    assert parse_spec(spec('["wandb", "mlflow"]')).run.report_to == ("wandb", "mlflow")
    unknown = "run.report_to: unknown backend 'wandbb'; the backends are tensorboard, wandb, "
    with pytest.raises(ConfigError, match=unknown + "mlflow, trackio"):
        parse_spec(spec('["wandbb"]'))
    with pytest.raises(ConfigError, match="named twice"):
        parse_spec(spec('["mlflow", "mlflow"]'))


def test_set_report_to_from_the_command_line(tmp_path: Path) -> None:
    from mrl_actors.cli.compose import compose_spec

    path = tmp_path / "spec.toml"
    path.write_text(SPEC)
    spec, _ = compose_spec([path], ['run.report_to=["wandb","trackio"]'])
    assert spec.run.report_to == ("wandb", "trackio")
    with pytest.raises(ConfigError, match=r"--set run\.report_to: .*unknown backend 'nope'"):
        compose_spec([path], ['run.report_to=["nope"]'])


def test_a_backend_not_installed_names_the_field_and_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entry = ("trackio_backend", "mrl_no_such_package", "mrl-actors[trackio]")
    monkeypatch.setitem(reporters.BACKENDS, "trackio", entry)
    with pytest.raises(ConfigError) as err:
        check_installed(["tensorboard", "trackio"])
    assert str(err.value) == (
        "run.report_to = ['trackio'] needs the mrl_no_such_package package, which is not "
        "installed: pip install 'mrl-actors[trackio]'"
    )


def test_mrl_report_to_names_a_bad_backend_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mrl_actors.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["report", str(tmp_path), "--to", "wandb,tensorbord"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "mrl: error: report: argument --to: unknown backend 'tensorbord'; the backends are "
        "tensorboard, wandb, mlflow, trackio\n"
    )
