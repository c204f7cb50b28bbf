"""What `mrl log tail|stats|export` do, apart from argument parsing and printing.

Field predicates (`--where 'reward>0.5'`) look a field up in the event's JSON form: a dotted path
from the top (`completions.reward`), or a bare name found anywhere inside (`reward` matches each
completion's reward); a predicate holds when any value found satisfies it. `kind`, `source`,
`seq` and `type` are always available.

These are read-only tools that meet whatever the log holds: a message that does not decode, or is
not valid on its subject, is counted and named in one warning line (seq, subject, reason), and
dead-lettered on `mrl.<run>.deadletter.mrl-log` when the tool may write (best effort, never
fatal; `tool_dead_letters`). Subjects of any shape are accepted.
"""

from __future__ import annotations

import datetime as dt
import operator
import re
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mrl_actors.errors import ConfigError, EventDecodeError
from mrl_actors.events import (
    _PACKED,
    AnyEvent,
    BlobPointer,
    DeadLettered,
    RolloutGroupCompleted,
    decode,
    json_schema,
    to_builtins,
    unpack_i32,
)
from mrl_actors.see.deadletter import DeadLetters, error_kind
from mrl_actors.see.port import LogPort
from mrl_actors.see.record import Record

TOOL_READER = "mrl-log"  # the dead-letter source of `mrl log` reads


def tool_dead_letters(log: LogPort, reader: str = TOOL_READER) -> DeadLetters:
    """Bad messages met by a read-only tool: counted, warned, dead-lettered if it may write."""
    return DeadLetters(log, reader, best_effort=True)


def kind_source(subject: str) -> tuple[str, str]:
    """(kind, source) of `<prefix>.<run>.<kind>.<source>`; any other shape gives what it has."""
    parts = subject.split(".", 3)
    kind = parts[2] if len(parts) > 2 else "?"
    source = parts[3] if len(parts) > 3 else ""
    return kind, source


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "!=": operator.ne,
    "==": operator.eq,
    "=": operator.eq,
    ">": operator.gt,
    "<": operator.lt,
    "~": lambda a, b: re.search(str(b), str(a)) is not None,
}
_WHERE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|!=|==|=|>|<|~)\s*(.+?)\s*$")


