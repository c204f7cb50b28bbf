"""The small part of PromQL the Grafana dashboard uses, evaluated against one scrape.

A test helper, not a Prometheus: it reads the expressions of `ops/grafana/mrl-run.json` (a
selector with `=` label matchers, `sum by (...) (...)`, `rate`/`increase` over a range,
`clamp_min`, `time() - x`, and `/` between vectors matched on their labels) and evaluates them
on the series of a single scrape of a node's `/metrics`. With one sample per series, `rate` and
`increase` give 0 for every series that exists, which is what Prometheus gives after two scrapes
of a counter that has not moved: enough to tell an empty panel from one that shows data.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping

Labels = tuple[tuple[str, str], ...]
Vector = dict[Labels, float]
Series = Mapping[tuple[str, Labels], float]

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d+)?)|(?P<name>[A-Za-z_:][\w:]*)|(?P<str>\"[^\"]*\")"
    r"|(?P<range>\[[^\]]+\])|(?P<op>[(){},/=\-*+]))"
)


def evaluate(expr: str, series: Series, now: float | None = None) -> Vector:
    tokens = [t for t in _tokens(expr)]
    parser = _Parser(tokens, series, time.time() if now is None else now)
    out = parser.expr()
    if parser.pos != len(tokens):
        raise ValueError(f"unparsed rest of {expr!r}: {tokens[parser.pos :]}")
    return out


def _tokens(expr: str) -> list[str]:
    out, pos = [], 0
    while pos < len(expr):
        if expr[pos:].strip() == "":
            break
        m = _TOKEN.match(expr, pos)
        if not m:
            raise ValueError(f"cannot read {expr[pos:]!r}")
        out.append(m.group(m.lastgroup or 0))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, tokens: list[str], series: Series, now: float) -> None:
        self.t, self.pos, self.series, self.now = tokens, 0, series, now

    def peek(self) -> str:
        return self.t[self.pos] if self.pos < len(self.t) else ""

    def take(self, want: str | None = None) -> str:
        tok = self.peek()
        if want is not None and tok != want:
            raise ValueError(f"expected {want!r}, got {tok!r} at {self.pos}")
        self.pos += 1
        return tok

    def expr(self) -> Vector:
        left = self.term()
        while self.peek() in ("/", "-"):
            op = self.take()
            right = self.term()
            left = _binary(op, left, right)
        return left

    def term(self) -> Vector:
        tok = self.peek()
        if tok == "(":
            self.take("(")
            inner = self.expr()
            self.take(")")
            return inner
        if re.fullmatch(r"\d+(\.\d+)?", tok):
            return {(): float(self.take())}
        name = self.take()
        if name == "time":
            self.take("(")
            self.take(")")
            return {(): self.now}
        if name == "sum":
            by: list[str] = []
            if self.peek() == "by":
                self.take("by")
                self.take("(")
                while self.peek() != ")":
                    tok = self.take()
                    if tok != ",":
                        by.append(tok)
                self.take(")")
            self.take("(")
            inner = self.expr()
            self.take(")")
            out: Vector = {}
            for labels, v in inner.items():
                key = tuple((k, val) for k, val in labels if k in by)
                out[key] = out.get(key, 0.0) + v
            return out
        if name in ("rate", "increase"):
            self.take("(")
            inner = self.selector(self.take())
            if not self.peek().startswith("["):
                raise ValueError(f"{name} needs a range")
            self.take()
            self.take(")")
            return {labels: 0.0 for labels in inner}  # one sample: no change yet
        if name == "clamp_min":
            self.take("(")
            inner = self.expr()
            self.take(",")
            low = float(self.take())
            self.take(")")
            return {k: max(v, low) for k, v in inner.items()}
        return self.selector(name)

    def selector(self, name: str) -> Vector:
        want: dict[str, str] = {}
        if self.peek() == "{":
            self.take("{")
            while self.peek() != "}":
                key = self.take()
                self.take("=")
                want[key] = self.take().strip('"')
                if self.peek() == ",":
                    self.take(",")
            self.take("}")
        out: Vector = {}
        for (metric, labels), v in self.series.items():
            have = dict(labels)
            if metric == name and all(have.get(k) == val for k, val in want.items()):
                out[labels] = v
        return out


def _binary(op: str, left: Vector, right: Vector) -> Vector:
    out: Vector = {}
    for labels, a in left.items():
        b = right.get(labels, right.get(()) if len(right) == 1 and () in right else None)
        if b is None:
            continue
        if op == "-":
            out[labels] = a - b
        else:
            out[labels] = a / b if b else math.nan
    if () in left and len(left) == 1:  # scalar - vector (time() - x)
        a = left[()]
        for labels, b in right.items():
            out[labels] = a - b if op == "-" else (a / b if b else math.nan)
        out.pop((), None)
    return out
