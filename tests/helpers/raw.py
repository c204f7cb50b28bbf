"""A plain nats-py client with a run user's credentials, for tests that act as an attacker: the
server's answers (its -ERR lines) are what they check."""

from __future__ import annotations

import base64
import json
from typing import Any

import nats


async def raw_client(info: Any, user: str, errors: list[str]) -> Any:
    """`user` on the server of `info` (a `ServerInfo`), no reconnects; every error the server
    sends is added to `errors`, lowered (nats-py lowers the subject it names)."""

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc).lower())

    cfg = info.client(user)
    return await nats.connect(
        servers=[cfg.url],
        user=cfg.user,
        password=cfg.password,
        inbox_prefix=cfg.inbox(),
        error_cb=on_error,
        allow_reconnect=False,
    )


def blob_forgeries(bucket: str, key: str, size: int) -> list[tuple[str, bytes, Any]]:
    """(subject, data, headers) of a chunk, a metadata message for `key` and a rollup of the
    whole bucket: what a writer with no right to `bucket` would try."""
    meta = f"$O.{bucket}.M." + base64.urlsafe_b64encode(key.encode()).decode()
    forged = {"name": key, "bucket": bucket, "nuid": "forged", "size": size, "chunks": 1}
    return [
        (f"$O.{bucket}.C.forged", b"a peer's bytes", None),
        (meta, json.dumps(forged).encode(), None),
        (f"$O.{bucket}.C.x", b"", {"Nats-Rollup": "all"}),
    ]
