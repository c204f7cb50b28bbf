"""`[run] report_to` on a real run: the tracking backends follow the log while the actors write
it, and `mrl report RUN --to` sends the finished run again, afterwards; each backend is read
back offline with its own reader (TensorBoard's event files, W&B's offline run file, MLflow's
client on its file store, trackio's local SQLite store) and holds, for each policy and learner
step, the scalars of the log's `LearnerStepCompleted` (the step-0 evaluation at step 0), and
the effective spec as hyperparameters.

trackio's case is skipped, with the reason, where it is not installed (it is not in `dev`).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from helpers.reporting import as_logged, expected, need, read_back
from helpers.runs import run_events
from helpers.specs import TINY16, spec_toml

from mrl_actors.cli import main
from mrl_actors.events import Event, LearnerStepCompleted
from mrl_actors.report.summary import LEARNING_PLOTS
from mrl_actors.report.tensorboard import spec_hparams
from mrl_actors.spec import RunSpec, parse_spec

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEPS = 2
RUN = "t-report"
BACKENDS = ["tensorboard", "wandb", "mlflow", "trackio"]
ENV = ("WANDB_MODE", "MLFLOW_TRACKING_URI", "TRACKIO_DIR", "TRACKIO_PROJECT")


@pytest.fixture(scope="module")
def finished(
    models_dir: Path, model_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, RunSpec, list[Event]]]:
    """A two-policy run of two steps, reporting live to every installed backend."""
    from mrl_actors.run.runner import run_once

    root = tmp_path_factory.mktemp("report-to")
    old = {k: os.environ.get(k) for k in ENV}
    os.environ.update(
        WANDB_MODE="offline",
        TRACKIO_DIR=str(root / "trackio"),  # read when trackio is first imported: here
        TRACKIO_PROJECT=f"mrl-test-{root.name}",
    )
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    installed = [b for b in BACKENDS if b != "trackio" or importlib.util.find_spec("trackio")]
    text = spec_toml(
        models_dir,
        run={"name": RUN, "probe": "independent", "steps": STEPS, "report_to": installed},
        task={"arithmetic": {"max_operand": 4, "size": 32}},
        tiny=TINY16,
    )
    spec = parse_spec(text)
    try:
        anyio.run(lambda: run_once(spec, text, root / "run"))
        yield root / "run", spec, anyio.run(run_events, root / "run", RUN)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _check(backend: str, out: Path, spec: RunSpec, events: list[Event]) -> None:
    for name in ("gpt2", "llama"):
        hparams, scalars = read_back(backend, out, RUN, name)
        want = expected(events, name)
        steps = {at for _, at in want}
        assert steps == set(range(STEPS + 1)), steps  # the step-0 evaluation is step 0
        assert {"eval_accuracy", "loss", "reward_mean", "tokens_per_s"} <= {k for k, _ in want}
        assert scalars == pytest.approx(want, rel=1e-6), (backend, name)
        for key, value in spec_hparams(spec, name).items():
            assert hparams[key] == as_logged(backend, value), (backend, name, key)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_live_run_reports_every_policy_and_step(
    finished: tuple[Path, RunSpec, list[Event]], backend: str
) -> None:
    need(backend)
    run_dir, spec, events = finished
    assert sum(isinstance(e, LearnerStepCompleted) for e in events) == 2 * STEPS
    _check(backend, run_dir, spec, events)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mrl_report_to_sends_a_finished_run_afterwards(
    finished: tuple[Path, RunSpec, list[Event]], backend: str, tmp_path: Path
) -> None:
    need(backend)
    run_dir, spec, events = finished
    project = os.environ["TRACKIO_PROJECT"]
    os.environ["TRACKIO_PROJECT"] = f"{project}-again"  # trackio: a project of its own
    out = tmp_path / "again"
    try:
        assert main(["report", str(run_dir), "--to", backend, "--out", str(out)]) == 0
        _check(backend, out, spec, events)  # hyperparameters rebuilt from RunStarted's spec
    finally:
        os.environ["TRACKIO_PROJECT"] = project


def test_report_to_into_the_run_s_own_tensorboard_files_is_refused(
    finished: tuple[Path, RunSpec, list[Event]], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, _, _ = finished
    assert main(["report", str(run_dir), "--to", "tensorboard"]) == 2
    assert "already holds TensorBoard event files" in capsys.readouterr().err


def test_the_report_of_a_real_run_plots_every_learning_curve(
    finished: tuple[Path, RunSpec, list[Event]],
) -> None:
    """The learners' own metrics, not events built for the test, fill every plot (the
    screenshots in docs/images come from tools/screenshot_reports.py, which checks the same)."""
    run_dir, _, _ = finished
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    for key in LEARNING_PLOTS:
        figure = page.split(f'<figure data-metric="{key}">', 1)
        assert len(figure) == 2, key
        svg = figure[1].split("</figure>", 1)[0]
        assert svg.startswith("<svg") and "gpt2" in svg and "llama" in svg, key
