"""Who may write what in a run's log: the NATS permissions of each role, as data.

Every writer is authorized by the server, not trusted to behave. A run `R` with policies
`P1..Pn` has these roles (user names in brackets):

- `admin` [admin]: the run's coordinator (`mrl run`) and the operator's tools. Creates the
  stream and each policy's blob bucket, writes run-level events (`run`, `policy`, `node`,
  `slots`), may publish and read anything: it is the root of the run, the one role that is
  trusted.
- `reader` [reader]: read-only tools. Reads the run's stream and blobs; publishes no event.
- `policy` [policy-P]: one policy actor. Publishes only on `mrl.R.<kind>.P` for its own kinds
  and in its own blob bucket (`$O.MRL_R_BLOBS_P.>`: a peer's blobs are out of its reach),
  reads everything of the run, and may not create, update, delete or purge a stream nor delete
  a message. Consumers it may make are unnamed (server-named) or named after itself.
- `node` [a user per host]: an `mrl-node` hosting some policies on one connection: the union of
  those policies' rights plus `mrl.R.node.<node>`.

Each user gets its own reply inbox prefix (`_INBOX_<user>`) and may subscribe only there, so a
user cannot read the API replies of another (which carry consumer names it could then drain).
`EmbeddedServer` renders these roles into `authorization { users = [...] }`; on a cluster the
operator creates the same users (`python -m mrl_actors.see.natsconf RUN POLICY...` prints them) or
the equivalent JWT permissions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import msgspec

from mrl_actors.errors import ConfigError
from mrl_actors.events import kinds_written_by

ADMIN = "admin"
READER = "reader"
# Each kind's writer role is declared once, in `mrl_actors.events.WRITER_ROLES`.
POLICY_KINDS = kinds_written_by("policy")  # on `mrl.R.<kind>.<policy>`, by its own user
RUN_KINDS = (*kinds_written_by("coordinator"), *kinds_written_by("node"))  # never a policy's

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class Permissions(msgspec.Struct, frozen=True, kw_only=True):
    """One user's NATS permissions: subjects it may publish to and subscribe on."""

    publish_allow: tuple[str, ...]
    publish_deny: tuple[str, ...] = ()
    subscribe_allow: tuple[str, ...]


def policy_user(policy: str) -> str:
    return f"policy-{_check('policy', policy)}"


def inbox_prefix(user: str) -> str:
    """The reply-subject prefix a user's client must use (`ConnectionConfig.inbox_prefix`)."""
    return f"_INBOX_{_check('user', user)}"


def check_user(name: str) -> str:
    return _check("user", name)


def _check(what: str, value: str) -> str:
    if not _NAME.match(value):
        raise ConfigError(f"{what} {value!r} must match [A-Za-z0-9_-]{{1,128}} to name a user")
    return value


def _stream(run: str) -> str:
    return f"MRL_{run}"


def _blobs(run: str, writer: str = "") -> str:
    """mrl_actors.see.blobs.bucket_name: `writer`'s own bucket ("": the one an older run
    shared, now read only); its stream is OBJ_<bucket>."""
    return f"MRL_{run}_BLOBS_{_check('policy', writer)}" if writer else f"MRL_{run}_BLOBS"


def _lease(run: str) -> str:
    return f"MRL_{run}_LEASE"  # mrl_actors.see.lease.lease_bucket; its stream is KV_<bucket>


def _read(
    run: str, policies: Iterable[str] = (), *, consumer_names: Iterable[str] = ()
) -> list[str]:
    """JetStream API subjects a client needs to read the run's stream and blobs (each of
    `policies`' buckets, and the shared one of an older run)."""
    s = _stream(run)
    k = f"KV_{_lease(run)}"
    subjects = [
        "$JS.API.INFO",
        f"$JS.API.STREAM.INFO.{s}",
        f"$JS.API.CONSUMER.CREATE.{s}",  # an unnamed (server-named) consumer
        f"$JS.API.CONSUMER.INFO.{s}.*",
        f"$JS.API.CONSUMER.DELETE.{s}.*",
        f"$JS.API.CONSUMER.MSG.NEXT.{s}.*",
        f"$JS.API.DIRECT.GET.{s}",
        f"$JS.API.DIRECT.GET.{s}.>",
        f"$JS.API.STREAM.MSG.GET.{s}",
        f"$JS.ACK.{s}.>",
    ]
    for writer in ("", *policies):
        o = f"OBJ_{_blobs(run, writer)}"
        subjects += [
            # the object store: meta by direct get, chunks through an ordered push consumer
            f"$JS.API.STREAM.INFO.{o}",
            f"$JS.API.CONSUMER.CREATE.{o}",
            f"$JS.API.CONSUMER.CREATE.{o}.>",
            f"$JS.API.CONSUMER.INFO.{o}.*",
            f"$JS.API.CONSUMER.DELETE.{o}.*",
            f"$JS.API.DIRECT.GET.{o}",
            f"$JS.API.DIRECT.GET.{o}.>",
            f"$JS.API.STREAM.MSG.GET.{o}",
            f"$JS.FC.{o}.>",
        ]
    subjects += [
        "$JS.API.STREAM.NAMES",  # the ordered consumer finds the bucket's stream by subject
        # the lease bucket (who holds MWRA): readable by all, written by nodes only
        f"$JS.API.STREAM.INFO.{k}",
        f"$JS.API.DIRECT.GET.{k}",
        f"$JS.API.DIRECT.GET.{k}.>",
        f"$JS.API.STREAM.MSG.GET.{k}",
    ]
    for name in consumer_names:  # durable consumers named after the user's own source
        subjects += [
            f"$JS.API.CONSUMER.CREATE.{s}.{name}",
            f"$JS.API.CONSUMER.CREATE.{s}.{name}.>",
            f"$JS.API.CONSUMER.DURABLE.CREATE.{s}.{name}",
        ]
    return subjects


