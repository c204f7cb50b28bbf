"""Safetensors in one buffer, delta versions, file transports and `WeightsIO` (no server)."""

from __future__ import annotations

import contextlib
import struct
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from mrl_actors.errors import BlobIntegrityError, WeightsError
from mrl_actors.events import WeightsPublished, decode, encode
from mrl_actors.models.delta import apply_delta, make_delta, read_header
from mrl_actors.models.load import weights_sha256
from mrl_actors.models.safetensors_io import load_buffer, read_tensors, write_state
from mrl_actors.models.transport_files import DirBlobs, MmapBlobs
from mrl_actors.models.weights import WeightsIO, state_bytes_hashed
from mrl_actors.models.weights_config import WeightsConfig
from mrl_actors.see.blobs import sha256_hex

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Tiny(torch.nn.Module):
    """Two dtypes, a tied weight and a buffer: what real state dicts hold."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = torch.nn.Embedding(50, 8)
        self.lin = torch.nn.Linear(8, 50, bias=True)
        self.lin.weight = self.emb.weight  # tied, as an LM head often is
        self.small = torch.nn.Parameter(torch.randn(3, 5, generator=g).to(torch.bfloat16))
        self.register_buffer("steps", torch.tensor([7], dtype=torch.int64))
        with torch.no_grad():
            self.emb.weight.copy_(torch.randn(50, 8, generator=g))
            self.lin.bias.copy_(torch.randn(50, generator=g))


def step(model: torch.nn.Module, lr: float = 1e-3, seed: int = 1) -> None:
    """AdamW's first step on every float weight: each moves by lr * sign(g)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_((torch.randn(p.shape, generator=g).sign() * lr).to(p.dtype))


# ------------------------------------------------------------------ safetensors_io


def test_write_state_is_standard_safetensors_and_hashed_in_one_pass() -> None:
    m = Tiny()
    buf, sha = write_state(m)
    assert sha == sha256_hex(buf)
    back = st_load(bytes(buf))
    for name, t in m.state_dict().items():
        assert torch.equal(back[name], t), name


def test_read_tensors_reads_what_safetensors_writes_and_loads_exactly() -> None:
    src, dst = Tiny(0), Tiny(5)
    data = st_save({k: v.clone() for k, v in src.state_dict().items()})
    load_buffer(dst, data)
    assert weights_sha256(dst) == weights_sha256(src)


def test_write_into_a_kept_buffer() -> None:
    m = Tiny()
    first, _ = write_state(m)
    step(m)
    again, sha = write_state(m, memoryview(first))
    assert sha == sha256_hex(first) and again is not None


def test_a_blob_that_does_not_fit_the_model_is_a_weights_error() -> None:
    m = Tiny()
    other = st_save({"emb.weight": torch.zeros(50, 8)})
    with pytest.raises(WeightsError, match="missing"):
        load_buffer(m, other)
    wrong = {k: v.clone() for k, v in m.state_dict().items()}
    wrong["lin.bias"] = torch.zeros(49)
    with pytest.raises(WeightsError, match=r"lin\.bias"):
        load_buffer(m, st_save(wrong))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_tensors_or_a_weights_error(data: bytes) -> None:
    with contextlib.suppress(WeightsError):
        read_tensors(data)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10**9), st.integers(0, 10**9), st.sampled_from(["F32", "BF16", "XX"]))
def test_forged_offsets_are_refused(begin: int, end: int, dtype: str) -> None:
    header = msgspec.json.encode(
        {"t": {"dtype": dtype, "shape": [2, 2], "data_offsets": [begin, end]}}
    )
    data = struct.pack("<Q", len(header)) + header + bytes(16)
    try:
        tensors = read_tensors(data)
    except WeightsError:
        return
    assert tensors["t"].numel() == 4  # only offsets that truly fit get through


# ------------------------------------------------------------------ delta


