"""`mrl log tail|stats|export` on a run directory (embedded store) and on a live server URL."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import anyio
import numpy as np
import pytest
import zarr

from mrl_actors.cli import main
from mrl_actors.events import RolloutGroupCompleted
from mrl_actors.see import Consumer, EventLog, FoldApplier
from mrl_actors.see.connection import connect
from mrl_actors.see.server import EmbeddedServer, write_server_info

pytestmark = pytest.mark.integration

MakeRollout = Callable[..., RolloutGroupCompleted]


async def _fill(srv: EmbeddedServer, make_rollout: MakeRollout) -> list[RolloutGroupCompleted]:
    nc = await connect(srv.client())
    log = await EventLog.open(nc, "demo")
    events = [make_rollout("demo", "qwen" if i % 2 else "llama", i) for i in range(6)]
    await log.append_many(events)
    await log.js.publish("mrl.demo.rollout.qwen", b"\xc1 not an event")
    applier: FoldApplier[int] = FoldApplier(lambda n, e: n + 1, 0)
    await Consumer(log, "reader").run(applier, until_idle=True, fetch_timeout=0.3)
    await nc.close()
    return events


@pytest.fixture
def run_dir(tmp_path: Path, make_rollout: MakeRollout) -> tuple[Path, list[RolloutGroupCompleted]]:
    """A stopped run: its store under DIR/nats, no live server."""

    async def build() -> list[RolloutGroupCompleted]:
        async with EmbeddedServer(tmp_path / "run" / "nats") as srv:
            return await _fill(srv, make_rollout)

    return tmp_path / "run", anyio.run(build)


def test_tail_json_with_filters_on_a_run_dir(
    run_dir: tuple[Path, list[RolloutGroupCompleted]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, events = run_dir
    assert main(["log", "tail", str(path), "--json", "--kind", "rollout", "--policy", "qwen"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.split("\n") if x]
    assert [x["event"]["event_id"] for x in lines] == [
        e.event_id for e in events if e.source == "qwen"
    ]
    assert (
        lines[0]["event"]["completions"][0]["token_ids"]
        == events[1].completions[0].token_ids_array().tolist()
    )

    assert main(["log", "tail", str(path), "--where", "reward>0.5", "--where", "prompt_id=p4"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and "prompt=p4" in out[0] and "RolloutGroupCompleted" in out[0]

    assert main(["log", "tail", str(path), "--seq", "5", "--limit", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["seq"] == 5


def test_n_is_the_last_events_and_limit_the_first(
    run_dir: tuple[Path, list[RolloutGroupCompleted]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, events = run_dir
    ids = [e.event_id for e in events]
    assert main(["log", "tail", str(path), "--kind", "rollout", "-n", "2", "--json"]) == 0
    got = [json.loads(x)["event"]["event_id"] for x in capsys.readouterr().out.splitlines()]
    assert got == ids[-2:]
    assert main(["log", "tail", str(path), "--kind", "rollout", "--limit", "2", "--json"]) == 0
    got = [json.loads(x)["event"]["event_id"] for x in capsys.readouterr().out.splitlines()]
    assert got == ids[:2]


def test_where_is_checked_against_the_kinds_fields_and_display_fields_filter(
    run_dir: tuple[Path, list[RolloutGroupCompleted]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, events = run_dir
    tail = ["log", "tail", str(path), "--kind", "rollout"]
    assert main([*tail, "--where", "rewrd>0.5"]) == 2
    err = capsys.readouterr().err
    assert "no field 'rewrd' in events of kind rollout" in err and "reward_mean" in err
    assert main([*tail, "--where", "reward>>0.5"]) == 2
    assert "> needs a number, got '>0.5'" in capsys.readouterr().err
    assert main([*tail, "--where", "prompt_id>3"]) == 2  # a string field, a numeric test
    assert "prompt_id is a string" in capsys.readouterr().err
    assert main([*tail, "--where", "successes>=1", "--json"]) == 0  # what a line shows
    got = [json.loads(x)["event"]["event_id"] for x in capsys.readouterr().out.splitlines()]
    assert got == [e.event_id for e in events if any(c.success for c in e.completions)]
    assert main([*tail, "--where", "reward_mean>0.4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(float(x.split("reward_mean=")[1].split()[0]) > 0.4 for x in lines)


def test_read_only_commands_print_no_server_lines(
    run_dir: tuple[Path, list[RolloutGroupCompleted]], capfd: pytest.CaptureFixture[str]
) -> None:
    """A stopped run's store is served for the call; its start and stop are not news."""
    path, _ = run_dir
    assert main(["log", "stats", str(path)]) == 0
    err = capfd.readouterr().err
    assert "nats_server_started" not in err and "nats_server_stopped" not in err


