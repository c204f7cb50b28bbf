"""Delta versions: a weights version stored as what changed since the last full version.

One step of a policy moves most weights by a few units in their last place, so the XOR of the
new bytes with the base version's bytes is mostly zero bits in the high (sign, exponent, upper
mantissa) positions. A delta keeps, for each tensor whose bytes changed, that XOR compressed
with Blosc (byte shuffle, so equal-significance bytes of neighbouring values sit together,
then LZ4); a tensor that did not change costs nothing. A delta is always against the last
*full* version (never a chain of deltas), so any version loads from two blobs in bounded time,
and the reconstruction is exact: the XOR is lossless and the result is checked against the
full state's sha256 that the version's event carries.

Layout (every field checked on read, nothing unpickled):

    b"MRLDELTA" | u64 LE header length | msgpack header | compressed pieces

header: the base version's full-state sha256 and size, and per changed piece its byte range in
the full state and its range in the delta. The full state's safetensors header must be the
base's (same names, dtypes, shapes); when it is not, the writer stores a full version instead.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import msgspec
import numpy as np

from mrl_actors.errors import WeightsError

MAGIC = b"MRLDELTA"
PIECE_BYTES = 64 * 1024 * 1024  # XOR and compress in pieces: bounded scratch memory, Blosc's limit
_MAX_HEADER = 64 * 1024 * 1024


class Piece(msgspec.Struct, frozen=True, array_like=True):
    begin: int  # byte range in the full state
    end: int
    offset: int  # byte range of its compressed XOR in the delta blob, after the header
    length: int


class DeltaHeader(msgspec.Struct, frozen=True, kw_only=True):
    base_sha256: str  # sha256 of the base version's full safetensors bytes
    size: int  # bytes of the full state (the base's size: same layout)
    itemsize: int  # the shuffle's element size (the state's widest dtype, 2 or 4)
    pieces: list[Piece]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(DeltaHeader)


def _codec(itemsize: int) -> Any:
    from numcodecs import Blosc

    return Blosc(cname="lz4", clevel=1, shuffle=Blosc.SHUFFLE, blocksize=0), itemsize


def _words(view: memoryview, itemsize: int) -> np.ndarray:
    dtype = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[itemsize]
    if len(view) % itemsize:
        return np.frombuffer(view, dtype=np.uint8)
    return np.frombuffer(view, dtype=dtype)


def make_delta(base: Any, new: Any, base_sha256: str, *, itemsize: int = 4) -> bytes | None:
    """The delta taking `base` (full safetensors bytes) to `new` (same layout), or None when
    the layouts differ or the delta would be no smaller than `new` itself."""
    b, n = memoryview(base).cast("B"), memoryview(new).cast("B")
    if len(b) != len(n) or len(b) < 8:
        return None
    (hlen,) = struct.unpack("<Q", n[:8])
    if 8 + hlen > len(n) or b[: 8 + hlen] != n[: 8 + hlen]:
        return None  # another layout (a tensor added, a shape changed): a full version
    codec, _ = _codec(itemsize)
    pieces: list[Piece] = []
    blobs: list[bytes] = []
    offset = 0
    start = 8 + hlen
    for begin in range(start, len(n), PIECE_BYTES):
        end = min(begin + PIECE_BYTES, len(n))
        x = np.bitwise_xor(_words(b[begin:end], itemsize), _words(n[begin:end], itemsize))
        if not x.any():
            continue  # unchanged bytes cost nothing
        z = bytes(codec.encode(x))  # [piece bytes] -> compressed XOR
        pieces.append(Piece(begin=begin, end=end, offset=offset, length=len(z)))
        blobs.append(z)
        offset += len(z)
    head = _encoder.encode(
        DeltaHeader(base_sha256=base_sha256, size=len(n), itemsize=itemsize, pieces=pieces)
    )
    total = len(MAGIC) + 8 + len(head) + offset
    if total >= len(n):
        return None
    return b"".join([MAGIC, struct.pack("<Q", len(head)), head, *blobs])


def is_delta(data: Any) -> bool:
    return bytes(memoryview(data)[: len(MAGIC)]) == MAGIC


def read_header(delta: Any) -> tuple[DeltaHeader, int]:
    """The delta's header and where its pieces start; any malformed field is a `WeightsError`."""
    d = memoryview(delta).cast("B")
    if len(d) < len(MAGIC) + 8 or not is_delta(d):
        raise WeightsError("weights delta does not start with its magic bytes")
    (hlen,) = struct.unpack("<Q", d[len(MAGIC) : len(MAGIC) + 8])
    start = len(MAGIC) + 8 + hlen
    if hlen > _MAX_HEADER or start > len(d):
        raise WeightsError(f"weights delta header of {hlen} bytes does not fit its blob")
    try:
        header = _decoder.decode(d[len(MAGIC) + 8 : start])
    except (msgspec.DecodeError, UnicodeDecodeError, ValueError) as exc:
        raise WeightsError(f"weights delta header is malformed: {exc}") from exc
    if header.itemsize not in (1, 2, 4, 8):
        raise WeightsError(f"weights delta itemsize {header.itemsize} is not 1, 2, 4 or 8")
    room = len(d) - start
    last = 0
    for p in header.pieces:
        if not (last <= p.begin < p.end <= header.size and p.end - p.begin <= PIECE_BYTES):
            raise WeightsError(f"weights delta piece {p.begin}..{p.end} is out of order or range")
        if not (p.offset >= 0 and p.offset + p.length <= room and p.length >= 0):
            raise WeightsError(f"weights delta piece at {p.offset} overruns the blob")
        last = p.end
    return header, start


def apply_delta(base: Any, delta: Any, out: memoryview | None = None) -> bytearray | memoryview:
    """The full state: `base` with the delta's pieces XORed in (into `out` when given)."""
    header, start = read_header(delta)
    b = memoryview(base).cast("B")
    if len(b) != header.size:
        raise WeightsError(f"weights delta is for a {header.size}-byte base, not {len(b)} bytes")
    buf: bytearray | memoryview = bytearray(header.size) if out is None else out
    o = memoryview(buf).cast("B")
    if len(o) != header.size:
        raise WeightsError(f"buffer of {len(o)} bytes for a {header.size}-byte state")
    o[:] = b
    d = memoryview(delta).cast("B")
    codec, itemsize = _codec(header.itemsize)
    for p in header.pieces:
        x = _words(b[p.begin : p.end], itemsize)
        z = d[start + p.offset : start + p.offset + p.length]
        try:
            raw = np.frombuffer(codec.decode(z), dtype=x.dtype)
        except Exception as exc:  # Blosc raises RuntimeError on bad bytes: say where
            raise WeightsError(f"weights delta piece {p.begin}..{p.end} does not decode") from exc
        if raw.nbytes != p.end - p.begin:
            raise WeightsError(f"weights delta piece {p.begin}..{p.end} decodes to {raw.nbytes}")
        np.bitwise_xor(x, raw, out=_words(o[p.begin : p.end], itemsize))
    return buf


def sha256_of(data: Any) -> str:
    return hashlib.sha256(memoryview(data).cast("B")).hexdigest()
