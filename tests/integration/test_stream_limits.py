"""The spec's `[server]` size limits reach the stream: set at creation, raised on a later open,
and a full stream refuses new events instead of dropping old ones (a resume replays them)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from mrl_actors.errors import LogError
from mrl_actors.events import RolloutGroupCompleted
from mrl_actors.see.access import open_log, spec_log_config
from mrl_actors.see.server import EmbeddedServer
from mrl_actors.spec import ServerSection

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

MakeRollout = Callable[..., RolloutGroupCompleted]


async def test_limits_from_the_spec_bound_the_stream(
    tmp_path: Path, make_rollout: MakeRollout
) -> None:
    from nats.js.api import DiscardPolicy

    assert ServerSection().max_bytes == 8 * 1024**3  # the documented default
    small = ServerSection(max_bytes=1024**2, max_msgs=2)
    config = msgspec_replace(spec_log_config(small), ack_timeout_s=2.0)
    async with EmbeddedServer(tmp_path / "nats", run="r", policies=["a"]) as srv:
        async with open_log(info=srv.info(), config=config, create=True) as log:
            info = await log.js.stream_info(log.stream)
            assert (info.config.max_bytes, info.config.max_msgs) == (1024**2, 2)
            assert info.config.discard == DiscardPolicy.NEW
            bucket = await log.js.stream_info("OBJ_MRL_r_BLOBS_a")
            assert bucket.config.max_bytes == 1024**2
            await log.append(make_rollout("r", "a", 1))
            await log.append(make_rollout("r", "a", 2))
            with pytest.raises(LogError, match="maximum messages"):
                await log.append(make_rollout("r", "a", 3))
            assert [r.seq async for r in log.read(start_seq=1)] == [1, 2]  # nothing dropped
        bigger = msgspec_replace(config, max_msgs=10)
        async with open_log(info=srv.info(), config=bigger, create=True) as log:
            assert await log.append(make_rollout("r", "a", 3)) == 3  # a resume with more room
        async with open_log(info=srv.info(), config=config, create=True) as log:
            info = await log.js.stream_info(log.stream)
            assert info.config.max_msgs == 10  # never shrunk by an open asking for less


def msgspec_replace(obj: object, **changes: object) -> object:
    import msgspec

    return msgspec.structs.replace(obj, **changes)  # type: ignore[type-var]
