"""A real node serves its run's Prometheus metrics while it runs, and its learners write
TensorBoard scalars.

One asynchronous run (tiny real-architecture models, a real nats-server in the run directory)
is placed on two nodes: `n0` (this test's node, two CPU slots: gpt2's learner and rollout
actor) and `elsewhere`, which never starts, so llama takes no step and `n0` keeps running after
gpt2's steps, serving its metrics. The test scrapes `/metrics` over HTTP until every series of
`mrl_actors.report.metrics` is there for gpt2 (bounded by a deadline, not timed), then stops
the node:
the port is free again, and gpt2's learner steps are in `<run_dir>/tensorboard/gpt2`.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers.specs import slots, spec_toml
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUN = "t-metrics"
STEPS = 2
DEADLINE_S = 120.0  # a bound on a hung run, far above the ~10 s it takes

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def spec_text(models_dir: Path) -> str:
    placed = [
        (node, slot, policy, role)
        for node, policy in (("n0", "gpt2"), ("elsewhere", "llama"))
        for slot, role in (("cpu:0", "learner"), ("cpu:1", "rollout"))
    ]
    return spec_toml(
        models_dir,
        run={
            "name": RUN,
            "probe": "independent",
            "mode": "async",
            "steps": STEPS,
            "eval_size": 2,
            "checkpoint_every": STEPS,
            "tensorboard": True,
        },
        placement=slots(*placed),
        tiny={"hidden_size": 16, "layers": 1, "heads": 2, "warm_start_steps": 2},
        max_new_tokens=3,
    )


def scrape(port: int) -> Series:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "run"))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels.get("run") == RUN
    }


# every series a dashboard of this run needs, for the policy n0 hosts
WANTED = [
    ("mrl_tokens_per_second", (("node", "n0"), ("policy", "gpt2"), ("role", "rollout"))),
    ("mrl_tokens_per_second", (("node", "n0"), ("policy", "gpt2"), ("role", "learner"))),
    ("mrl_samples_per_second", (("node", "n0"), ("policy", "gpt2"), ("role", "rollout"))),
    ("mrl_pending_groups", (("policy", "gpt2"),)),
    ("mrl_learner_wait_seconds", (("policy", "gpt2"),)),
    ("mrl_learner_compute_seconds", (("policy", "gpt2"),)),
    ("mrl_staleness_versions", (("policy", "gpt2"),)),
    ("mrl_learner_version", (("policy", "gpt2"),)),
    ("mrl_seconds_since_learner_step", (("policy", "gpt2"),)),
    ("mrl_slot_moves_total", (("from_policy", "gpt2"), ("to_policy", "llama"))),
    ("mrl_slot_moves_total", (("from_policy", "llama"), ("to_policy", "gpt2"))),
    ("mrl_slots", (("policy", "gpt2"), ("role", "learner"))),
    ("mrl_slots_epoch", ()),
    ("mrl_node_last_seen_timestamp_seconds", (("node", "n0"),)),
]


def test_a_node_serves_every_series_while_it_runs_and_frees_its_port(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mrl_actors.report.metrics import MetricsConfig
    from mrl_actors.report.tensorboard import board_dir, read_scalars
    from mrl_actors.run.node import run_node
    from mrl_actors.run.placement import parse_slots
    from mrl_actors.run.start import record_start
    from mrl_actors.see.access import open_log, spec_log_config
    from mrl_actors.see.server import free_port, serve_run_dir
    from mrl_actors.spec import parse_spec

    monkeypatch.setenv("MRL_CACHE_DIR", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    text = spec_text(models_dir)
    spec = parse_spec(text)
    port = free_port()
    board = board_dir(run_dir, "gpt2")

    def stepped() -> bool:  # read on the event loop, where the learner writes: whole records
        return board.is_dir() and ("reward_mean", STEPS) in read_scalars(board)

    async def main() -> Series:
        names = [p.name for p in spec.policies]
        async with serve_run_dir(run_dir, run=RUN, policies=names) as srv:
            where: dict[str, Any] = {"info": srv.info(), "config": spec_log_config(spec.server)}
            async with open_log(run=RUN, create=True, **where) as log:
                await record_start(log, spec, text)
                got: Series = {}
                async with anyio.create_task_group() as tg:
                    node = partial(
                        run_node,
                        log,
                        spec,
                        run_dir,
                        node="n0",
                        slots=parse_slots("cpu:2"),
                        metrics=MetricsConfig(host="127.0.0.1", port=port),
                    )
                    tg.start_soon(node)
                    with anyio.fail_after(DEADLINE_S):
                        while not (all(w in got for w in WANTED) and stepped()):
                            await anyio.sleep(0.2)
                            try:
                                got = await anyio.to_thread.run_sync(scrape, port)
                            except (urllib.error.URLError, ConnectionError):
                                got = {}  # not serving yet
                    tg.cancel_scope.cancel()  # the node stops, as on Ctrl-C
                return got

    got = anyio.run(main)
    pair = (("from_policy", "gpt2"), ("to_policy", "llama"))
    assert got[("mrl_slot_moves_total", pair)] == 0.0  # opened at registration, nothing moved
    assert got[("mrl_slots", (("policy", "gpt2"), ("role", "learner")))] == 1.0
    assert got[("mrl_learner_version", (("policy", "gpt2"),))] >= 1
    assert got[("mrl_tokens_per_second", WANTED[0][1])] > 0
    assert got[("mrl_seconds_since_learner_step", (("policy", "gpt2"),))] >= 0

    # the node's end closed its metrics server: nothing answers, and the port can be bound
    with pytest.raises(urllib.error.URLError):
        scrape(port)
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
        again.listen()

    scalars = read_scalars(board)
    for step in range(1, STEPS + 1):
        for tag in ("loss", "reward_mean", "rollout_wait_s", "learn_time_s", "staleness_mean"):
            assert (tag, step) in scalars, (tag, step, sorted(scalars))
    assert not (run_dir / "tensorboard" / "llama").exists()  # its learner never ran
