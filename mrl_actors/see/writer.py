"""A writer that owns its subjects: two writers claiming one policy fail instead of interleaving.

Every publish carries `Nats-Expected-Last-Subject-Sequence`: the last sequence this writer saw on
that exact subject. If another process wrote there in between, the server refuses the message
and the writer raises `WriterConflictError`. A restarted writer resumes ownership by reading the
subject's last sequence from the stream (done lazily on the first publish to each subject, or
eagerly with `resume`).

Only a valid event counts as another writer: messages on the subject that are not valid events
there (garbage from a misbehaving client; its readers dead-letter them) are stepped over, with a
warning, instead of failing the owner.

The expected sequence of message n+1 is the ack of message n, so owned publishes are sequential
(one round trip each). Policies publish a few large events per step, so this costs little; bulk
unowned traffic goes through `EventLog.append_many`, which pipelines.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mrl_actors.errors import EventDecodeError, LogError, WriterConflictError
from mrl_actors.events import Event
from mrl_actors.logs import get_logger
from mrl_actors.see.port import LogPort
from mrl_actors.see.record import Ack
from mrl_actors.see.subjects import check_token

_WRONG_LAST_SEQUENCE = 10071  # JetStream API error code
_NOISE_RETRIES = 5  # conflicts caused only by invalid messages stepped over, per publish


class OwnedWriter:
    """Publishes the events of one `source` (a policy or node) with an ownership check."""

    def __init__(self, log: LogPort, source: str) -> None:
        self.log = log
        self.source = check_token("source", source)
        self._last: dict[str, int] = {}
        self._log = get_logger(__name__, run=log.run, source=source)

    async def resume(self, kinds: Iterable[str]) -> dict[str, int]:
        """Read the last stored sequence of this source's subject for each kind."""
        for kind in kinds:
            subject = f"{self.log.config.prefix}.{self.log.run}.{kind}.{self.source}"
            self._last[subject] = await self.log.last_seq(subject)
        return dict(self._last)

    async def append(self, event: Event) -> int:
        return (await self.append_acked(event)).seq

    async def append_many(self, events: Sequence[Event]) -> list[int]:
        return [await self.append(e) for e in events]

    async def append_acked(self, event: Event) -> Ack:
        from nats.js.errors import APIError

        if event.source != self.source:
            raise LogError(f"writer of {self.source!r} asked to publish {event.event_id}")
        subject = self.log.subject_of(event)
        if subject not in self._last:
            self._last[subject] = await self.log.last_seq(subject)
        for attempt in range(_NOISE_RETRIES + 1):
            expected = self._last[subject]
            try:
                ack = await self.log.append_acked(
                    event, headers={"Nats-Expected-Last-Subject-Sequence": str(expected)}
                )
                break
            except LogError as exc:
                cause = exc.__cause__
                if not (isinstance(cause, APIError) and cause.err_code == _WRONG_LAST_SEQUENCE):
                    raise
                own = await self.log.stored_last(subject, event)  # our retry after a lost ack
                if own is not None:
                    ack = own
                    break
                actual = await self.log.last_seq(subject)
                if attempt < _NOISE_RETRIES and await self._only_noise(subject, expected, actual):
                    self._log.warning(
                        "writer_stepped_over_noise", subject=subject, after=expected, upto=actual
                    )
                    self._last[subject] = actual
                    continue
                self._log.error(
                    "writer_conflict", subject=subject, expected=expected, actual=actual
                )
                raise WriterConflictError(
                    f"another writer published on {subject}: expected last seq {expected}, "
                    f"stream has {actual}; stop one of the two writers of {self.source!r}"
                ) from exc
        # A duplicate ack names the original message's seq: ours either way.
        self._last[subject] = max(self._last[subject], ack.seq)
        return ack

    async def _only_noise(self, subject: str, after: int, upto: int) -> bool:
        """Are the messages on `subject` in (`after`, `upto`] all invalid there (no writer's)?"""
        kind = subject.split(".")[2]
        async for seq, subj, data, _t in self.log.read_raw(
            start_seq=after + 1, kinds=[kind], sources=[self.source]
        ):
            if seq > upto:
                break
            try:
                await self.log.decode_payload(subj, seq, data)
            except EventDecodeError:
                continue
            return False
        return True
