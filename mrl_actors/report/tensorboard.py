"""TensorBoard scalars of a policy's learner steps (`[run] tensorboard = true`).

Each learner step's metrics (what `LearnerStepCompleted.metrics` holds: loss, reward mean,
success rate, KL when `beta > 0`, wait and compute seconds, staleness in async runs, eval
accuracy when measured, ...) become scalars tagged by their metric name at that step (the
evaluation before the first step, `eval_accuracy_initial` and the like, is step 0 of the same
tag), in an event file under `<run_dir>/tensorboard/<policy>/`:
`tensorboard --logdir <run_dir>/tensorboard` shows every policy of the run side by side. The
lockstep actor (`actors.policy`) and the asynchronous learner (`actors.learner`) both call
`StepScalars.write` after a step is logged. `Reporter` writes the same files from the log
afterwards (`mrl report RUN --to tensorboard`, `mrl_actors.report.reporters`).

The log stays the record: these files are a view of it, written by the process that took the
step. A resumed actor writes a new file in the same directory for the steps it takes (replayed
steps are not written again); TensorBoard reads the directory's files as one series.

The writer is tensorboardX's synchronous `EventsWriter` (no background thread, no TensorFlow,
no `tensorboard` server package), opened at the first step and flushed after every step, so a
killed process loses at most the step it was writing; it is closed after the run's last step.
The first event of a file carries the policy's hyperparameters (`spec_hparams`) for the HPARAMS
tab. `read_scalars` and `read_hparams` read a directory back as TensorBoard does (tests,
notebooks).
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mrl_actors.errors import ConfigError
from mrl_actors.report.scalars import step_scalars

BOARD_DIR = "tensorboard"


def board_dir(run_dir: Path, policy: str) -> Path:
    """Where a policy's scalars go: `<run_dir>/tensorboard/<policy>`."""
    return run_dir / BOARD_DIR / policy


class StepScalars:
    """One policy's learner-step scalars; does nothing when not `enabled`."""

    def __init__(
        self,
        run_dir: Path,
        policy: str,
        *,
        enabled: bool,
        last_step: int,
        hparams: Mapping[str, HParam] | None = None,
    ) -> None:
        self.dir = board_dir(run_dir, policy)
        self.enabled = enabled
        self.last_step = last_step  # the run's last step: the file is closed after it
        self.hparams = dict(hparams or {})
        self._writer: Any = None

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        """The step's metrics as scalars at `step`, flushed to disk before returning."""
        if not self.enabled:
            return
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.proto.summary_pb2 import Summary

        if self._writer is None:
            from tensorboardX.event_file_writer import EventsWriter

            self.dir.mkdir(parents=True, exist_ok=True)
            # the file name has the second it was opened and the host; the pid and clock make
            # it unique for an actor restarted within that second (EventsWriter truncates)
            suffix = f".{os.getpid()}.{time.time_ns()}"
            self._writer = EventsWriter(str(self.dir / "events"), suffix)
            if self.hparams:  # TensorBoard's HPARAMS tab: this policy's settings, its metrics
                from tensorboardX.summary import hparams

                for summary in hparams(self.hparams, {k: 0.0 for k in HPARAM_METRICS}):
                    self._writer.write_event(Event(wall_time=time.time(), summary=summary))
        # `<key>_initial` is measured before the first step: step 0 of the same tag
        for at, values in step_scalars(step, metrics):
            summary = Summary(
                value=[
                    Summary.Value(tag=k, simple_value=float(v)) for k, v in sorted(values.items())
                ]
            )
            self._writer.write_event(Event(wall_time=time.time(), step=at, summary=summary))
        self._writer.flush()
        if step >= self.last_step:
            self.close()

    def write_at(self, step: int, values: Mapping[str, float]) -> None:
        """Scalars already split by `step_scalars` (a `Reporter`'s): at `step`, as they are."""
        self.write(step, {f"{k}_initial" if step == 0 else k: v for k, v in values.items()})

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


HParam = float | int | str | bool
# metrics the HPARAMS tab shows beside each policy's settings (scalar tags of the same directory)
HPARAM_METRICS = ("eval_accuracy", "eval_pass1", "reward_mean")


