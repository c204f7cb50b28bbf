"""What a tracking backend holds of a run, read back with that tool's own reader, and what it
should hold, from the log: a policy's hyperparameters and its scalars by (key, step)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from mrl_actors.events import Event, LearnerStepCompleted
from mrl_actors.report.scalars import step_scalars

Scalars = dict[tuple[str, int], float]

# backend -> the package its reader needs
PACKAGES = {
    "tensorboard": "tensorboardX",
    "wandb": "wandb",
    "mlflow": "mlflow",
    "trackio": "trackio",
}


def need(backend: str) -> None:
    """Skip, saying why, where the backend's package is not installed (an optional extra)."""
    if importlib.util.find_spec(PACKAGES[backend]) is None:
        why = f"{PACKAGES[backend]} is not installed (pip install 'mrl-actors[{backend}]')"
        if backend == "trackio":
            why += ": not in dev, trackio 0.43 needs pillow<13 and constraints.txt pins 13.0.0"
        pytest.skip(why)


def expected(events: Iterable[Event], policy: str) -> Scalars:
    """The policy's scalars as every view has them (`step_scalars` of each learner step)."""
    out: Scalars = {}
    for e in events:
        if isinstance(e, LearnerStepCompleted) and e.policy == policy == e.source:
            for at, values in step_scalars(e.step, e.metrics):
                out.update({(k, at): v for k, v in values.items()})
    return out


def read_back(backend: str, out: Path, run: str, policy: str) -> tuple[dict[str, Any], Scalars]:
    """(hyperparameters, scalars) of `run`'s `policy` in what `backend` wrote under `out`."""
    if backend == "tensorboard":
        from mrl_actors.report.tensorboard import board_dir, read_hparams, read_scalars

        return dict(read_hparams(board_dir(out, policy))), read_scalars(board_dir(out, policy))
    if backend == "wandb":
        from mrl_actors.report.wandb_backend import read_offline

        runs = read_offline(out / "wandb")
        got = runs[f"{run}-{policy}"]
        assert got["group"] == run
        return got["config"], got["history"]
    if backend == "mlflow":
        return _mlflow(out, run, policy)
    if backend == "trackio":
        from trackio.sqlite_storage import SQLiteStorage

        from mrl_actors.report.trackio_backend import project

        name = f"{run}-{policy}"
        config = SQLiteStorage.get_run_config(project(), name) or {}
        scalars: Scalars = {}
        for row in SQLiteStorage.get_logs(project(), name):
            step = int(row["step"])
            for k, v in row.items():
                if k not in ("step", "timestamp") and isinstance(v, int | float):
                    scalars[(k, step)] = float(v)
        return config, scalars
    raise AssertionError(backend)


def _mlflow(out: Path, run: str, policy: str) -> tuple[dict[str, Any], Scalars]:
    from mlflow.tracking import MlflowClient

    from mrl_actors.report.mlflow_backend import tracking_uri

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=tracking_uri(out))
    experiment = client.get_experiment_by_name("mrl-actors")
    assert experiment is not None
    (found,) = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`mrl.run` = '{run}' and tags.`mrl.policy` = '{policy}'",
    )
    assert found.info.run_name == f"{run}-{policy}" and found.info.status == "FINISHED"
    scalars = {
        (key, m.step): m.value
        for key in found.data.metrics
        for m in client.get_metric_history(found.info.run_id, key)
    }
    return dict(found.data.params), scalars


def as_logged(backend: str, value: Any) -> Any:
    """A hyperparameter as the backend keeps it: MLflow's params are strings."""
    return str(value) if backend == "mlflow" else value
