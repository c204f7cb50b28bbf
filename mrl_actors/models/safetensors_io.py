"""A model's state as safetensors bytes in one buffer, written and read without extra copies.

`safetensors.torch.save` builds the file in memory and `load` wants `bytes`, so a 2 GiB state
costs two or three copies each way. Here the layout (an 8-byte header length, a JSON header,
then every tensor's bytes) is computed first, each tensor is copied once into a preallocated
buffer (hashed in the same pass), and reading returns tensors that are views into the buffer
(a bytearray, or a read-only memory map shared by every reader on a host), which
`load_into` copies straight into the model's parameters. The bytes are standard safetensors:
`safetensors.torch.load` reads what `write_state` writes, and the other way round.

Readers take any bytes: the header is bounded, every offset is checked against the buffer and
against the tensor's dtype and shape, and nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import warnings
from typing import Any

from mrl_actors.errors import WeightsError

MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own bound on the JSON header

# safetensors dtype names -> torch dtype attribute names (bytes per element from torch)
_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
}
_NAMES = {v: k for k, v in _DTYPES.items()}


def _torch_dtype(name: str) -> Any:
    import torch

    if name not in _DTYPES:
        raise WeightsError(f"safetensors dtype {name!r} is not one of {sorted(_DTYPES)}")
    return getattr(torch, _DTYPES[name])


def state_tensors(model: Any) -> dict[str, Any]:
    """The model's state dict as detached CPU tensors, in name order (tied ones twice)."""
    return {k: t.detach() for k, t in sorted(model.state_dict().items())}


def header_for(tensors: dict[str, Any]) -> tuple[bytes, dict[str, tuple[int, int]]]:
    """The safetensors header (length prefix included, padded to 8 bytes) and each tensor's
    `(begin, end)` in the data section."""
    meta: dict[str, Any] = {}
    spans: dict[str, tuple[int, int]] = {}
    off = 0
    for name, t in tensors.items():
        dtype = str(t.dtype).removeprefix("torch.")
        if dtype not in _NAMES:
            raise WeightsError(f"tensor {name}: dtype {t.dtype} has no safetensors name")
        n = t.numel() * t.element_size()
        meta[name] = {
            "dtype": _NAMES[dtype],
            "shape": list(t.shape),
            "data_offsets": [off, off + n],
        }
        spans[name] = (off, off + n)
        off += n
    text = json.dumps(meta, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads the header so tensor data is aligned
    return struct.pack("<Q", len(text)) + text, spans


def state_size(model: Any) -> int:
    header, spans = header_for(state_tensors(model))
    return len(header) + (max(e for _, e in spans.values()) if spans else 0)


def write_state(model: Any, out: memoryview | None = None) -> tuple[bytearray | memoryview, str]:
    """The model's state as safetensors bytes and their sha256, in one pass over the tensors.

    `out` (exactly `state_size(model)` bytes: a buffer kept across versions, or a memory map
    of the file being written) is filled in place; without it a bytearray is allocated.
    """
    tensors = state_tensors(model)
    header, spans = header_for(tensors)
    size = len(header) + (max(e for _, e in spans.values()) if spans else 0)
    buf: bytearray | memoryview = bytearray(size) if out is None else out
    view = memoryview(buf)
    if len(view) != size:
        raise WeightsError(f"state buffer has {len(view)} bytes, the state needs {size}")
    h = hashlib.sha256()
    view[: len(header)] = header
    h.update(header)
    base = len(header)
    for name, t in tensors.items():
        begin, end = spans[name]
        if end > begin:
            dst = view[base + begin : base + end]
            _as_bytes(t, dst)
            h.update(dst)
    return buf, h.hexdigest()


def _as_bytes(t: Any, dst: memoryview) -> None:
    """Copy tensor `t` (any device) into `dst` as its little-endian bytes."""
    import torch

    target = torch.frombuffer(dst, dtype=torch.uint8)  # [nbytes], writes into dst
    src = t.contiguous()
    if src.device.type != "cpu":
        src = src.to("cpu")
    target.copy_(src.reshape(-1).view(torch.uint8))


def parse_header(data: memoryview) -> tuple[int, dict[str, tuple[str, list[int], int, int]]]:
    """Where the data section starts, and name -> (dtype, shape, begin, end) within it; every
    field checked against the buffer (a bad header is a `WeightsError`, never a crash)."""
    if len(data) < 8:
        raise WeightsError(f"weights blob of {len(data)} bytes has no safetensors header")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER_BYTES or 8 + n > len(data):
        raise WeightsError(f"safetensors header of {n} bytes does not fit a {len(data)}-byte blob")
    try:
        meta = json.loads(bytes(data[8 : 8 + n]))
    except ValueError as exc:
        raise WeightsError(f"safetensors header is not JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise WeightsError("safetensors header is not a JSON object")
    start = 8 + n
    room = len(data) - start
    out: dict[str, tuple[str, list[int], int, int]] = {}
    for name, entry in meta.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            ok = (
                isinstance(dtype, str)
                and isinstance(shape, list)
                and all(isinstance(d, int) and d >= 0 for d in shape)
                and isinstance(begin, int)
                and isinstance(end, int)
            )
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise WeightsError(f"safetensors header entry {name!r} is malformed: {entry!r:.200}")
        itemsize = _torch_dtype(dtype).itemsize
        if not 0 <= begin <= end <= room or end - begin != math.prod(shape) * itemsize:
            raise WeightsError(
                f"tensor {name!r}: offsets {begin}..{end} do not hold {dtype}{shape} within "
                f"the blob's {room} data bytes"
            )
        out[name] = (dtype, shape, begin, end)
    return start, out


def read_tensors(data: Any) -> dict[str, Any]:
    """Tensors viewing `data` (safetensors bytes: bytes, bytearray, mmap, memoryview).

    Views, not copies: they live as long as `data` and are read-only in spirit (a read-only
    buffer gives tensors that must not be written; torch warns, which is silenced here).
    """
    import torch

    view = memoryview(data).cast("B") if memoryview(data).format != "B" else memoryview(data)
    start, entries = parse_header(view)
    out = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not writable.*")
        warnings.filterwarnings("ignore", message=".*non-writable.*")
        for name, (dtype, shape, begin, end) in entries.items():
            dt = _torch_dtype(dtype)
            if end == begin:
                out[name] = torch.empty(shape, dtype=dt)
            else:
                t = torch.frombuffer(
                    view, dtype=dt, count=(end - begin) // dt.itemsize, offset=start + begin
                )
                out[name] = t.view(shape)
    return out


def load_into(model: Any, tensors: dict[str, Any]) -> None:
    """Copy `tensors` into `model`'s own parameters and buffers: every name the model has, no
    more and no fewer, each of its shape (dtype converted as `copy_` does)."""
    import torch

    state = model.state_dict()
    missing = sorted(set(state) - set(tensors))
    extra = sorted(set(tensors) - set(state))
    if missing or extra:
        raise WeightsError(
            f"weights blob does not fit the model: missing {missing[:5]}, unexpected {extra[:5]}"
        )
    for name, dst in state.items():
        src = tensors[name]
        if tuple(src.shape) != tuple(dst.shape):
            raise WeightsError(
                f"weights blob does not fit the model: {name} is {tuple(src.shape)} in the "
                f"blob, {tuple(dst.shape)} in the model"
            )
    with torch.no_grad():
        for name, dst in state.items():
            dst.copy_(tensors[name])


def load_buffer(model: Any, data: Any) -> None:
    """Load safetensors bytes (any buffer) into `model`, copying each tensor once."""
    load_into(model, read_tensors(data))
