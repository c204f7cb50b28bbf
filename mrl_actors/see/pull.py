"""Pull requests to a JetStream consumer, answered into one callback subscription.

nats-py's `PullSubscription.fetch` waits for each message with its own `wait_for` (a timer and a
task per message); on rollout-sized events that cost more than decoding them. Here one inbox
subscription appends deliveries to a buffer and `fetch` sends `CONSUMER.MSG.NEXT` requests itself:
first `no_wait` (whatever is stored now, ended by a 404/408 status when short), and only when
nothing is available a lingering request that expires with the caller's timeout. Messages that
arrive after a fetch returned stay buffered for the next one, so none is dropped.
"""

from __future__ import annotations

import collections
import json
import time
from typing import Any

import anyio

_LINGER_S = 0.005  # once some messages are in, wait this long for a fuller batch
_NO_WAIT_ANSWER_S = 5.0  # a no_wait request is answered at once; after this, assume it was lost


class Puller:
    """Batches of raw messages (`nats.aio.msg.Msg`, ack with `msg.ack()`) from one consumer."""

    def __init__(self, nc: Any, stream: str, consumer: str) -> None:
        self._nc = nc
        self._api = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._buf: collections.deque[Any] = collections.deque()
        self._open = 0  # messages still owed by the outstanding request
        self._open_until = 0.0  # monotonic time after which that request is surely over
        self._wake = anyio.Event()
        self._inbox = ""
        self._sub: Any = None

    async def start(self) -> Puller:
        self._inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(
            self._inbox, cb=self._on_msg, pending_msgs_limit=-1, pending_bytes_limit=-1
        )
        return self

    async def stop(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.unsubscribe()

    async def _on_msg(self, msg: Any) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            self._buf.append(msg)
            self._open = max(0, self._open - 1)
        elif status != "100":  # 404 none left, 408 expired, 409 limits: the request is over
            self._open = 0
        self._wake.set()

    async def _request(self, batch: int, expires_s: float | None) -> None:
        req: dict[str, Any] = {"batch": batch}
        if expires_s is None:
            req["no_wait"] = True
            self._open_until = time.monotonic() + _NO_WAIT_ANSWER_S
        else:
            req["expires"] = int(expires_s * 1e9)
            self._open_until = time.monotonic() + expires_s + 1.0
        self._open = batch
        await self._nc.publish(self._api, json.dumps(req).encode(), reply=self._inbox)

    async def fetch(self, batch: int, timeout: float) -> list[Any]:
        """Up to `batch` messages; fewer (maybe none) when `timeout` passes first."""
        deadline = time.monotonic() + timeout
        asked = False  # a no_wait request was sent during this fetch
        while len(self._buf) < batch:
            now = time.monotonic()
            if self._open and now > self._open_until:
                self._open = 0  # its answer was lost (a reconnect): ask again
            if self._buf and not self._open:
                break
            if not self._open:
                if now >= deadline:
                    break
                # first what is stored now; if nothing, wait for new messages until the deadline
                await self._request(batch, None if not asked else deadline - now)
                asked = True
            wait = _LINGER_S if self._buf else deadline - time.monotonic()
            if wait <= 0:
                break
            self._wake = anyio.Event()
            with anyio.move_on_after(wait) as scope:
                await self._wake.wait()
            if scope.cancelled_caught and (self._buf or time.monotonic() >= deadline):
                break
        n = min(batch, len(self._buf))
        return [self._buf.popleft() for _ in range(n)]
