"""`mrl run` shows the warm start's progress on the terminal (a minute on an empty cache) while
the JSON log file keeps every line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

from mrl_actors import logs
from mrl_actors.actors.warmstart import tiny_policy
from mrl_actors.cli.run_cmd import _Tee
from mrl_actors.tasks import ArithmeticConfig, ArithmeticTask


def test_warm_start_progress_reaches_the_terminal_and_the_file(
    models_dir: Path, tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    file, terminal = io.StringIO(), io.StringIO()
    logs.configure("json", "info", stream=_Tee(file, terminal))
    try:
        task = ArithmeticTask(ArithmeticConfig(size=8))
        kw = {"hidden_size": 16, "layers": 1, "heads": 2, "warm_steps": 4}
        tiny_policy(models_dir / "gpt2", tmp_path, task, **kw)
        shown = terminal.getvalue().splitlines()
        assert shown[0] == "warm start gpt2: building, 4 supervised steps (cached after)"
        assert [x.split(",")[0] for x in shown[1:5]] == [
            f"warm start gpt2: step {i}/4" for i in range(1, 5)
        ]
        assert shown[-1].startswith("warm start gpt2: done in ")
        events = [json.loads(x)["event"] for x in file.getvalue().splitlines()]
        assert events.count("warm_start.progress") == 4 and "tiny_policy.built" in events
        terminal.truncate(0)
        tiny_policy(models_dir / "gpt2", tmp_path, task, **kw)  # cached: nothing to wait for
        assert terminal.getvalue() == ""
    finally:
        logs.configure()
