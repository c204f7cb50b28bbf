"""TensorBoard scalars of a policy's learner steps (`[run] tensorboard = true`).

Each learner step's metrics (what `LearnerStepCompleted.metrics` holds: loss, reward mean,
success rate, KL when `beta > 0`, wait and compute seconds, staleness in async runs, eval
accuracy when measured, ...) become scalars tagged by their metric name at that step, in an event
file under `<run_dir>/tensorboard/<policy>/`: `tensorboard --logdir <run_dir>/tensorboard`
shows every policy of the run side by side. The lockstep actor (`actors.policy`) and the
asynchronous learner (`actors.learner`) both call `StepScalars.write` after a step is logged.

The log stays the record: these files are a view of it, written by the process that took the
step. A resumed actor writes a new file in the same directory for the steps it takes (replayed
steps are not written again); TensorBoard reads the directory's files as one series.

The writer is tensorboardX's synchronous `EventsWriter` (no background thread, no TensorFlow,
no `tensorboard` server package), opened at the first step and flushed after every step, so a
killed process loses at most the step it was writing; it is closed after the run's last step.
`read_scalars` reads a directory back as TensorBoard does (tests, notebooks).
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

BOARD_DIR = "tensorboard"


def board_dir(run_dir: Path, policy: str) -> Path:
    """Where a policy's scalars go: `<run_dir>/tensorboard/<policy>`."""
    return run_dir / BOARD_DIR / policy


class StepScalars:
    """One policy's learner-step scalars; does nothing when not `enabled`."""

    def __init__(self, run_dir: Path, policy: str, *, enabled: bool, last_step: int) -> None:
        self.dir = board_dir(run_dir, policy)
        self.enabled = enabled
        self.last_step = last_step  # the run's last step: the file is closed after it
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
        values = [Summary.Value(tag=k, simple_value=float(v)) for k, v in sorted(metrics.items())]
        self._writer.write_event(
            Event(wall_time=time.time(), step=step, summary=Summary(value=values))
        )
        self._writer.flush()
        if step >= self.last_step:
            self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


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
                out[(v.tag, event.step)] = v.simple_value
            at += 16 + length
    return out
