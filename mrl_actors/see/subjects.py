"""Names on the wire: the run's stream and subjects, plain tokens, and JetStream reply subjects.

Subjects are `<prefix>.<run>.<kind>.<source>`; every run id, source and consumer name becomes a
subject token, so each is checked here before any subject is built from it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import msgspec

from mrl_actors.errors import LogError

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def stream_name(run: str) -> str:
    return f"MRL_{check_token('run', run)}"


def check_token(what: str, value: str) -> str:
    """Run ids, sources and consumer names become subject tokens: keep them plain."""
    if not _TOKEN.match(value):
        raise LogError(f"{what} {value!r} must match [A-Za-z0-9_-]{{1,128}} to be a subject token")
    return value


def filter_subjects(
    prefix: str, run: str, kinds: Iterable[str] = (), sources: Iterable[str] = ()
) -> list[str]:
    """Server-side filters: every (kind, source) pair, `*` where a side is unrestricted."""
    ks = sorted(set(kinds)) or ["*"]
    ss = sorted(set(sources)) or ["*"]
    if ks == ["*"] and ss == ["*"]:
        return [f"{prefix}.{run}.>"]
    return [f"{prefix}.{run}.{k}.{s}" for k in ks for s in ss]


class Delivery(msgspec.Struct, frozen=True, array_like=True):
    """What the ack subject of a JetStream delivery says about it."""

    seq: int  # stream sequence
    delivered: int  # 1 on first delivery
    time_ns: int  # when the server stored it
    pending: int  # messages left for this consumer after this one
    cseq: int  # the consumer's own count of deliveries: a jump means some were lost in transit


def delivery(reply: str) -> Delivery:
    """Parse `$JS.ACK.[domain.hash.]<stream>.<consumer>.<n>.<sseq>.<cseq>.<ts>.<pending>...`.

    The same fields as nats-py's `msg.metadata` without building datetimes: on the consume
    path of rollout-sized events this is a visible share of the per-message cost.
    """
    t = reply.split(".")
    if len(t) < 9 or t[0] != "$JS" or t[1] != "ACK":
        raise LogError(f"not a JetStream delivery: reply subject {reply!r}")
    b = 2 if len(t) == 9 else 4
    return Delivery(int(t[b + 3]), int(t[b + 2]), int(t[b + 5]), int(t[b + 6]), int(t[b + 4]))
