"""A lease in the run's JetStream key-value bucket: one holder at a time for a run-wide role.

MWRA must run once per run, on whichever node is alive. Every candidate node tries to take the
key `<role>` of the bucket `MRL_<run>_LEASE`; the holder renews it every tick. Both writes are
compare-and-set on the key's revision (`create` when absent, `update(last=revision)` otherwise),
so of two candidates the server lets exactly one through. A candidate takes the key over only
when the holder has not renewed it for `ttl_s`, judged by the time the *server* stored the
key's last revision (the stored message's timestamp), never by a time a client wrote: a put
with a far-future `renewed_ns` lapses like any other (against the candidate's clock: hosts are
expected to keep their clocks in sync with the server's, as NTP does).

The lease only keeps two allocators from working at once; it is not what makes their writes
safe. A holder that stalls past its lease and wakes up still believes it leads until its next
renewal fails, so whatever it writes in that window must be fenced by the log itself: MWRA
appends each decision only if the last decision on its subject is the one it has folded
(`EventLog.append_first`), which a stale holder's is not.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import msgspec

from mrl_actors.errors import LogError
from mrl_actors.logs import get_logger


def lease_bucket(run: str) -> str:
    return f"MRL_{run}_LEASE"


class LeaseValue(msgspec.Struct, frozen=True):
    holder: str
    renewed_ns: int  # the holder's clock, for the record; liveness uses the server's stamp


async def ensure_lease_bucket(js: Any, run: str, *, replicas: int = 1) -> None:
    """Create the run's lease bucket if missing (the stream's creator does, as admin)."""
    from nats.js.api import KeyValueConfig
    from nats.js.errors import BucketNotFoundError, NotFoundError

    try:
        await js.key_value(lease_bucket(run))
    except (BucketNotFoundError, NotFoundError):
        await js.create_key_value(
            KeyValueConfig(bucket=lease_bucket(run), history=1, replicas=replicas)
        )


class Lease:
    """One candidate for the key `key` of the run's lease bucket."""

    def __init__(
        self,
        js: Any,
        run: str,
        key: str,
        holder: str,
        *,
        ttl_s: float,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.js = js
        self.run = run
        self.key = key
        self.holder = holder
        self.ttl_ns = int(ttl_s * 1e9)
        self.clock = clock
        self.revision = 0  # the key's revision we wrote last (0: we do not hold it)
        self._kv: Any = None
        self._log = get_logger(__name__, run=run, lease=key, candidate=holder)

    def _value(self) -> bytes:
        return msgspec.json.encode(LeaseValue(self.holder, self.clock()))

    def _failed(self, exc: Exception) -> LogError:
        return LogError(f"lease {self.key!r} of run {self.run!r}: {type(exc).__name__}: {exc}")

    async def _bucket(self) -> Any:
        if self._kv is None:
            self._kv = await self.js.key_value(lease_bucket(self.run))
        return self._kv

    async def current(self) -> tuple[LeaseValue | None, int]:
        """The holder on record and the key's revision (None, 0: nobody ever held it)."""
        value, revision, _ = await self._current()
        return value, revision

    async def _current(self) -> tuple[LeaseValue | None, int, int]:
        """The holder on record, the key's revision and when the server stored it (ns)."""
        from nats.js.errors import NotFoundError

        bucket = lease_bucket(self.run)
        try:  # the key's last message in one read: its revision, value and server time
            stored = await self.js.get_msg(f"KV_{bucket}", subject=f"$KV.{bucket}.{self.key}")
        except NotFoundError:
            return None, 0, 0
        except Exception as exc:  # a failover, a lost server: the caller tries next tick
            raise self._failed(exc) from exc
        op = (stored.headers or {}).get("KV-Operation", "")
        if op in ("DEL", "PURGE"):
            return None, 0, 0  # deleted: created afresh (nats-py handles the tombstone)
        at = int(stored.time.timestamp() * 1e9) if stored.time is not None else 0
        try:
            value = msgspec.json.decode(stored.data or b"", type=LeaseValue)
        except msgspec.DecodeError:  # not ours: nobody's lease
            value = LeaseValue("", 0)
        return value, int(stored.seq or 0), at

    async def _swap(self, value: bytes, last: int) -> int:
        """Write the key if its revision is still `last` (0: absent): the new revision, or 0 if
        another writer was first. Any other failure is a `LogError`."""
        from nats.js.errors import KeyWrongLastSequenceError

        try:
            kv = await self._bucket()
            if last == 0:
                return int(await kv.create(self.key, value))
            return int(await kv.update(self.key, value, last=last))
        except KeyWrongLastSequenceError:
            return 0
        except Exception as exc:  # a failover, a lost server: the caller tries next tick
            raise self._failed(exc) from exc

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it or its holder let it lapse; True if we hold it."""
        value, revision, stored_ns = await self._current()
        free = (
            value is None
            or value.holder in ("", self.holder)  # released (or not a lease), or ours
            or self.clock() - stored_ns > self.ttl_ns  # the server's stamp, not the holder's
        )
        if not free:
            return False
        self.revision = await self._swap(self._value(), revision)
        if self.revision:
            self._log.info(
                "lease_acquired", revision=self.revision, previous=value and value.holder
            )
        return bool(self.revision)

    async def renew(self) -> bool:
        """Stamp the lease again; False if it was taken over (we no longer hold it)."""
        if not self.revision:
            return False
        self.revision = await self._swap(self._value(), self.revision)
        if not self.revision:
            self._log.warning("lease_lost")
        return bool(self.revision)

    async def release(self) -> None:
        """Let the next candidate take over at once (a clean stop), if we still hold it; a
        server that cannot be reached leaves the lease to lapse."""
        if not self.revision:
            return
        with contextlib.suppress(LogError):
            await self._swap(msgspec.json.encode(LeaseValue("", 0)), self.revision)
        self.revision = 0