# Never for a writer, whatever its allow list says (defence in depth: the allow lists above
# already leave these out).
_WRITER_DENY = (
    "$JS.API.STREAM.CREATE.>",
    "$JS.API.STREAM.UPDATE.>",
    "$JS.API.STREAM.DELETE.>",
    "$JS.API.STREAM.PURGE.>",
    "$JS.API.STREAM.MSG.DELETE.>",
    "$JS.API.STREAM.SNAPSHOT.>",
    "$JS.API.STREAM.RESTORE.>",
    "$JS.API.STREAM.PEER.>",
    "$JS.API.STREAM.LEADER.>",
    "$JS.API.ACCOUNT.>",
    "$JS.API.META.>",
    "$JS.API.SERVER.>",
    "$SYS.>",
)


def admin_permissions() -> Permissions:
    return Permissions(publish_allow=(">",), subscribe_allow=(">",))


def _others_consumers(run: str, names: Iterable[str]) -> list[str]:
    """Every API (and ack) subject of the durable consumers `names`: not another user's to
    read, move or delete."""
    s = _stream(run)
    deny: list[str] = []
    for p in names:
        _check("policy", p)
        deny += [
            f"$JS.API.CONSUMER.*.{s}.{p}",
            f"$JS.API.CONSUMER.*.{s}.{p}.>",
            f"$JS.API.CONSUMER.MSG.NEXT.{s}.{p}",
            f"$JS.API.CONSUMER.DURABLE.CREATE.{s}.{p}",
            f"$JS.ACK.{s}.{p}.>",
        ]
    return deny


def reader_permissions(
    run: str, policies: Sequence[str] = (), *, user: str = READER
) -> Permissions:
    """Read-only tools: the read APIs, no event; no policy's durable consumer (`policies`)."""
    return Permissions(
        publish_allow=(*_read(run, policies), "$JS.API.STREAM.LIST"),
        publish_deny=(*_WRITER_DENY, *_others_consumers(run, policies)),
        subscribe_allow=(f"{inbox_prefix(user)}.>",),
    )


def writer_permissions(
    run: str,
    sources: Sequence[str],
    policies: Sequence[str],
    *,
    user: str,
    nodes: Sequence[str] = (),
    prefix: str = "mrl",
) -> Permissions:
    """Publish on `sources`' own subjects and in their own blob buckets (and on `nodes`' node
    subject), read the whole run.

    Consumers named after another of the run's policies are out of reach (their durable cursor
    and their messages are theirs), and so are their blob buckets, but for reading."""
    _check("run", run)
    for name in (*sources, *nodes):
        _check("source", name)
    own = [f"{prefix}.{run}.{k}.{src}" for src in sources for k in POLICY_KINDS]
    own += [f"{prefix}.{run}.node.{n}" for n in nodes]
    others = [p for p in policies if p not in sources]
    deny = [*_WRITER_DENY, *_others_consumers(run, others)]
    return Permissions(
        publish_allow=(
            *own,
            *_read(run, policies, consumer_names=sources),
            *(f"$O.{_blobs(run, src)}.>" for src in sources),
        ),
        publish_deny=tuple(deny),
        subscribe_allow=(f"{inbox_prefix(user)}.>",),
    )


def run_permissions(run: str, policies: Sequence[str]) -> dict[str, Permissions]:
    """Every user of a run on the embedded server: admin, reader and one per policy."""
    users = {ADMIN: admin_permissions(), READER: reader_permissions(run, policies)}
    for p in policies:
        users[policy_user(p)] = writer_permissions(run, [p], policies, user=policy_user(p))
    return users


def node_permissions(
    run: str, node: str, hosted: Sequence[str], policies: Sequence[str], *, user: str
) -> Permissions:
    """An `mrl-node` user on a cluster: its hosted policies' rights plus its node subject, and
    the run's start subjects (any node may start the run; the server lets only the first write
    each start event: `EventLog.append_first`)."""
    base = writer_permissions(run, hosted, policies, user=user, nodes=[node])
    start = [f"mrl.{run}.run.mrl", f"mrl.{run}.slots.placement"]
    start += [f"mrl.{run}.policy.{_check('policy', p)}" for p in policies]
    # any node may hold the MWRA lease and write its decisions (fenced by the log: see
    # mrl_actors.mwra.actor), and it reports its own slot moves
    start += [f"mrl.{run}.slots.mwra", f"mrl.{run}.slots.{node}", f"$KV.{_lease(run)}.>"]
    return msgspec.structs.replace(base, publish_allow=(*start, *base.publish_allow))