def spec_hparams(spec: Any, policy: str) -> dict[str, HParam]:
    """The settings a comparison of runs is made on: the run's schedule and probe, and the
    policy's model, learner and sampling options, as flat `section.field` names."""
    import msgspec

    out: dict[str, HParam] = {}

    def flat(prefix: str, obj: Any) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                flat(f"{prefix}.{k}", v)
        elif isinstance(obj, bool | int | float | str):
            out[prefix] = obj
        elif isinstance(obj, list | tuple):
            out[prefix] = ", ".join(str(x) for x in obj)

    flat("run", msgspec.to_builtins(spec.run))
    for p in spec.policies:
        if p.name == policy:
            out["policy.model"] = p.model
            flat("grpo", msgspec.to_builtins(p.grpo))
            flat("sampling", msgspec.to_builtins(p.engine.sampling))
    return out


def read_hparams(directory: Path) -> dict[str, HParam]:
    """The hyperparameters written to `directory` (the HPARAMS tab's session start info)."""
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    out: dict[str, HParam] = {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at + 16 <= len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            event = Event.FromString(data[at + 12 : at + 12 + length])
            at += 16 + length
            for v in event.summary.value:
                if v.tag != "_hparams_/session_start_info":
                    continue
                info = HParamsPluginData.FromString(v.metadata.plugin_data.content)
                for k, val in info.session_start_info.hparams.items():
                    kind = val.WhichOneof("kind")
                    out[k] = getattr(val, kind) if kind else ""
    return out


def read_scalars(directory: Path) -> dict[tuple[str, int], float]:
    """Every `(tag, step) -> value` of the event files in `directory`, as TensorBoard reads
    them: TFRecord framing (length, its masked CRC-32C, the record, its masked CRC-32C), each
    record an `Event`; a file's first event names its format. A record cut short at the end
    of a file is skipped; a bad checksum raises `ValueError`."""
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.record_writer import masked_crc32c

    out: dict[tuple[str, int], float] = {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data, at, first = path.read_bytes(), 0, True
        while at + 8 <= len(data):
            header = data[at : at + 8]
            (length,) = struct.unpack("<Q", header)
            if at + 16 + length > len(data):
                break  # a record cut short by a kill: TensorBoard skips it too
            record = data[at + 12 : at + 12 + length]
            crcs = struct.unpack("<II", data[at + 8 : at + 12] + data[at + 12 + length :][:4])
            if crcs != (masked_crc32c(header), masked_crc32c(record)):
                raise ValueError(f"{path}: bad checksum in the record at byte {at}")
            event = Event.FromString(record)
            if first and event.file_version != "brain.Event:2":
                raise ValueError(f"{path}: not a TensorBoard event file")
            first = False
            for v in event.summary.value:
                if v.WhichOneof("value") == "simple_value":  # not the hparams summaries
                    out[(v.tag, event.step)] = v.simple_value
            at += 16 + length
    return out


class Reporter:
    """`report_to = ["tensorboard"]` after the fact (`mrl report RUN --to tensorboard`): the
    log's learner steps as the event files `[run] tensorboard` writes live, under
    `<out>/tensorboard/<policy>/`. A directory that already holds event files (the run's own)
    is refused: TensorBoard would read the two as one series with every step twice."""

    def __init__(self, out: Path, run: str) -> None:
        self.out = out
        self.boards: dict[str, StepScalars] = {}

    def start(self, policy: str, hparams: Mapping[str, HParam]) -> None:
        directory = board_dir(self.out, policy)
        if any(directory.glob("events.out.tfevents.*")):
            raise ConfigError(
                f"{directory} already holds TensorBoard event files (the run's own, written "
                "live with [run] tensorboard): report into another --out"
            )
        self.boards[policy] = StepScalars(
            self.out, policy, enabled=True, last_step=2**62, hparams=hparams
        )

    def scalars(self, policy: str, step: int, values: Mapping[str, float]) -> None:
        self.boards[policy].write_at(step, values)

    def finish(self) -> None:
        for board in self.boards.values():
            board.close()
