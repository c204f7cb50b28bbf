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

    assert main(["log", "tail", str(path), "--seq", "5", "-n", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["seq"] == 5


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
