"""Weights & Biases as a `Reporter` (`report_to = ["wandb"]`; `pip install 'mrl-actors[wandb]'`).

One W&B run per policy, named `<run>-<policy>`, grouped by the mrl run (W&B's `group`), in the
project `WANDB_PROJECT` (default `mrl-actors`); its config is the policy's hyperparameters
(`tensorboard.spec_hparams`), its history the learner steps' scalars at their step (the
step-0 evaluation at step 0).

Offline unless `WANDB_MODE` says otherwise: the runs are written under `<out>/wandb/` and
uploaded later with `wandb sync <out>/wandb/offline-run-*` (or set `WANDB_MODE=online` after
`wandb login` to stream them). Nothing is sent anywhere without one of those. No console
capture, code, git or system statistics are recorded: the log already says how the run was made.

`read_offline(directory)` reads the runs an offline directory holds back from their `.wandb`
files (W&B's record log: 32 KiB blocks of checksummed records, each a `wandb_internal_pb2.
Record`), with no server: tests and notebooks.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mrl_actors.report.tensorboard import HParam


class Reporter:
    def __init__(self, out: Path, run: str) -> None:
        import wandb

        self.wandb = wandb
        self.out = out
        self.run = run
        self.runs: dict[str, Any] = {}

    def start(self, policy: str, hparams: Mapping[str, HParam]) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        settings = self.wandb.Settings(
            silent=True, console="off", disable_git=True, disable_code=True, x_disable_stats=True
        )
        self.runs[policy] = self.wandb.init(
            project=os.environ.get("WANDB_PROJECT", "mrl-actors"),
            group=self.run,
            name=f"{self.run}-{policy}",
            job_type="learner",
            tags=[policy],
            dir=str(self.out),
            config={"mrl.run": self.run, "mrl.policy": policy, **hparams},
            mode=os.environ.get("WANDB_MODE", "offline"),  # type: ignore[arg-type]
            reinit="create_new",  # a run per policy, open side by side
            save_code=False,
            settings=settings,
        )

    def scalars(self, policy: str, step: int, values: Mapping[str, float]) -> None:
        self.runs[policy].log(dict(values), step=step)

    def finish(self) -> None:
        for run in self.runs.values():
            run.finish()
        self.runs = {}
        # `finish` can return before W&B's service has written a run's last records; its
        # teardown waits for them (the next `wandb.init` starts a service again)
        self.wandb.teardown()


# ---------------------------------------------------------------------- reading back

_HEADER = struct.Struct("<4sHB")  # ":W&B", magic 0xBEE1, version 0
_RECORD = struct.Struct("<IHB")  # CRC-32 of (type byte, data), data length, type
_BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _records(path: Path) -> list[bytes]:
    """The records of a `.wandb` file, joined across blocks; a bad checksum is a ValueError."""
    data = path.read_bytes()
    ident, magic, version = _HEADER.unpack_from(data, 0)
    if (ident, magic, version) != (b":W&B", 0xBEE1, 0):
        raise ValueError(f"{path}: not a W&B run file")
    out, at, pending = [], _HEADER.size, b""
    while at + _RECORD.size <= len(data):
        room = _BLOCK - at % _BLOCK
        if room < _RECORD.size:  # the block's tail is padding
            at += room
            continue
        crc, length, kind = _RECORD.unpack_from(data, at)
        if kind == 0 and length == 0:  # zero fill to the block's end
            at += room
            continue
        body = data[at + _RECORD.size : at + _RECORD.size + length]
        if len(body) < length:
            break  # cut short: the run is still being written
        if zlib.crc32(body, zlib.crc32(bytes([kind]))) != crc:
            raise ValueError(f"{path}: bad checksum in the record at byte {at}")
        at += _RECORD.size + length
        if kind == _FULL:
            out.append(body)
        elif kind == _FIRST:
            pending = body
        elif kind == _MIDDLE:
            pending += body
        elif kind == _LAST:
            out.append(pending + body)
            pending = b""
    return out


def read_offline(directory: Path) -> dict[str, dict[str, Any]]:
    """`{run name: {"group", "config": {key: value}, "history": {(key, step): value}}}` of
    every run under `directory` (`<out>/wandb`)."""
    from wandb.proto.wandb_internal_pb2 import Record  # type: ignore[attr-defined]

    runs: dict[str, dict[str, Any]] = {}
    paths = [p for p in directory.glob("*run-*/run-*.wandb") if not p.parent.is_symlink()]
    for path in sorted(paths):  # (not `latest-run`: a link to the last one)
        name, group = path.stem, ""
        config: dict[str, Any] = {}
        history: dict[tuple[str, int], float] = {}
        for raw in _records(path):
            rec = Record.FromString(raw)
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                name, group = rec.run.display_name or name, rec.run.run_group
                config.update(_items(rec.run.config.update))
            elif kind == "config":
                config.update(_items(rec.config.update))
            elif kind == "history":
                values = _items(rec.history.item)
                step = int(values.pop("_step", rec.history.step.num))
                for key, value in values.items():
                    if not key.startswith("_") and isinstance(value, int | float):
                        history[(key, step)] = float(value)
        runs[name] = {"group": group, "config": config, "history": history}
    return runs


def _items(items: Any) -> dict[str, Any]:
    out = {}
    for item in items:
        key = item.key or "/".join(item.nested_key)
        out[key] = json.loads(item.value_json)
    return out
