"""A run's start, once, whoever starts it: its log opened for the run's users, and the events
that open it (`RunStarted`, each `PolicyRegistered`, the spec's placement).

`mrl run` (on one machine) and `mrl-node` (each host of a run on several) both start here, so a
run records the same start however it is hosted, and two starters racing write each event once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import msgspec

from mrl_actors import __version__
from mrl_actors.events import PolicyRegistered, RunStarted, event_id
from mrl_actors.logs import get_logger
from mrl_actors.models.builtin import family_of
from mrl_actors.models.hub import local_model_dir
from mrl_actors.run.placement import initial_assignment
from mrl_actors.see.access import open_log, spec_log_config
from mrl_actors.see.auth import policy_user
from mrl_actors.see.port import LogFor, LogPort
from mrl_actors.see.stream import EventLog
from mrl_actors.spec import RunSpec
from mrl_actors.thl import load_vocab


def code_version() -> str:
    """The package version, plus the git revision when run from a checkout."""
    head = Path(__file__).resolve().parents[2] / ".git" / "HEAD"  # mrl_actors/run/start.py
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            ref = (head.parent / ref[5:]).read_text().strip()
        return f"{__version__}+g{ref[:12]}"
    except OSError:
        return __version__


async def open_run_log(
    spec: RunSpec, stack: AsyncExitStack, on_lost: Callable[[str], None], **where: Any
) -> tuple[EventLog, LogFor | None]:
    """The run's log as admin, and how each policy opens its own (`None`: through this one).

    `where` is `server=URL` (credentials of one user, from `MRL_NATS_*`, shared by the actors)
    or `info=ServerInfo` (a run directory's server, whose users are the run's roles,
    `mrl_actors.see.auth`: each policy actor then connects as itself).
    """
    names = [p.name for p in spec.policies]  # each gets its own blob bucket, made here
    opened = partial(
        open_log, run=spec.run.name, config=spec_log_config(spec.server), policies=names, **where
    )
    log = await stack.enter_async_context(opened(create=True, on_lost=on_lost))
    if "server" in where:
        return log, None
    return log, lambda name: opened(user=policy_user(name), on_lost=on_lost)


async def record_start(log: LogPort, spec: RunSpec, spec_text: str) -> set[str]:
    """RunStarted, PolicyRegistered and the spec's placement (`SlotsAssigned` epoch 1), once
    per run, whoever starts first: `mrl run`, or any `mrl-node` of a run on several hosts.

    Each start event is appended only if its subject is still empty (`EventLog.append_first`,
    checked by the server), so two starters racing write each event once; the loser finds it in
    the log. Returns the ids of the run's `run`, `policy` and `slots` events already in the log
    before this start.
    """
    kinds = ["run", "policy", "slots"]
    have = {rec.event.event_id async for rec in log.read(start_seq=1, kinds=kinds)}
    run = spec.run.name
    events: list[Any] = []
    started = event_id("run", run, "mrl", "started")
    if started not in have:
        events.append(
            RunStarted(
                run=run,
                source="mrl",
                event_id=started,
                time_ns=time.time_ns(),
                spec_toml=spec_text,
                seed=spec.run.seed,
                code_version=code_version(),
                probes=[spec.run.probe],
                mode=spec.run.mode,
            )
        )
    for i, p in enumerate(spec.policies):
        eid = event_id("policy", run, p.name, "registered")
        if eid in have:
            continue
        where = partial(local_model_dir, p.model, field=f"policies[{i}].model")
        source = await anyio.to_thread.run_sync(where)  # a hub id: its cached snapshot
        vocab = await anyio.to_thread.run_sync(load_vocab, source)
        events.append(
            PolicyRegistered(
                run=run,
                source=p.name,
                event_id=eid,
                time_ns=time.time_ns(),
                policy=p.name,
                family=family_of(str(source)),
                model_path=p.model,
                tokenizer_fingerprint=vocab.fingerprint,
                probe=spec.run.probe,
                engine=p.engine.kind,
                options={
                    **spec.probes.options_for(spec.run.probe),
                    "grpo": _builtins(p.grpo),
                    "sampling": _builtins(p.engine.sampling),
                    "tiny": _builtins(p.tiny) if p.tiny else None,
                },
            )
        )
    placed = initial_assignment(spec)
    if placed is not None and placed.event_id not in have:
        events.append(placed)
    logger = get_logger(__name__, run=run)
    for event in events:  # in this order: a reader that sees the placement sees the policies
        if await log.append_first(event) is None:
            logger.info("start_event_already_written", event_id=event.event_id, kind=event.KIND)
    return have


def _builtins(obj: Any) -> Any:
    return msgspec.to_builtins(obj)
