"""`mrl log tail|stats|export`: read a run's experience log (see `mrl_actors.see.inspect`).

Each takes a run directory (its live server from `server.json`, or an embedded server started on
`DIR/nats/`) or `--server URL` (credentials from `MRL_NATS_*`), and `--run` when the server
holds several runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mrl_actors.cli import args as types


def _source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", nargs="?", help="run directory (holds nats/ and server.json)")
    p.add_argument("--server", metavar="URL", help="NATS URL instead of a run directory")
    p.add_argument(
        "--run", type=types.token, help="run id (default: the run dir's, or the only one there)"
    )


def _filter_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--kind", type=types.event_kind, action="append", default=[], help="event kind (repeatable)"
    )
    p.add_argument(
        "--policy",
        "--source",
        dest="sources",
        type=types.token,
        action="append",
        default=[],
        help="policy or node that wrote the event (repeatable)",
    )
    p.add_argument(
        "--where",
        type=types.where,
        action="append",
        default=[],
        metavar="EXPR",
        help="field predicate, e.g. 'reward>0.5', 'policy_version>=3', 'text~boxed' (repeatable)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("log", help="tail, count and export a run's experience log")
    cmds = parser.add_subparsers(dest="log_command", metavar="SUBCOMMAND", required=True)

    tail = cmds.add_parser("tail", help="print events, from the start or live")
    _source_args(tail)
    _filter_args(tail)
    start = tail.add_mutually_exclusive_group()
    start.add_argument("--seq", type=types.int_in(1), help="start at this stream sequence (>= 1)")
    start.add_argument(
        "--since", type=types.since, help="start at a time: 10m, 2h, 1d ago or an ISO time"
    )
    tail.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="keep printing new events (ends with one line when the run's server stops)",
    )
    count = tail.add_mutually_exclusive_group()
    count.add_argument(
        "-n",
        "--last",
        dest="last",
        type=types.int_in(0),
        default=0,
        metavar="N",
        help="only the last N matching events (then, with -f, the new ones), as tail -n does",
    )
    count.add_argument(
        "--limit",
        type=types.int_in(0),
        default=0,
        metavar="N",
        help="stop after the first N matching events (0: no limit)",
    )
    tail.add_argument("--json", action="store_true", help="one JSON object per line")
    tail.set_defaults(handler=_tail)

    stats = cmds.add_parser("stats", help="counts, bytes and rates per kind and source")
    _source_args(stats)
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(handler=_stats)

    export = cmds.add_parser("export", help="JSON lines, and zarr arrays of rollouts")
    _source_args(export)
    _filter_args(export)
    export.add_argument("--out", required=True, type=Path, help="directory to write")
    export.add_argument(
        "--force", action="store_true", help="overwrite an earlier export (or a file) at --out"
    )
    export.set_defaults(handler=_export)


def _open(args: argparse.Namespace, on_lost: Any = None) -> Any:
    from mrl_actors.see.access import open_log

    return open_log(run_dir=args.run_dir, server=args.server, run=args.run, on_lost=on_lost)


def _tail(args: argparse.Namespace) -> int:
    import collections

    import anyio
    import msgspec

    from mrl_actors.see import inspect

    where = args.where  # Predicates, parsed and checked by argparse
    inspect.check_where(where, args.kind)  # against the fields the kinds' events have
    enc = msgspec.json.Encoder()
    shown = 0
    ended = False

    def emit(rec: Any, obj: dict[str, Any]) -> None:
        nonlocal shown
        if args.json:
            sys.stdout.write(enc.encode(obj).decode() + "\n")
        else:
            sys.stdout.write(inspect.line(rec) + "\n")
        sys.stdout.flush()
        shown += 1

    async def records(log: Any, dead: Any, *, start_seq: int | None, follow: bool) -> Any:
        async for rec in log.read(
            start_seq=start_seq,
            start_time=args.since if start_seq == args.seq else None,
            kinds=args.kind,
            sources=args.sources,
            follow=follow,
            dead_letters=dead,
        ):
            obj = inspect.record_json(rec) if (args.json or where) else {}
            if not where or inspect.matches(rec, obj, where):
                yield rec, obj

    async def main() -> int:
        nonlocal ended
        from mrl_actors.see.access import ends_if_server_lost

        lost_hint = "the run ended or its server was stopped"
        try:
            async with ends_if_server_lost(lost_hint) as on_lost, _open(args, on_lost) as log:
                dead = inspect.tool_dead_letters(log)
                start = args.seq
                if args.last:  # the last N of what is stored, then (with -f) what comes
                    last: collections.deque[Any] = collections.deque(maxlen=args.last)
                    seen = 0
                    async for item in records(log, dead, start_seq=start, follow=False):
                        last.append(item)
                        seen = item[0].seq
                    for rec, obj in last:
                        emit(rec, obj)
                    if not args.follow:
                        _report_bad(dead.count)
                        return 0
                    start = max(seen + 1, start or 1) if seen else start
                async for rec, obj in records(log, dead, start_seq=start, follow=args.follow):
                    emit(rec, obj)
                    if args.limit and shown >= args.limit:
                        break
                _report_bad(dead.count)
        except Exception as exc:
            if not args.follow or not _server_gone(exc, lost_hint):
                raise
            ended = True
        return 0

    rc = anyio.run(main)
    if ended:
        sys.stderr.write(f"mrl log: the run's server stopped (the run ended); {shown} events\n")
    return rc


def _server_gone(exc: BaseException, hint: str) -> bool:
    """The follow ended because the server went away (the run it served ended), not a fault."""
    seen: list[BaseException] = [exc]
    while seen:
        e = seen.pop()
        name = type(e).__name__
        if hint in str(e) or name in ("ConnectionClosedError", "NoServersError"):
            return True
        if isinstance(e, BaseExceptionGroup):
            seen.extend(e.exceptions)
        if e.__cause__ is not None:
            seen.append(e.__cause__)
    return False


def _report_bad(count: int) -> None:
    """After the per-message warnings: how many messages were skipped as not valid events."""
    if count:
        sys.stderr.write(f"mrl log: skipped {count} bad message(s): not valid events (see above)\n")


def _stats(args: argparse.Namespace) -> int:
    import anyio
    import msgspec

    from mrl_actors.see import inspect

    async def main() -> inspect.Stats:
        async with _open(args) as log:
            return await inspect.stats(log)

    st = anyio.run(main)
    if args.json:
        obj = {
            "rows": [
                {"kind": k, "source": s, "count": r.count, "bytes": r.bytes, "rate": r.rate}
                for (k, s), r in sorted(st.rows.items())
            ],
            "dead_letters": {
                "by_error": dict(st.dead_by_error),
                "by_consumer": dict(st.dead_by_consumer),
            },
            "total": {"count": st.total.count, "bytes": st.total.bytes},
            "bad_messages": {"count": st.undecodable, "by_error": dict(st.bad_by_error)},
        }
        print(msgspec.json.encode(obj).decode())
        return 0
    print(f"{'kind':<12} {'source':<16} {'events':>9} {'bytes':>12} {'ev/s':>9} {'MB/s':>8}")
    for (kind, source), r in sorted(st.rows.items()):
        mbs = r.bytes / 1e6 * r.rate / r.count if r.count else 0.0
        print(f"{kind:<12} {source:<16} {r.count:>9,} {r.bytes:>12,} {r.rate:>9.1f} {mbs:>8.2f}")
    print(f"{'total':<29} {st.total.count:>9,} {st.total.bytes:>12,} {st.total.rate:>9.1f}")
    total_dead = sum(st.dead_by_error.values())
    print(f"\ndead letters: {total_dead}")
    for err, n in st.dead_by_error.most_common():
        print(f"  {err:<14} {n:>9,}")
    for consumer, n in st.dead_by_consumer.most_common():
        print(f"  consumer {consumer:<14} {n:>9,}")
    print(f"\nbad messages (not valid events): {st.undecodable}")
    for err, n in st.bad_by_error.most_common():
        print(f"  {err:<14} {n:>9,}")
    return 0


def check_out(out: Path, *, force: bool) -> None:
    """Refuse to write over a file, or over an earlier export, unless `force` says so."""
    from mrl_actors.errors import ConfigError

    earlier = [p for p in (out / "events.jsonl", out / "rollouts.zarr") if p.exists()]
    if out.exists() and not out.is_dir():
        if not force:
            raise ConfigError(f"--out {out} is a file: choose a directory, or add --force")
        out.unlink()
    elif earlier and not force:
        raise ConfigError(
            f"--out {out} already holds an export ({earlier[0].name}): add --force to replace it"
        )


def _export(args: argparse.Namespace) -> int:
    import anyio

    from mrl_actors.see import inspect

    check_out(args.out, force=args.force)
    where = args.where
    inspect.check_where(where, args.kind)

    async def main() -> dict[str, int]:
        async with _open(args) as log:
            dead = inspect.tool_dead_letters(log)
            records = log.read(kinds=args.kind, sources=args.sources, dead_letters=dead)
            counts = await inspect.export(records, args.out, where=where)
            _report_bad(dead.count)
            return counts

    counts = anyio.run(main)
    print(
        f"wrote {counts['events']} events to {args.out}/events.jsonl and "
        f"{counts['completions']} completions ({counts['tokens']} tokens) to "
        f"{args.out}/rollouts.zarr"
    )
    return 0