def test_delta_reconstructs_the_new_state_exactly_and_is_smaller() -> None:
    m = Tiny()
    base, base_sha = write_state(m)
    step(m)
    new, new_sha = write_state(m)
    delta = make_delta(base, new, base_sha, itemsize=4)
    assert delta is not None and len(delta) < len(new)
    assert sha256_hex(apply_delta(base, delta)) == new_sha


def test_an_unchanged_state_is_a_delta_of_no_pieces() -> None:
    m = Tiny()
    base, sha = write_state(m)
    header, _ = read_header(make_delta(base, bytes(base), sha) or b"")
    assert header.pieces == [] and header.base_sha256 == sha


def test_another_layout_gets_no_delta() -> None:
    a = st_save({"x": torch.zeros(4)})
    b = st_save({"y": torch.zeros(4)})
    assert make_delta(a, b, sha256_hex(a)) is None


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_a_garbled_delta_is_a_weights_error(junk: bytes) -> None:
    m = Tiny()
    base, sha = write_state(m)
    step(m)
    new, _ = write_state(m)
    delta = make_delta(base, new, sha) or b""
    for bad in (b"MRLDELTA" + junk, delta[:40] + junk + delta[40 + len(junk) :]):
        with contextlib.suppress(WeightsError):
            apply_delta(base, bad)


# ------------------------------------------------------------------ files


@pytest.mark.parametrize("kind", [DirBlobs, MmapBlobs])
async def test_file_stores_round_trip_and_catch_tampering(kind: Any, tmp_path: Path) -> None:
    store = kind(tmp_path / "w")
    data = np.random.default_rng(0).bytes(5 * 1024 * 1024 + 3)
    ref = await store.put(data, sha256=sha256_hex(data))
    assert ref.store == store.kind and ref.size == len(data)
    assert bytes(await store.get_buffer(ref)) == data
    assert await store.put(data) == ref  # a retried write changes nothing
    await store.put_raw(ref, data[:-1] + b"!")
    with pytest.raises(BlobIntegrityError):
        await store.get(ref)
    await store.delete(ref)
    assert not store.path(ref.key).exists()


async def test_a_writer_whose_hash_is_wrong_stores_nothing(tmp_path: Path) -> None:
    store = DirBlobs(tmp_path / "w")
    with pytest.raises(BlobIntegrityError):
        await store.put(b"abc", sha256=sha256_hex(b"abd"))
    assert not any(p.is_file() for p in (tmp_path / "w").rglob("*"))


# ------------------------------------------------------------------ WeightsIO


class FileLog:
    """What `WeightsIO` needs of a log: a run id and a blob store (here a directory)."""

    def __init__(self, root: Path) -> None:
        self.run = "r1"
        self.blobs = DirBlobs(root)


@pytest.mark.parametrize("store", ["dir", "mmap"])
async def test_delta_versions_every_k_load_exactly_and_retention_deletes(
    store: str, tmp_path: Path
) -> None:
    config = WeightsConfig(store=store, dir=str(tmp_path / "w"), full_every=3, keep=2)  # type: ignore[arg-type]
    log = FileLog(tmp_path / "log")
    writer = WeightsIO(log, config, policy="p")
    m = Tiny()
    events: dict[int, WeightsPublished] = {}
    for v in range(7):
        if v:
            step(m, seed=v)
        ev = await writer.publish(v, m, weights_sha256(m))
        assert decode(encode(ev)) == ev
        events[v] = ev
        await writer.retain(events, {})
    assert [e.base_version for e in events.values()] == [-1, 0, 0, -1, 3, 3, -1]
    assert all(e.state_sha256 for e in events.values())
    full = events[3].blob.size
    assert events[4].blob.size < full
    # a late joiner loads the newest version (full) and a delta (two blobs), each checked
    reader = WeightsIO(log, config, policy="p")
    for v in (5, 6):
        target = Tiny(9)
        await reader.load(events[v], target)
        assert weights_sha256(target) == events[v].weights_sha256
    # retention: versions 0, 5, 6 stay, and 3 (the base of 5); 1, 2, 4 are gone
    stored = {p.name for p in (tmp_path / "w").rglob("*") if p.is_file()}
    kept = {events[v].blob.key for v in (0, 3, 5, 6)}
    assert kept <= stored
    assert not {events[v].blob.key for v in (1, 2, 4)} & stored


