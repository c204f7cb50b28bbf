"""A run's learning curves sent to tracking tools (`[run] report_to`, `mrl report --to`).

The log is the record; a tracking tool is one more view of it. `LogReport` folds the run's
events into calls on a `Reporter`, the one protocol every backend implements:

    start(policy, hparams)         a run of the tool per policy, its hyperparameters the
                                   effective spec (`tensorboard.spec_hparams`)
    scalars(policy, step, values)  the learner step's scalars (`scalars.step_scalars`: the
                                   step-0 evaluation at step 0, tokens/s derived)
    finish()                       every policy's run of the tool closed, its files complete

Because it reads the log and nothing else, the same fold runs live beside `mrl run` (following
the log while the actors write it, then reading what is left after the last step) and after
the fact on any finished or stopped run (`mrl report RUN --to wandb`), on one machine or
through `--server`. A learner step counts only from its policy's own subject, once.

The backends (one module each, imported only when chosen): `tensorboard` (tensorboardX event
files, as `[run] tensorboard` writes them), `wandb` (offline unless `WANDB_MODE` says
otherwise), `mlflow` (`MLFLOW_TRACKING_URI`, else a file store under the output directory),
`trackio` (its local store, or `TRACKIO_DIR`). A backend whose package is missing is a
`ConfigError` naming `run.report_to` and the pip extra, raised before anything is created.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio
from anyio.abc import TaskStatus

from mrl_actors.errors import ConfigError
from mrl_actors.events import (
    Event,
    LearnerStepCompleted,
    PolicyRegistered,
    RunStarted,
    identity_error,
)
from mrl_actors.logs import get_logger
from mrl_actors.report.scalars import step_scalars
from mrl_actors.report.tensorboard import HParam

if TYPE_CHECKING:
    from mrl_actors.see.port import LogPort

logger = get_logger(__name__)

# backend name -> (module under mrl_actors.report, the package it needs, its pip extra)
BACKENDS: dict[str, tuple[str, str, str]] = {
    "tensorboard": ("tensorboard", "tensorboardX", "mrl-actors"),
    "wandb": ("wandb_backend", "wandb", "mrl-actors[wandb]"),
    "mlflow": ("mlflow_backend", "mlflow", "mrl-actors[mlflow]"),
    "trackio": ("trackio_backend", "trackio", "mrl-actors[trackio]"),
}

# the event kinds the fold reads
FOLLOWED_KINDS = ("run", "policy", "learner")


class Reporter(Protocol):
    """One tracking backend, holding a run of it per policy."""

    def start(self, policy: str, hparams: Mapping[str, HParam]) -> None: ...

    def scalars(self, policy: str, step: int, values: Mapping[str, float]) -> None: ...

    def finish(self) -> None: ...


def check_report_to(field: str, names: Sequence[str]) -> None:
    """`names` are backends, each once (a spec's `run.report_to`, `mrl report --to`)."""
    for name in names:
        if name not in BACKENDS:
            raise ConfigError(
                f"{field}: unknown backend {name!r}; the backends are {', '.join(BACKENDS)}"
            )
    if len(set(names)) != len(names):
        raise ConfigError(f"{field}: a backend is named twice: {list(names)}")


def check_installed(names: Iterable[str], field: str = "run.report_to") -> None:
    """Every named backend's package is importable (found, not imported: cheap)."""
    names = list(names)
    check_report_to(field, names)
    for name in names:
        _, package, extra = BACKENDS[name]
        if importlib.util.find_spec(package) is None:
            raise ConfigError(
                f"{field} = [{name!r}] needs the {package} package, which is not installed: "
                f"pip install '{extra}'"
            )


def open_reporter(name: str, out: Path, run: str) -> Reporter:
    """The backend `name`, writing what it keeps locally under `out`, its runs named by `run`."""
    check_installed([name])
    module = importlib.import_module(f"mrl_actors.report.{BACKENDS[name][0]}")
    reporter: Reporter = module.Reporter(out, run)
    return reporter


class LogReport:
    """The fold from a run's events to `Reporter` calls, fed one event at a time.

    `spec_of(started)` gives the run's effective spec from its `RunStarted` (or None when it
    cannot be had: the hyperparameters are then empty); `hparams(spec, policy)` flattens it.
    With `keep_going` (a live run), a backend that fails is logged and dropped, and the run
    and the other backends go on; without it (`mrl report --to`) its error is raised.
    """

    def __init__(
        self,
        reporters: Sequence[Reporter],
        *,
        spec_of: Callable[[RunStarted], Any] | None = None,
        hparams: Callable[[Any, str], Mapping[str, HParam]] | None = None,
        keep_going: bool = False,
    ) -> None:
        self.reporters = list(reporters)
        self.keep_going = keep_going
        self.spec_of = spec_of
        self.hparams = hparams
        self.spec: Any = None
        self.started: set[str] = set()
        self.steps: set[tuple[str, int]] = set()
        self.last_seq = 0  # the last log sequence fed (`feed_log` goes on after it)

    def feed(self, event: Event) -> None:
        if identity_error(event) is not None:  # a payload naming another writer: left out
            return
        if isinstance(event, RunStarted):
            if self.spec is None and self.spec_of is not None:
                self.spec = self.spec_of(event)
        elif isinstance(event, PolicyRegistered) and event.policy == event.source:
            self._start(event.policy)
        elif isinstance(event, LearnerStepCompleted) and event.policy == event.source:
            if (event.policy, event.step) in self.steps:
                return  # a redelivered step: once
            self.steps.add((event.policy, event.step))
            self._start(event.policy)
            for at, values in step_scalars(event.step, event.metrics):
                self._each("scalars", event.policy, at, values)

    def _each(self, method: str, *args: Any) -> None:
        """`method(*args)` of every backend."""
        for r in list(self.reporters):
            try:
                getattr(r, method)(*args)
            except Exception as exc:
                if not self.keep_going:
                    raise
                self.reporters.remove(r)
                logger.error("report.backend_failed", backend=type(r).__module__, error=repr(exc))

    def _start(self, policy: str) -> None:
        if policy in self.started:
            return
        self.started.add(policy)
        params: Mapping[str, HParam] = {}
        if self.spec is not None and self.hparams is not None:
            params = self.hparams(self.spec, policy)
        self._each("start", policy, params)

    def finish(self) -> None:
        self._each("finish")

    async def feed_log(
        self, log: LogPort, *, follow: bool = False, dead_letters: Any = None
    ) -> None:
        """Feed the log's events after the last one fed: to its end, or on with `follow`."""
        async for rec in log.read(
            start_seq=self.last_seq + 1,
            kinds=FOLLOWED_KINDS,
            follow=follow,
            dead_letters=dead_letters,
        ):
            # a backend's call may block (files, its service): off the event loop
            await anyio.to_thread.run_sync(self.feed, rec.event)
            self.last_seq = rec.seq

    async def follow(self, log: LogPort, *, task_status: TaskStatus[None]) -> None:
        """Feed the log live until cancelled (`mrl run`: beside the actors)."""
        task_status.started()
        await self.feed_log(log, follow=True)


async def report_live(
    log: LogPort, report: LogReport, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """`report` fed the run as it is written; once cancelled (the run's end), the rest of the
    log to its end, then every backend finished. Cancel it after the run's last event."""
    try:
        await report.follow(log, task_status=task_status)
    finally:
        # shielded, and bounded: a run that ended with its server lost reports what it read
        with anyio.move_on_after(CATCH_UP_S, shield=True):
            await report.feed_log(log)
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(report.finish)


CATCH_UP_S = 60.0  # at most this long reading the rest of the log after the run's end
