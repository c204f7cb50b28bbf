"""Weights transports side by side: put, get and load-into-a-model, against a plain file.

    python tools/bench_weights.py                      # 64 MiB, 512 MiB, 2 GiB; deltas
    python tools/bench_weights.py --sizes 64,512 --repeats 3 --no-real-delta

For each state size (bf16 tensors; 2 GiB is a 1B-parameter state) and each transport of
`[weights] store` (the run's JetStream object store through an embedded nats-server, a
directory, a memory map), in one run, interleaved (file, object, dir, mmap, then again) so that
a machine busy with other work slows all of them alike:

- file: write + fsync the same bytes to a file on the same disk, then read them back into a
  fresh buffer (the baseline, as the issue measured it: `rt` is both together);
- put: the store's write of the safetensors bytes (sha256 checked in the same pass);
- get: the store's read into one fresh buffer (sha256 checked in the same pass);
- load: the bytes into a model of that state's shape (each tensor copied once).

Then the ratio of every get to the file baseline, and each transport's growth in seconds per
byte from the smallest to the largest size. Last, the bytes of a delta version after one
optimizer step: the toy pair's two policies (a real AdamW step on a language-model loss) and a
real-shape 0.5B model (Qwen1.5-0.5B's shape, float32, AdamW's first step: every weight moves
by lr·sign(g), applied with random signs). Medians of `--repeats`; the temporary files and the
server's store live under `--dir` and are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from mrl_actors.models.safetensors_io import load_buffer, write_state  # noqa: E402
from mrl_actors.models.transport_files import DirBlobs, MmapBlobs  # noqa: E402

MiB = 1024 * 1024
TENSOR = 32 * MiB  # bytes per tensor of the synthetic states (an MLP matrix of a 1B model)


class State(torch.nn.Module):
    """A bf16 state of `size` bytes in tensors of 32 MiB (2 GiB: 1.07e9 parameters)."""

    def __init__(self, size: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        n = max(1, size // TENSOR)
        per = size // n // 2  # bf16 elements per tensor
        self.ws = torch.nn.ParameterList(
            torch.nn.Parameter(
                torch.randint(-(2**15), 2**15, (per,), generator=g, dtype=torch.int16).view(
                    torch.bfloat16
                ),
                requires_grad=False,
            )
            for _ in range(n)
        )


def file_baseline(data: Any, path: Path) -> tuple[float, float]:
    """Seconds to write+fsync `data` to `path`, and to read it back into a fresh buffer."""
    view = memoryview(data)
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for off in range(0, len(view), 16 * MiB):
            os.write(fd, view[off : off + 16 * MiB])
        os.fsync(fd)
    finally:
        os.close(fd)
    t1 = time.perf_counter()
    buf = bytearray(len(view))
    out = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        got = 0
        while got < len(out):
            n = f.readinto(out[got : got + 16 * MiB])
            if not n:
                break
            got += n
    t2 = time.perf_counter()
    path.unlink()
    return t1 - t0, t2 - t1


async def one_size(size: int, repeats: int, work: Path, obj: Any) -> dict[str, dict[str, float]]:
    model = State(size)
    data, sha = write_state(model)
    stores: dict[str, Any] = {
        "object": obj,
        "dir": DirBlobs(work / "dir"),
        "mmap": MmapBlobs(work / "mmap"),
    }
    times: dict[str, dict[str, list[float]]] = {
        k: {"put": [], "get": [], "load": []} for k in stores
    }
    times["file"] = {"write": [], "read": []}
    for _ in range(repeats):
        w, r = file_baseline(data, work / "baseline.bin")
        times["file"]["write"].append(w)
        times["file"]["read"].append(r)
        for name, store in stores.items():
            t0 = time.perf_counter()
            ref = await store.put(data, sha256=sha, writer="bench")
            t1 = time.perf_counter()
            got = await store.get_buffer(ref)
            t2 = time.perf_counter()
            load_buffer(model, got)
            t3 = time.perf_counter()
            times[name]["put"].append(t1 - t0)
            times[name]["get"].append(t2 - t1)
            times[name]["load"].append(t3 - t2)
            del got
            gc.collect()
            await _delete(store, ref)
    del data, model
    gc.collect()
    return {k: {op: statistics.median(v) for op, v in ops.items()} for k, ops in times.items()} | {
        "_spread": {
            f"{k}.{op}": (max(v) - min(v)) / statistics.median(v) if len(v) > 1 else 0.0
            for k, ops in times.items()
            for op, v in ops.items()
        }
    }


async def reader_cpu(obj: Any, size: int, repeats: int) -> dict[str, tuple[float, float]]:
    """The object store's socket reader against nats-py's subscription on one blob: wall and
    CPU seconds of this process (the server's CPU is not counted in either)."""
    data = os.urandom(size)
    ref = await obj.put(data, writer="bench")
    runs: dict[str, list[tuple[float, float]]] = {"socket (default)": [], "nats-py": []}
    for _ in range(repeats):
        for name, fast in (("socket (default)", True), ("nats-py", False)):
            obj.fast = fast
            c0, t0 = time.process_time(), time.perf_counter()
            got = await obj.get_buffer(ref)
            runs[name].append((time.perf_counter() - t0, time.process_time() - c0))
            del got
    obj.fast = True
    await obj.delete(ref)
    return {
        k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
        for k, v in runs.items()
    }


async def _delete(store: Any, ref: Any) -> None:
    await store.delete(ref)


def rate(size: int, s: float) -> str:
    return f"{size / MiB / s:8.0f}" if s > 0 else "       -"


async def transports(sizes: list[int], repeats: int, work: Path) -> None:
    from mrl_actors.see.blobs import ObjectStoreBlobs
    from mrl_actors.see.connection import connect
    from mrl_actors.see.server import EmbeddedServer

    srv = EmbeddedServer(work / "nats")
    await srv.start()
    results: dict[int, dict[str, dict[str, float]]] = {}
    try:
        nc = await connect(srv.client())
        js = nc.jetstream(timeout=120)
        obj = ObjectStoreBlobs(js, "bench", timeout_s=120, create=True)  # admin: makes the bucket
        for size in sizes:
            results[size] = await one_size(size, repeats, work, obj)
            print(f"  ... {size // MiB} MiB done", file=sys.stderr, flush=True)
        readers = await reader_cpu(obj, min(sizes), repeats)
        await nc.close()
    finally:
        await srv.stop()
    print("\nMiB/s (median of", repeats, "runs, interleaved; spread = (max-min)/median)")
    head = "| state | transport | put | get | load | file write+fsync | file read | file rt |"
    print(head)
    print("|---|---|---|---|---|---|---|---|")
    for size, res in results.items():
        f = res["file"]
        for k in ("object", "dir", "mmap"):
            r = res[k]
            print(
                f"| {size // MiB} MiB | {k} | {rate(size, r['put'])} | {rate(size, r['get'])} | "
                f"{rate(size, r['load'])} | {rate(size, f['write'])} | {rate(size, f['read'])} | "
                f"{rate(size, f['write'] + f['read'])} |"
            )
    print("\nget against the file baseline (x: get rate / baseline rate; >= 0.8 is the target)")
    print("| state | transport | get / file rt | get / file read | spread of get |")
    print("|---|---|---|---|---|")
    for size, res in results.items():
        f = res["file"]
        for k in ("object", "dir", "mmap"):
            g = res[k]["get"]
            print(
                f"| {size // MiB} MiB | {k} | {(f['write'] + f['read']) / g:5.2f} | "
                f"{f['read'] / g:5.2f} | {res['_spread'][f'{k}.get']:.2f} |"
            )
    print(f"\nobject-store get of {min(sizes) // MiB} MiB by reader (interleaved, medians)")
    print("| reader | MiB/s | MiB per CPU-second of this process |")
    print("|---|---|---|")
    for name, (wall, cpu) in readers.items():
        print(f"| {name} | {rate(min(sizes), wall)} | {rate(min(sizes), cpu)} |")
    lo, hi = min(results), max(results)
    print(f"\nseconds per byte, {hi // MiB} MiB against {lo // MiB} MiB (<= +20% is the target)")
    print("| transport | put | get | load |")
    print("|---|---|---|---|")
    for k in ("object", "dir", "mmap", "file"):
        ops = ("put", "get", "load") if k != "file" else ("write", "read")
        cells = []
        for op in ops:
            a = results[lo][k][op] / lo
            b = results[hi][k][op] / hi
            cells.append(f"{(b / a - 1) * 100:+.0f}% ({op})")
        print(f"| {k} | " + " | ".join(cells) + " |")


# ------------------------------------------------------------------ deltas


def first_adamw_step(model: Any, lr: float, seed: int = 0) -> None:
    """AdamW's first step: m/sqrt(v) is sign(g), so every weight moves by lr·sign(g)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            sign = torch.randint(0, 2, p.shape, generator=g, dtype=torch.int8) * 2 - 1
            p.sub_(lr * sign.to(p.dtype))


def delta_bytes(model: Any, step: Any, itemsize: int) -> tuple[int, int, float]:
    """(full bytes, delta bytes, seconds to make the delta) after `step(model)`."""
    from mrl_actors.models.delta import apply_delta, make_delta
    from mrl_actors.see.blobs import sha256_hex

    base, base_sha = write_state(model)
    step(model)
    new, new_sha = write_state(model)
    t0 = time.perf_counter()
    delta = make_delta(base, new, base_sha, itemsize=itemsize)
    t1 = time.perf_counter()
    if delta is None:
        return len(new), len(new), t1 - t0
    assert sha256_hex(apply_delta(base, delta)) == new_sha  # exact
    return len(new), len(delta), t1 - t0


def toy_pair_deltas() -> list[tuple[str, int, int, float]]:
    from mrl_actors.models.builtin import builtin_dir
    from mrl_actors.models.load import build_tiny

    out = []
    for name in ("builtin:gpt2-bpe", "builtin:llama-sp"):
        model, _ = build_tiny(builtin_dir(name), hidden_size=64, layers=2, heads=4)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=5e-4)  # the toy pair's lr

        def step(m: Any, opt: Any = opt) -> None:
            ids = torch.randint(0, m.config.vocab_size, (8, 24), generator=torch.Generator())
            m(input_ids=ids, labels=ids).loss.backward()
            opt.step()

        out.append((name, *delta_bytes(model, step, 4)))
    return out


def qwen_05b_delta(lr: float) -> tuple[str, int, int, float]:
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(str(ROOT.parent / "shared" / "models" / "qwen1.5-1.8b"))
    cfg.update(  # Qwen1.5-0.5B's shape
        {
            "hidden_size": 1024,
            "intermediate_size": 2816,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "num_key_value_heads": 16,
            "tie_word_embeddings": True,
        }
    )
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    n = sum(p.numel() for p in model.parameters())
    full, delta, secs = delta_bytes(model, lambda m: first_adamw_step(m, lr), 4)
    return f"Qwen1.5-0.5B shape ({n / 1e6:.0f}M, fp32, lr {lr:g})", full, delta, secs


def deltas(real: bool, lr: float) -> None:
    rows = toy_pair_deltas()
    if real:
        gc.collect()
        rows.append(qwen_05b_delta(lr))
    print("\ndelta version after one optimizer step (XOR against the full version, LZ4)")
    print("| model | full bytes | delta bytes | delta / full | make delta |")
    print("|---|---|---|---|---|")
    for name, full, delta, secs in rows:
        print(f"| {name} | {full:,} | {delta:,} | {delta / full:.3f} | {secs:.2f} s |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="64,512,2048", help="state sizes in MiB")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where temporary files go")
    parser.add_argument("--no-real-delta", action="store_true", help="skip the 0.5B delta")
    parser.add_argument("--no-transports", action="store_true", help="only the deltas")
    parser.add_argument("--lr", type=float, default=1e-6, help="the 0.5B step's lr (GRPO's)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    work = Path(tempfile.mkdtemp(prefix="bench-weights-", dir=args.dir))
    try:
        if not args.no_transports:
            sizes = [int(s) * MiB for s in args.sizes.split(",")]
            asyncio.run(transports(sizes, args.repeats, work))
        deltas(not args.no_real_delta, args.lr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