def test_follow_ends_with_one_line_when_the_run_ends(
    tmp_path: Path, make_rollout: MakeRollout
) -> None:
    """`tail -f` on a live run whose server then stops: one line and exit 0, no traceback."""
    import subprocess
    import sys

    srv = EmbeddedServer(tmp_path / "run" / "nats")
    anyio.run(srv.start)
    try:
        anyio.run(_fill, srv, make_rollout)
        write_server_info(tmp_path / "run", srv.info(run="demo"))
        cmd = [sys.executable, "-m", "mrl_actors", "log", "tail", str(tmp_path / "run"), "-f"]
        proc = subprocess.Popen(
            [*cmd, "--kind", "rollout"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        first = [proc.stdout.readline() for _ in range(6)]  # the stored events, then it waits
        assert all("RolloutGroupCompleted" in x for x in first), first
    finally:
        anyio.run(srv.stop)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and out == ""
    assert err.splitlines()[-1] == "mrl log: the run's server stopped (the run ended); 6 events"


def test_a_reader_that_stops_reading_ends_the_tail_quietly(
    tmp_path: Path, make_rollout: MakeRollout
) -> None:
    """`mrl log tail ... | head -1`: the tail ends with the shell's SIGPIPE status, no traceback."""
    import subprocess
    import sys

    async def build() -> None:
        async with EmbeddedServer(tmp_path / "run" / "nats") as srv:
            nc = await connect(srv.client())
            log = await EventLog.open(nc, "demo")  # far more JSON than a pipe buffers (64 KiB)
            await log.append_many([make_rollout("demo", "llama", i, tokens=2000) for i in range(8)])
            await nc.close()

    anyio.run(build)
    cmd = [sys.executable, "-m", "mrl_actors", "log", "tail", str(tmp_path / "run"), "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert b"RolloutGroupCompleted" in proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "Error" not in err, err


def test_stats_counts_dead_letters(
    run_dir: tuple[Path, list[RolloutGroupCompleted]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = run_dir
    assert main(["log", "stats", str(path), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    counts = {(r["kind"], r["source"]): r["count"] for r in st["rows"]}
    assert counts == {
        ("rollout", "llama"): 3,
        ("rollout", "qwen"): 4,  # three events and the garbage
        ("deadletter", "reader"): 1,
    }
    assert st["dead_letters"] == {"by_error": {"garbage": 1}, "by_consumer": {"reader": 1}}
    assert main(["log", "stats", str(path)]) == 0
    assert "garbage" in capsys.readouterr().out


def test_export_writes_jsonl_and_zarr(
    run_dir: tuple[Path, list[RolloutGroupCompleted]], tmp_path: Path
) -> None:
    path, events = run_dir
    out = tmp_path / "export"
    assert main(["log", "export", str(path), "--out", str(out), "--kind", "rollout"]) == 0
    text = (out / "events.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(x) for x in text.split("\n") if x]
    assert [r["event"]["event_id"] for r in rows] == [e.event_id for e in events]
    root = zarr.open_group(str(out / "rollouts.zarr"), mode="r")
    offsets = np.asarray(root["offsets"][:])
    ids = np.asarray(root["token_ids"][:])
    first = events[0].completions[1]
    np.testing.assert_array_equal(ids[offsets[1] : offsets[2]], first.token_ids_array())
    np.testing.assert_array_equal(
        np.asarray(root["rewards"][:]),
        np.concatenate([e.rewards_array() for e in events]),
    )
    assert list(root.attrs["policies"]) == ["llama", "qwen"]


def test_tail_on_a_live_server_by_url_and_by_server_json(
    tmp_path: Path,
    make_rollout: MakeRollout,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    srv = EmbeddedServer(tmp_path / "run" / "nats")
    anyio.run(srv.start)
    try:
        anyio.run(_fill, srv, make_rollout)
        monkeypatch.setenv("MRL_NATS_USER", "admin")
        monkeypatch.setenv("MRL_NATS_PASSWORD", srv.users["admin"])
        assert main(["log", "tail", "--server", srv.url, "--json", "--kind", "rollout"]) == 0
        assert len(capsys.readouterr().out.splitlines()) == 6
        write_server_info(tmp_path / "run", srv.info(run="demo"))
        monkeypatch.delenv("MRL_NATS_USER")
        monkeypatch.delenv("MRL_NATS_PASSWORD")
        assert main(["log", "tail", str(tmp_path / "run"), "--kind", "deadletter"]) == 0
        assert "garbage" in capsys.readouterr().out
    finally:
        anyio.run(srv.stop)
