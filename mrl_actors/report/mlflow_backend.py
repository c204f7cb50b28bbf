"""MLflow as a `Reporter` (`report_to = ["mlflow"]`; `pip install 'mrl-actors[mlflow]'`).

One MLflow run per policy, named `<run>-<policy>` and tagged `mrl.run` / `mrl.policy`, in the
experiment `MLFLOW_EXPERIMENT_NAME` (default `mrl-actors`); its params are the policy's
hyperparameters, its metrics the learner steps' scalars at their step (the step-0 evaluation
at step 0).

Where: `MLFLOW_TRACKING_URI` when set (a tracking server, a database); else a file store in
`<out>/mlruns`, which `mlflow ui --backend-store-uri <out>/mlruns` shows. MLflow 3 keeps the
file store in maintenance mode and refuses it unless `MLFLOW_ALLOW_FILE_STORE` is true: that
is set for this process when the default local store is the one used (the client package
`mlflow-skinny` has no database store).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mrl_actors.report.tensorboard import HParam

_BATCH = 100  # MLflow takes at most 100 params (and 1000 metrics) per log_batch


def tracking_uri(out: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or (out / "mlruns").resolve().as_uri()


class Reporter:
    def __init__(self, out: Path, run: str) -> None:
        from mlflow.tracking import MlflowClient

        uri = tracking_uri(out)
        if uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "mrl-actors")
        found = self.client.get_experiment_by_name(name)
        self.experiment = found.experiment_id if found else self.client.create_experiment(name)
        self.run = run
        self.ids: dict[str, str] = {}

    def start(self, policy: str, hparams: Mapping[str, HParam]) -> None:
        from mlflow.entities import Param

        created = self.client.create_run(
            self.experiment,
            run_name=f"{self.run}-{policy}",
            tags={"mrl.run": self.run, "mrl.policy": policy},
        )
        self.ids[policy] = created.info.run_id
        params = [Param(k, str(v)) for k, v in hparams.items()]
        for i in range(0, len(params), _BATCH):
            self.client.log_batch(created.info.run_id, params=params[i : i + _BATCH])

    def scalars(self, policy: str, step: int, values: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics: list[Any] = [Metric(k, float(v), now, step) for k, v in values.items()]
        self.client.log_batch(self.ids[policy], metrics=metrics)

    def finish(self) -> None:
        for run_id in self.ids.values():
            self.client.set_terminated(run_id)
        self.ids = {}
