"""The Shared Experience Exchange: a run's JetStream stream of typed events, and everything NATS.

The log: `stream` appends and reads (`EventLog`), `record` is what every fold takes (`Record`),
`port` is the typed interface actors and replay use (`LogPort`), `writer` owns a source's subjects
(`OwnedWriter`), `deadletter` is how every reader handles a bad message (`DeadLetters`), and
`consumer` applies events exactly once through a durable consumer (`Consumer`); `config` holds
the stream settings (`LogConfig`) and `subjects` the names on the wire. Around it:
`server` (the embedded nats-server), `natsconf` (server configs), `connection` (URL and
credentials), `auth` (each role's permissions), `blobs` (claim-check storage), `lease` (the
allocator's lease), `inspect` (what the tools read).

    log = await EventLog.open(nc, run, LogConfig(...))
    seq = await log.append(event)                     # Nats-Msg-Id = event.event_id
    seqs = await log.append_many(events)              # pipelined, every ack checked
    writer = OwnedWriter(log, "qwen")                 # expected-last-subject-sequence
    rec = await log.get(seq)                          # one Record
    async for rec in log.read(start_seq=n, kinds=["rollout"]): ...   # ordered replay
    consumer = Consumer(log, "qwen-learner", kinds=["rollout", "reward"])
    await consumer.run(applier)                       # idempotent apply, dead letters

Subjects are `mrl.<run>.<kind>.<source>`; the stream is `MRL_<run>`; dead letters go to
`mrl.<run>.deadletter.<consumer>`.
"""

from mrl_actors.see.config import LogConfig
from mrl_actors.see.consumer import Applier, Consumer, ConsumerStats, FoldApplier
from mrl_actors.see.record import Ack, Record
from mrl_actors.see.stream import EventLog
from mrl_actors.see.subjects import check_token, filter_subjects, stream_name
from mrl_actors.see.writer import OwnedWriter

__all__ = [
    "Ack",
    "Applier",
    "Consumer",
    "ConsumerStats",
    "EventLog",
    "FoldApplier",
    "LogConfig",
    "OwnedWriter",
    "Record",
    "check_token",
    "filter_subjects",
    "stream_name",
]
