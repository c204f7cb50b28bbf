"""The spec a command line means: several spec files composed in order, then `--set` overrides.

`mrl run base.toml gpu.toml --set policies.gpt2.grpo.lr=1e-4 --set run.steps=5` reads the files
in order, each later one merged into the earlier (tables merged key by key; `[[policies]]`
merged by `name`, a new name appended; any other array replaced whole), then applies each
`--set KEY=VALUE`. KEY is a dotted field path as in the spec reference; a policy is addressed by
its name (`policies.gpt2.…`) or its index (`policies.0.…`). VALUE is a TOML value (`1e-4`,
`true`, `["\\n"]`, `"text"`); what is not one is taken as a string (`run.name=try2`).

The composed table is checked exactly like one file (`mrl_actors.spec.parse_spec`), and an error
names where the bad field came from: the file that set it last, or the `--set` argument. Model
directories (and `task.math` data files) relative to a file are resolved against that file's
directory before merging, so a file means the same thing whichever file it is composed with.

Imports without torch (the spec module does not import it).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from mrl_actors.errors import ConfigError
from mrl_actors.models.builtin import is_builtin
from mrl_actors.spec import RunSpec, parse_spec

Origins = dict[tuple[str, ...], str]  # field path (policies by name) -> the file or --set given


def compose_spec(files: Sequence[Path], sets: Sequence[str] = ()) -> tuple[RunSpec, str]:
    """The checked spec of `files` merged in order with `sets` applied, and its TOML text."""
    merged: dict[str, Any] = {}
    origins: Origins = {}
    for path in files:
        raw = _read(path)
        _resolve_paths(raw, path.parent)
        _merge(merged, raw, (), origins, str(path))
    for item in sets:
        _apply_set(merged, item, origins)
    text = msgspec.toml.encode(merged).decode("utf-8")
    single = len(files) == 1 and not sets
    source = str(files[0]) if single else "the composed spec"
    try:
        spec = parse_spec(text, source=source)
    except ConfigError as exc:
        raise ConfigError(_locate(str(exc), source, merged, origins)) from exc
    _check_data(spec, origins)
    if single:  # the file as written, comments and all, is what RunStarted records
        text = files[0].read_text(encoding="utf-8")
    return spec, text


def write_effective_spec(run_dir: Path, spec: RunSpec) -> Path:
    """`run_dir/spec.toml`: the effective spec, as `mrl run` writes it (a node writes it too, so
    a node's run directory can be replayed and reported on like a one-machine run's)."""
    from mrl_actors.run.runner import SPEC_FILE
    from mrl_actors.spec import effective_toml

    path = run_dir / SPEC_FILE
    path.write_text(_NODE_HEADER + effective_toml(spec), encoding="utf-8")
    return path


_NODE_HEADER = (
    "# The effective spec of this run as a node hosted it, written by `mrl-node` (--set values\n"
    "# and absolute model paths included): `mrl replay` and `mrl report` read it.\n"
)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the spec: {exc.strerror}") from exc
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except RecursionError as exc:
        raise ConfigError(f"{path}: arrays or tables nested too deeply to be a spec") from exc


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    """Model directories and task data files named relative to a spec file become absolute."""
    for p in raw.get("policies", []) if isinstance(raw.get("policies"), list) else []:
        model = p.get("model") if isinstance(p, dict) else None
        if isinstance(model, str) and not is_builtin(model):
            candidate = (base / model).resolve()
            if model.startswith((".", "/")) or candidate.exists():
                p["model"] = str(candidate)
    task = raw.get("task")
    math = task.get("math") if isinstance(task, dict) else None
    if isinstance(math, dict):
        for key in DATA_FIELDS:
            value = math.get(key)
            if isinstance(value, str) and value and not Path(value).is_absolute():
                math[key] = str((base / value).resolve())


DATA_FIELDS = ("train", "test", "path")  # [task.math] files, relative to the spec that names them


def _check_data(spec: RunSpec, origins: Origins) -> None:
    """A `task.math` file that does not exist is an error naming the spec and the field now,
    not a dataset error after the server and the run directory exist."""
    math = spec.task.math
    if spec.task.kind != "math" or math is None:
        return
    for key in DATA_FIELDS:
        value = getattr(math, key)
        if value and not Path(value).exists():
            where = origins.get(("task", "math", key), "the spec")
            raise ConfigError(
                f"{where}: task.math.{key}: {value}: no such file or directory "
                "(a relative path is read from the spec file's directory)"
            )


def _merge(
    into: dict[str, Any], new: dict[str, Any], at: tuple[str, ...], origins: Origins, source: str
) -> None:
    for key, value in new.items():
        here = (*at, key)
        if at == () and key == "policies" and isinstance(value, list):
            into[key] = _merge_policies(into.get(key, []), value, origins, source)
        elif isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value, here, origins, source)
        else:
            into[key] = value
            _mark(origins, here, value, source)


def _merge_policies(old: list[Any], new: list[Any], origins: Origins, source: str) -> list[Any]:
    out = list(old)
    for p in new:
        name = p.get("name") if isinstance(p, dict) else None
        same = [i for i, q in enumerate(out) if isinstance(q, dict) and q.get("name") == name]
        if name is not None and same:
            _merge(out[same[0]], p, ("policies", str(name)), origins, source)
        else:
            out.append(p)
            _mark(origins, ("policies", str(name if name is not None else len(out) - 1)), p, source)
    return out


def _mark(origins: Origins, at: tuple[str, ...], value: Any, source: str) -> None:
    origins[at] = source
    if isinstance(value, dict):
        for k, v in value.items():
            _mark(origins, (*at, k), v, source)


def _apply_set(merged: dict[str, Any], item: str, origins: Origins) -> None:
    key, eq, text = item.partition("=")
    key = key.strip()
    if not eq or not key:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE (policies.gpt2.grpo.lr=1e-4)")
    parts = key.split(".")
    if not all(re.fullmatch(r"[A-Za-z0-9_-]+", p) for p in parts):
        raise ConfigError(f"--set {item!r}: {key!r} is not a dotted field path")
    value = _value(text)
    table: Any = merged
    named: list[str] = []
    for i, part in enumerate(parts[:-1]):
        if i == 0 and part == "policies":
            continue
        if i == 1 and parts[0] == "policies":
            table = _policy(merged, part, item)
            named = ["policies", str(table.get("name", part))]
            continue
        nxt = table.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {item!r}: {'.'.join(parts[: i + 1])} is not a table")
        table = nxt
        named.append(part)
    if parts[0] == "policies" and len(parts) < 3:
        raise ConfigError(f"--set {item!r}: name a field of a policy (policies.NAME.FIELD=...)")
    table[parts[-1]] = value
    path = (*named, parts[-1]) if parts[0] == "policies" else tuple(parts)
    _mark(origins, path, value, f"--set {key}")


def _policy(merged: dict[str, Any], ref: str, item: str) -> dict[str, Any]:
    policies = merged.get("policies")
    policies = policies if isinstance(policies, list) else []
    for p in policies:
        if isinstance(p, dict) and p.get("name") == ref:
            return p
    if ref.isdigit() and int(ref) < len(policies) and isinstance(policies[int(ref)], dict):
        return policies[int(ref)]
    names = [p.get("name") for p in policies if isinstance(p, dict)]
    raise ConfigError(f"--set {item!r}: no policy named {ref!r} (policies: {names})")


def _value(text: str) -> Any:
    """A TOML value, else the text as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _locate(message: str, source: str, merged: dict[str, Any], origins: Origins) -> str:
    """`the composed spec: policies[1].grpo.lr: ...` said as `gpu.toml: policies[1].grpo.lr:
    ...` (or `--set policies.llama.grpo.lr: ...`): the source that set that field last."""
    prefix = f"{source}: "
    if not message.startswith(prefix):
        return message
    rest = message[len(prefix) :]
    m = re.match(r"([A-Za-z_][\w.\[\]-]*): ", rest)
    if not m:
        return message
    path: list[str] = []
    policies = merged.get("policies") if isinstance(merged.get("policies"), list) else []
    for part in re.findall(r"[A-Za-z0-9_-]+|\[\d+\]", m.group(1)):
        if part.startswith("[") and path == ["policies"]:
            i = int(part[1:-1])
            p = policies[i] if policies and i < len(policies) else None
            path.append(str(p.get("name")) if isinstance(p, dict) else str(i))
        elif not part.startswith("["):
            path.append(part)
    rest = _with_fields(rest, path)
    for n in range(len(path), 0, -1):
        found = origins.get(tuple(path[:n]))
        if found is not None:
            return f"{found}: {rest}"
    return f"{source}: {rest}"


def _with_fields(rest: str, path: list[str]) -> str:
    """An unknown field's message lists the fields its table has."""
    if "unknown field" not in rest or not path:
        return rest
    known = fields_of(path[:-1])
    return f"{rest}; {'.'.join(path[:-1]) or 'the spec'} has: {', '.join(known)}" if known else rest


def fields_of(path: Sequence[str]) -> list[str]:
    """The field names of the spec table at `path` (`["policies", "gpt2", "grpo"]`)."""
    import typing

    tp: Any = RunSpec
    for i, part in enumerate(path):
        if i == 1 and path[0] == "policies":
            continue  # a policy's name or index
        hints = typing.get_type_hints(tp) if isinstance(tp, type) else {}
        if part not in hints:
            return []
        tp = hints[part]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0] if args else tp  # list[PolicySpec], X | None -> the Struct
    if not (isinstance(tp, type) and issubclass(tp, msgspec.Struct)):
        return []
    return [f.name for f in msgspec.structs.fields(tp)]
