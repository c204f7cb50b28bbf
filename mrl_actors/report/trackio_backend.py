"""trackio as a `Reporter` (`report_to = ["trackio"]`; `pip install 'mrl-actors[trackio]'`).

One trackio run per policy, named `<run>-<policy>` and grouped by the mrl run, in the project
`TRACKIO_PROJECT` (default `mrl-actors`); its config is the policy's hyperparameters, its
metrics the learner steps' scalars at their step (the step-0 evaluation at step 0).

Local: trackio keeps a project in a SQLite file under `TRACKIO_DIR` (default
`$HF_HOME/trackio`), which `trackio show` serves as a dashboard; nothing goes to a Space or a
server unless trackio's own variables (`TRACKIO_SPACE_ID`, `TRACKIO_SERVER_URL`) say so. No
dashboard is launched and no CPU/GPU statistics are recorded. `out` is not used: the store is
trackio's, where its dashboard looks.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mrl_actors.report.tensorboard import HParam


def project() -> str:
    return os.environ.get("TRACKIO_PROJECT", "mrl-actors")


class Reporter:
    def __init__(self, out: Path, run: str) -> None:
        import trackio

        self.trackio = trackio
        self.run = run
        self.runs: dict[str, Any] = {}

    def start(self, policy: str, hparams: Mapping[str, HParam]) -> None:
        with contextlib.redirect_stdout(io.StringIO()):  # trackio prints where it logs
            self.runs[policy] = self.trackio.init(
                project=project(),
                name=f"{self.run}-{policy}",
                group=self.run,
                config={"mrl.run": self.run, "mrl.policy": policy, **hparams},
                embed=False,
                auto_log_cpu=False,
                auto_log_gpu=False,
            )

    def scalars(self, policy: str, step: int, values: Mapping[str, float]) -> None:
        self.runs[policy].log(dict(values), step=step)

    def finish(self) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            for run in self.runs.values():
                run.finish()
        self.runs = {}