async def test_a_delta_whose_reconstruction_is_wrong_is_refused(tmp_path: Path) -> None:
    config = WeightsConfig(store="dir", dir=str(tmp_path / "w"), full_every=2)
    writer = WeightsIO(FileLog(tmp_path / "log"), config, policy="p")
    m = Tiny()
    v0 = await writer.publish(0, m, weights_sha256(m))
    step(m)
    v1 = await writer.publish(1, m, weights_sha256(m))
    assert v1.base == v0.blob
    forged = msgspec.structs.replace(v1, state_sha256="0" * 64)
    with pytest.raises(WeightsError, match="delta"):
        await WeightsIO(FileLog(tmp_path / "log"), config).load(forged, Tiny())


def test_a_full_state_hash_comes_with_the_bytes() -> None:
    data, sha = state_bytes_hashed(Tiny())
    assert sha == sha256_hex(data)


def test_weights_table_checks_its_fields() -> None:
    with pytest.raises(ValueError, match="dir"):
        WeightsConfig(store="dir")
    with pytest.raises(ValueError, match="full_every"):
        WeightsConfig(full_every=0)


SPEC = '[run]\nname = "t"\n[[policies]]\nname = "a"\nmodel = "m"\n'


@pytest.mark.parametrize(
    ("table", "where"),
    [
        ('store = "dir"', "weights.dir"),
        ('store = "dir"\ndir = "shared/w"', "weights.dir"),
        ('store = "nfs"', "weights.store"),
        ("full_every = 0", "weights.full_every"),
        ("keep = -1", "weights.keep"),
        ("kept = 2", "weights.kept: unknown field"),
    ],
)
def test_a_bad_weights_table_is_refused_by_name(table: str, where: str) -> None:
    from mrl_actors.errors import ConfigError
    from mrl_actors.spec import parse_spec

    with pytest.raises(ConfigError) as err:
        parse_spec(SPEC + f"[weights]\n{table}\n", source="w.toml")
    assert str(err.value).startswith(f"w.toml: {where}"), str(err.value)


def test_the_weights_table_parses() -> None:
    from mrl_actors.spec import parse_spec

    spec = parse_spec(SPEC + '[weights]\nstore = "mmap"\nfull_every = 4\nkeep = 3\n')
    assert spec.weights == WeightsConfig(store="mmap", full_every=4, keep=3)
    assert parse_spec(SPEC).weights == WeightsConfig()


async def test_a_writer_that_also_loaded_a_version_still_names_its_deltas_base(
    tmp_path: Path,
) -> None:
    """Regression: a learner that loads its logged v0 (another host's start) and then
    publishes must not take its delta against what it read without naming that base."""
    config = WeightsConfig(store="dir", dir=str(tmp_path / "w"), full_every=2)
    log = FileLog(tmp_path / "log")
    m = Tiny()
    v0 = await WeightsIO(log, config, policy="p").publish(0, m, weights_sha256(m))
    restarted = WeightsIO(log, config, policy="p")
    await restarted.load(v0, m)
    step(m)
    v1 = await restarted.publish(1, m, weights_sha256(m))
    assert v1.base is None or v1.base == v0.blob
    target = Tiny(3)
    await WeightsIO(log, config).load(v1, target)
    assert weights_sha256(target) == v1.weights_sha256


@pytest.mark.parametrize("size", [0, 5, 16 * 1024 * 1024 + 3])
def test_a_fresh_buffer_is_zeroed_writable_and_exactly_its_size(size: int) -> None:
    from mrl_actors.see.blobs import fresh_buffer

    buf = fresh_buffer(size)
    view = memoryview(buf)
    assert len(view) == size and not view.readonly
    assert bytes(view) == bytes(size)
    if size:
        view[-1] = 7
        assert bytes(view[-1:]) == b"\x07"