def _literal(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text.strip("'\"")


@dataclass(frozen=True)
class Predicate:
    path: str
    op: str
    value: Any

    def __call__(self, obj: dict[str, Any]) -> bool:
        compare = _OPS[self.op]
        for found in values_at(obj, self.path):
            try:
                if compare(found, self.value):
                    return True
            except TypeError:
                continue
        return False


def parse_where(expr: str) -> Predicate:
    m = _WHERE.match(expr)
    if not m:
        raise ConfigError(
            f"--where {expr!r}: expected FIELD OP VALUE with OP one of >= <= != == > < ~"
        )
    return Predicate(m.group(1), m.group(2), _literal(m.group(3)))


def values_at(obj: Any, path: str) -> list[Any]:
    """Every value at a dotted path (lists fan out); a bare name is also searched for inside."""
    parts = path.split(".")
    found = _walk(obj, parts)
    if not found and len(parts) == 1:
        found = list(_search(obj, parts[0]))
    return found


def _walk(obj: Any, parts: list[str]) -> list[Any]:
    if not parts:
        return [obj]
    if isinstance(obj, list):
        return [v for item in obj for v in _walk(item, parts)]
    if isinstance(obj, dict) and parts[0] in obj:
        return _walk(obj[parts[0]], parts[1:])
    return []


def _search(obj: Any, key: str) -> Iterable[Any]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key:
                yield v
            else:
                yield from _search(v, key)
    elif isinstance(obj, list):
        for item in obj:
            yield from _search(item, key)


def record_json(rec: Record[AnyEvent]) -> dict[str, Any]:
    """The JSON-lines form of a record (`mrl log tail --json`, `mrl log export`)."""
    kind, source = kind_source(rec.subject)
    return {
        "seq": rec.seq,
        "time": _iso(rec.time_ns),
        "kind": kind,
        "source": source,
        "event": to_builtins(rec.event),
    }


def matches(rec: Record[AnyEvent], obj: dict[str, Any], where: list[Predicate]) -> bool:
    if not where:
        return True
    flat = {**obj["event"], "seq": rec.seq, "kind": obj["kind"], "source": obj["source"]}
    return all(p(flat) for p in where)


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat(timespec="milliseconds")


def line(rec: Record[AnyEvent]) -> str:
    """One readable line: seq, time, kind.source, type and a short summary."""
    ev = rec.event
    kind, source = kind_source(rec.subject)
    head = f"{rec.seq:>8}  {_iso(rec.time_ns)[11:23]}  {kind}.{source:<12} {type(ev).__name__}"
    if isinstance(ev, RolloutGroupCompleted):
        r = ev.rewards_array()
        toks = sum(len(c.token_ids) // 4 for c in ev.completions)
        body = (
            f"v{ev.policy_version} prompt={ev.prompt_id} G={len(ev.completions)} "
            f"tokens={toks} reward_mean={float(r.mean()) if r.size else 0:.3f} "
            f"successes={sum(c.success for c in ev.completions)}"
        )
    elif isinstance(ev, DeadLettered):
        body = f"seq={ev.original_seq} {ev.original_subject} {ev.error}: {ev.reason[:80]}"
    else:
        obj = to_builtins(ev)
        skip = {"type", "run", "source", "event_id", "time_ns"}
        parts = []
        for k, v in obj.items():
            if k in skip:
                continue
            text = repr(v) if isinstance(v, str) else str(v)
            parts.append(f"{k}={text if len(text) <= 40 else text[:37] + '...'}")
        body = " ".join(parts)
    return f"{head}  {body}"[:240]


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """`10m`, `2h`, `30s`, `1d` ago, or an ISO time (UTC when no zone is given)."""
    now = now or dt.datetime.now(dt.UTC)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if m:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return now - dt.timedelta(seconds=float(m.group(1)) * unit)
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"--since {text!r}: use 10m, 2h, 1d or an ISO time") from exc
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


# --------------------------------------------------------------------------- stats


@dataclass
class Row:
    count: int = 0
    bytes: int = 0
    first_ns: int = 0
    last_ns: int = 0

    def add(self, size: int, t: int) -> None:
        self.count += 1
        self.bytes += size
        self.first_ns = t if not self.first_ns else min(self.first_ns, t)
        self.last_ns = max(self.last_ns, t)

    @property
    def rate(self) -> float:
        span = (self.last_ns - self.first_ns) / 1e9
        return self.count / span if span > 0 else 0.0


@dataclass
class Stats:
    rows: dict[tuple[str, str], Row] = field(default_factory=lambda: defaultdict(Row))
    dead_by_error: Counter[str] = field(default_factory=Counter)
    dead_by_consumer: Counter[str] = field(default_factory=Counter)
    undecodable: int = 0  # messages that are not a valid event on their subject
    bad_by_error: Counter[str] = field(default_factory=Counter)
    total: Row = field(default_factory=Row)


async def stats(log: LogPort, dead: DeadLetters | None = None) -> Stats:
    """Counts, bytes and rates per (kind, source), dead letters by error and consumer, and the
    messages that are not valid events (each also goes to `dead`).

    Every message is decoded (blob pointers are not followed: their payload is counted as
    stored) and checked against its subject, as a reader of that subject would.
    """
    out = Stats()
    dead = dead or tool_dead_letters(log)
    async for seq, subject, data, t in log.read_raw():
        kind, source = kind_source(subject)
        out.rows[(kind, source)].add(len(data), t)
        out.total.add(len(data), t)
        try:
            ev = decode(data, max_bytes=log.config.max_event_bytes)
            kind_of = ev.KIND
            if isinstance(ev, BlobPointer):  # stored on the subject of the event it stands for
                kind_of = ev.kind
                if ev.ref.size > log.config.max_event_bytes:
                    raise _error("oversized", f"seq {seq}: blob of {ev.ref.size} bytes")
                if ev.ref.key != ev.ref.sha256 or not re.fullmatch(r"[0-9a-f]{64}", ev.ref.key):
                    raise _error("schema", f"seq {seq}: blob key {ev.ref.key[:80]!r}")
            if subject != f"{log.config.prefix}.{ev.run}.{kind_of}.{ev.source}":
                raise _error("schema", f"seq {seq}: {type(ev).__name__} on {subject}")
        except EventDecodeError as exc:
            out.undecodable += 1
            out.bad_by_error[error_kind(exc)] += 1
            await dead.add(seq, subject, data, exc)
            continue
        if isinstance(ev, DeadLettered):
            out.dead_by_error[ev.error] += 1
            out.dead_by_consumer[ev.source] += 1
    return out


def _error(kind: str, message: str) -> EventDecodeError:
    err = EventDecodeError(message)
    err.kind = kind  # type: ignore[attr-defined]
    return err


# --------------------------------------------------------------------------- export


def export_json_schema() -> dict[str, Any]:
    """JSON Schema of one line of `events.jsonl` (`schemas/export.schema.json`).

    The wire schema (`schemas/events.schema.json`) says what msgspec writes to the log; the
    export is its JSON form (`record_json`), which differs in two ways only: packed arrays
    (`token_ids`, `prompt_token_ids`, `logprobs`, `rewards`) are lists of numbers, and any other
    bytes field is a hex string. A float that is NaN or infinite (a metric, say; JSON has no such
    numbers) is written as null; packed arrays are checked finite when an event is made. Each line
    wraps the event in its record's `seq`, `time`, `kind` and `source`. Derived from the wire
    schema, so the two cannot drift apart.
    """
    import copy

    def nullable_floats(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "number":
                node["type"] = ["number", "null"]
            for v in node.values():
                nullable_floats(v)
        elif isinstance(node, list):
            for v in node:
                nullable_floats(v)

    wire = json_schema()
    defs = copy.deepcopy(wire["$defs"])
    nullable_floats(defs)
    for d in defs.values():
        for name, prop in d.get("properties", {}).items():
            if prop.get("contentEncoding") != "base64":
                continue
            doc = {k: v for k, v in prop.items() if k == "description"}
            if name in _PACKED:
                item = "integer" if _PACKED[name] is unpack_i32 else "number"
                packed = {"type": "array", "items": {"type": item}}
                d["properties"][name] = (
                    doc | packed | ({"default": []} if "default" in prop else {})
                )
            else:
                hexed = {"type": "string", "pattern": "^([0-9a-f]{2})*$"}
                d["properties"][name] = doc | hexed | ({"default": ""} if "default" in prop else {})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "ExportedEvent",
        "description": "One line of `mrl log export`'s events.jsonl (and `mrl log tail --json`).",
        "type": "object",
        "properties": {
            "seq": {"type": "integer", "minimum": 1, "description": "stream sequence"},
            "time": {"type": "string", "format": "date-time", "description": "stored at (UTC)"},
            "kind": {"type": "string", "description": "subject token: the event's KIND"},
            "source": {"type": "string", "description": "subject token: who wrote it"},
            "event": {k: v for k, v in wire.items() if k != "$defs"},
        },
        "required": ["seq", "time", "kind", "source", "event"],
        "additionalProperties": False,
        "$defs": defs,
    }


async def export(
    records: AsyncIterator[Record[AnyEvent]], out: Path, *, where: list[Predicate] | None = None
) -> dict[str, int]:
    """`out/events.jsonl` (every record) and `out/rollouts.zarr` (token ids, log-probs, rewards).

    The zarr group holds flat arrays over all completions of all rollout groups: `token_ids`
    [T] int32 and `logprobs` [T] float32 cut by `offsets` [C+1]; per completion `rewards`,
    `success`, `seq` (stream sequence of its group), `policy_version` and `policy` (an index
    into the group's `policies` attribute).
    """
    import msgspec
    import zarr

    out.mkdir(parents=True, exist_ok=True)
    enc = msgspec.json.Encoder()
    ids: list[bytes] = []
    lps: list[bytes] = []
    lens: list[int] = []
    rewards: list[float] = []
    success: list[bool] = []
    seqs: list[int] = []
    versions: list[int] = []
    policy_idx: list[int] = []
    policies: dict[str, int] = {}
    n = 0
    with open(out / "events.jsonl", "wb") as fh:
        async for rec in records:
            obj = record_json(rec)
            if where and not matches(rec, obj, where):
                continue
            fh.write(enc.encode(obj) + b"\n")
            n += 1
            ev = rec.event
            if isinstance(ev, RolloutGroupCompleted):
                p = policies.setdefault(ev.policy, len(policies))
                for c in ev.completions:
                    ids.append(c.token_ids)
                    lps.append(c.logprobs)
                    lens.append(len(c.token_ids) // 4)
                    rewards.append(c.reward)
                    success.append(c.success)
                    seqs.append(rec.seq)
                    versions.append(ev.policy_version)
                    policy_idx.append(p)
    root = zarr.open_group(str(out / "rollouts.zarr"), mode="w")
    arrays: dict[str, np.ndarray] = {
        "token_ids": np.frombuffer(b"".join(ids), dtype="<i4"),
        "logprobs": np.frombuffer(b"".join(lps), dtype="<f4"),
        "offsets": np.concatenate([[0], np.cumsum(lens, dtype=np.int64)]).astype(np.int64),
        "rewards": np.asarray(rewards, dtype=np.float32),
        "success": np.asarray(success, dtype=bool),
        "seq": np.asarray(seqs, dtype=np.int64),
        "policy_version": np.asarray(versions, dtype=np.int64),
        "policy": np.asarray(policy_idx, dtype=np.int32),
    }
    for name, arr in arrays.items():
        z = root.create_array(name, shape=arr.shape, dtype=arr.dtype, chunks=(max(1, 1 << 20),))
        if arr.size:
            z[:] = arr
    root.attrs["policies"] = [name for name, _ in sorted(policies.items(), key=lambda kv: kv[1])]
    return {"events": n, "completions": len(lens), "tokens": int(sum(lens))}
