"""The MWRA lease lapses by the server's clock: a forged far-future stamp holds nothing.

A node user may write the lease bucket (any node may hold the allocator's lease), so it can put
the key with any `renewed_ns`. The lease is judged by the time the server stored the key's last
revision: a forged put stops the honest holder's renewal (the revision moved) but lapses like a
renewal would, and another candidate takes the lease once `ttl_s` has passed.
"""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import pytest

from mrl_actors.see.access import open_log
from mrl_actors.see.auth import node_permissions
from mrl_actors.see.lease import Lease, LeaseValue
from mrl_actors.see.server import EmbeddedServer
from mrl_actors.see.stream import LogConfig

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

LIVENESS_S = 2.0
TTL_S = 0.75 * LIVENESS_S  # mrl_actors.mwra.actor.LEASE_TTL


async def test_a_forged_far_future_lease_lapses_by_the_servers_clock(tmp_path: Path) -> None:
    nodes = {
        f"node-{n}": node_permissions("r", n, ["a"], ["a"], user=f"node-{n}")
        for n in ("h1", "h2", "h3")
    }
    async with EmbeddedServer(tmp_path / "nats", run="r", policies=["a"], extra_users=nodes) as srv:
        cfg = LogConfig(ack_timeout_s=2.0)
        async with open_log(info=srv.info(), config=cfg, create=True):
            pass
        info = srv.info()
        async with (
            open_log(info=info, user="node-h1", config=cfg) as h1,
            open_log(info=info, user="node-h2", config=cfg) as h2,
            open_log(info=info, user="node-h3", config=cfg) as h3,
        ):
            holder = Lease(h1.js, "r", "mwra", "h1", ttl_s=TTL_S)
            assert await holder.acquire()
            # h3 is the attacker: a plain put of the lease, stamped a century ahead
            kv = await h3.js.key_value("MRL_r_LEASE")
            far = time.time_ns() + 100 * 365 * 86400 * 10**9
            await kv.put("mwra", msgspec.json.encode(LeaseValue("h3", far)))
            assert not await holder.renew()  # the revision moved: h1 stops leading

            now = Lease(h2.js, "r", "mwra", "h2", ttl_s=TTL_S)
            assert not await now.acquire()  # the forged put is fresh by the server's stamp
            # the same candidate, TTL_S later by its clock (within two liveness intervals)
            ahead = int(1.5 * TTL_S * 1e9)  # 1.125 liveness intervals
            later = Lease(
                h2.js, "r", "mwra", "h2", ttl_s=TTL_S, clock=lambda: time.time_ns() + ahead
            )
            assert await later.acquire()
            value, _ = await later.current()
            assert value is not None and value.holder == "h2"
