"""Weights by torch.distributed broadcast (gloo, three CPU processes), with a rank that misses
a version and loads it from the store, its hashes checked against the logged event."""

from __future__ import annotations

import multiprocessing as mp
import os
import traceback
from pathlib import Path

import anyio
import pytest
import torch

from mrl_actors.events import WeightsPublished, decode, encode
from mrl_actors.models.broadcast import WeightsBroadcast, receive_or_load
from mrl_actors.models.load import weights_sha256
from mrl_actors.models.transport_files import DirBlobs
from mrl_actors.models.weights import WeightsIO
from mrl_actors.models.weights_config import WeightsConfig

pytestmark = pytest.mark.integration

WORLD = 3
TIMEOUT_S = 120


class FileLog:
    def __init__(self, root: Path) -> None:
        self.run = "bcast"
        self.blobs = DirBlobs(root / "log-blobs")


def model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Embedding(40, 6), torch.nn.Linear(6, 40))
    m[1].weight = m[0].weight  # tied
    return m


async def _event(root: Path, version: int) -> WeightsPublished:
    """The learner's logged event (a file stands in for the log here: not under test)."""
    path = root / f"v{version}.event"
    with anyio.fail_after(TIMEOUT_S):
        while not path.exists():
            await anyio.sleep(0.05)
    ev = decode(path.read_bytes())
    assert isinstance(ev, WeightsPublished)
    return ev


def _rank(rank: int, root: Path, out: mp.Queue) -> None:  # type: ignore[type-arg]
    import torch.distributed as dist

    try:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        dist.init_process_group(
            "gloo", init_method=f"file://{root / 'rendezvous'}", rank=rank, world_size=WORLD
        )
        # every rank creates every group (torch's rule): v1 goes to {0, 1} while rank 2's
        # engine is still starting; from v2 on all three take part
        early = dist.new_group([0, 1])
        everyone = dist.new_group([0, 1, 2])
        config = WeightsConfig(store="dir", dir=str(root / "weights"))
        wio = WeightsIO(FileLog(root), config, policy="p")
        how: list[str] = []

        async def main() -> None:
            m = model(seed=rank)  # each rank starts from different weights
            if rank == 0:
                for version, group in ((1, early), (2, everyone)):
                    with torch.no_grad():
                        for p in m.parameters():
                            p.add_(0.01 * version)
                    ev = await wio.publish(version, m, weights_sha256(m))
                    (root / f"v{version}.event.tmp").write_bytes(encode(ev))
                    (root / f"v{version}.event.tmp").rename(root / f"v{version}.event")
                    WeightsBroadcast(group, src=0).send(ev, m)
                return
            for version in (1, 2):
                ev = await _event(root, version)
                member = version == 2 or rank == 1
                group = everyone if version == 2 else early
                channel = WeightsBroadcast(group, src=0) if member else None
                how.append(await receive_or_load(channel, ev, m, wio))
                assert weights_sha256(m) == ev.weights_sha256

        anyio.run(main)
        dist.barrier()
        dist.destroy_process_group()
        out.put((rank, how, None))
    except BaseException:
        out.put((rank, [], traceback.format_exc()))


def test_gloo_broadcast_with_a_rank_that_loads_a_missed_version_from_the_store(
    tmp_path: Path,
) -> None:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(r, tmp_path, out)) for r in range(WORLD)]
    for p in procs:
        p.start()
    try:
        results = {}
        for _ in range(WORLD):
            rank, how, error = out.get(timeout=TIMEOUT_S)
            assert error is None, f"rank {rank} failed:\n{error}"
            results[rank] = how
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    assert results[1] == ["broadcast", "broadcast"]
    assert results[2] == ["store", "broadcast"]  # missed v1: from the store, checked


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
