"""`mrl thl check`: what crossing from one tokenizer to another costs, on your own text.

Each line of `--text-file` (plain text, or JSON lines with a `text` field) is tokenized by the
`--from` tokenizer as a peer would have sampled it, transferred through the THL to the `--to`
tokenizer, and the residual figures are printed as one table (or as JSON with `--json`). See
`mrl_actors.thl` and the README section on the THL for what each figure means.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mrl_actors.cli.args import tokenizer_source


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("thl", help="tokenizer heterogeneity layer: check a tokenizer pair")
    thl_sub = parser.add_subparsers(dest="thl_command", metavar="SUBCOMMAND", required=True)
    check = thl_sub.add_parser(
        "check",
        help="print the residual table of transferring text from one tokenizer to another",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument(
        "--from",
        dest="src",
        type=tokenizer_source,
        required=True,
        help="peer tokenizer directory, or builtin:NAME",
    )
    check.add_argument(
        "--to",
        dest="dst",
        type=tokenizer_source,
        required=True,
        help="receiver tokenizer directory, or builtin:NAME",
    )
    check.add_argument(
        "--text-file", required=True, help="plain lines, or JSON lines with a 'text' field"
    )
    check.add_argument("--json", action="store_true", help="print JSON instead of a table")
    check.add_argument(
        "--allow-lossy", action="store_true", help="budget: accept lossy transfers (default: no)"
    )
    check.add_argument(
        "--fail-on-reject", action="store_true", help="exit 1 when any line is over budget"
    )
    check.set_defaults(handler=_check)


def read_texts(path: Path) -> list[str]:
    """Texts from plain lines or JSON lines (`{"text": ...}`); the format is read off line one.

    Lines end at "\n" only (a trailing "\r" goes too): U+2028, U+0085 and the other characters
    `str.splitlines` also breaks at are ordinary text inside a line, as JSON Lines says. Errors
    name the file and the line, counted as an editor counts them.
    """
    import json

    from mrl_actors.errors import MrlError

    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MrlError(f"cannot read text file {path}: {exc}") from exc
    lines = [(n, ln.removesuffix("\r")) for n, ln in enumerate(raw.split("\n"), 1)]
    lines = [(n, ln) for n, ln in lines if ln.strip()]
    if not lines:
        raise MrlError(f"text file {path} holds no text lines")
    if not lines[0][1].lstrip().startswith("{"):
        return [ln for _, ln in lines]
    texts = []
    for n, line in lines:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            msg = f"{path}:{n}: not a JSON line ({exc.msg}); use one JSON object a line"
            raise MrlError(msg) from exc
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise MrlError(f"{path}:{n}: a JSON line needs a string field 'text'")
        text = obj["text"]
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            bad = text[exc.start : exc.end].encode("utf-16", "surrogatepass")[2:]
            raise MrlError(
                f"{path}:{n}: 'text' holds a lone surrogate (\\u{bad[::-1].hex()} at "
                f"character {exc.start}), which is not Unicode text"
            ) from exc
        texts.append(text)
    return texts


def _check(args: argparse.Namespace) -> int:
    import msgspec
    import numpy as np

    from mrl_actors.thl import ResidualBudget, aggregate, load_vocab, transfer_many
    from mrl_actors.thl.bytes_table import pair_warnings
    from mrl_actors.thl.residual import format_table

    texts = read_texts(Path(args.text_file))
    src, dst = load_vocab(args.src), load_vocab(args.dst)
    encs = src.continuation.encode_batch_fast(texts, add_special_tokens=False)
    ids = [np.asarray(e.ids, dtype=np.int32) for e in encs]
    budget = ResidualBudget(allow_lossy=args.allow_lossy)
    out = transfer_many(src, dst, ids, budget=budget)
    agg = aggregate([t.residual for t in out], [t.rejected for t in out])
    rejected = [(n, t.reason) for n, t in enumerate(out, 1) if t.rejected]
    warnings = pair_warnings(src, dst)
    if args.json:
        doc: dict[str, Any] = {
            "from": {"path": str(args.src), "fingerprint": src.fingerprint, "kind": src.kind},
            "to": {"path": str(args.dst), "fingerprint": dst.fingerprint, "kind": dst.kind},
            "budget": msgspec.to_builtins(budget),
            "pair_warnings": warnings,
            "aggregate": agg,
            "sequences": [
                {"line": n, "rejected": t.rejected, "reason": t.reason}
                | msgspec.to_builtins(t.residual)
                for n, t in enumerate(out, 1)
            ],
        }
        print(msgspec.json.format(msgspec.json.encode(doc)).decode())
    else:
        print(f"THL check: {src.name} ({src.kind}) -> {dst.name} ({dst.kind}), {len(texts)} lines")
        print(format_table(agg))
        for w in warnings:
            print(f"pair: {w}")
        for n, reason in rejected[:10]:
            print(f"line {n}: rejected: {reason}")
        if len(rejected) > 10:
            print(f"... and {len(rejected) - 10} more rejected lines")
    return 1 if rejected and args.fail_on_reject else 0
