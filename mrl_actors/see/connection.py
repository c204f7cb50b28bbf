"""How a process reaches a NATS server: URL and credentials, from config or the environment.

The same code talks to the embedded server (token) and to a remote JetStream cluster (token, user
and password, a `.creds` file, an nkey seed, TLS). Credentials live only here and in the process
environment: `ConnectionConfig` is never encoded into an event, and its `repr` hides secrets.

Environment variables (each overrides nothing given explicitly):
`MRL_NATS_URL` (comma-separated for a cluster), `MRL_NATS_TOKEN`, `MRL_NATS_USER`,
`MRL_NATS_PASSWORD`, `MRL_NATS_CREDS`, `MRL_NATS_NKEY_SEED`, `MRL_NATS_TLS_CA`,
`MRL_NATS_TLS_CERT`, `MRL_NATS_TLS_KEY`, `MRL_NATS_INBOX_PREFIX` (default `_INBOX_<user>` when a
user is given: the embedded server lets each user subscribe only to its own inbox).

A lost server is retried `max_reconnect_attempts` times, `reconnect_time_wait` apart; then the
connection closes and `connect(..., on_lost=...)` calls back, so a run ends with a clear error
instead of waiting forever. No message names a password: `redact` removes it from every one.
"""

from __future__ import annotations

import contextlib
import os
import re
import ssl
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import msgspec

from mrl_actors.errors import ConfigError, ServerError
from mrl_actors.logs import get_logger

_log = get_logger(__name__)

_ENV = {
    "url": "MRL_NATS_URL",
    "token": "MRL_NATS_TOKEN",
    "user": "MRL_NATS_USER",
    "password": "MRL_NATS_PASSWORD",
    "creds_file": "MRL_NATS_CREDS",
    "nkey_seed_file": "MRL_NATS_NKEY_SEED",
    "tls_ca": "MRL_NATS_TLS_CA",
    "tls_cert": "MRL_NATS_TLS_CERT",
    "tls_key": "MRL_NATS_TLS_KEY",
    "inbox_prefix": "MRL_NATS_INBOX_PREFIX",
}
_SECRET = ("token", "password")


class ConnectionConfig(msgspec.Struct, frozen=True, kw_only=True, repr_omit_defaults=True):
    """Where the server is and how to authenticate; decoded from a TOML `[nats]` table or env."""

    url: str = "nats://127.0.0.1:4222"  # one URL, or several separated by commas (a cluster)
    token: str = ""  # embedded server: generated per run
    user: str = ""
    password: str = ""
    creds_file: str = ""  # NATS decentralised auth: a .creds file (JWT + nkey seed)
    nkey_seed_file: str = ""  # a file holding an nkey seed (SU...)
    tls_ca: str = ""  # CA bundle that signed the server certificate; enables TLS
    tls_cert: str = ""  # client certificate for mutual TLS
    tls_key: str = ""
    inbox_prefix: str = ""  # reply subjects; empty: `_INBOX_<user>` with a user, else `_INBOX`
    name: str = "mrl"  # client name, shown in the server's connection list
    connect_timeout: float = 5.0
    max_reconnect_attempts: int = 15  # then the connection closes and the run ends
    reconnect_time_wait: float = 2.0  # seconds between attempts: about 30 s in all

    def inbox(self) -> str:
        return self.inbox_prefix or (f"_INBOX_{self.user}" if self.user else "_INBOX")

    def __repr__(self) -> str:  # never print a secret
        fields = {
            k: ("***" if k in _SECRET and v else redact(v) if k == "url" else v)
            for k, v in msgspec.structs.asdict(self).items()
            if v
        }
        return f"ConnectionConfig({', '.join(f'{k}={v!r}' for k, v in fields.items())})"

    __str__ = __repr__

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> ConnectionConfig:
        """Fields from `MRL_NATS_*`, then `overrides` (non-empty ones) on top."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {f: env[v] for f, v in _ENV.items() if env.get(v)}
        values.update({k: v for k, v in overrides.items() if v not in (None, "")})
        try:
            return msgspec.convert(values, cls)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"NATS connection config: {exc}") from exc

    def tls_context(self) -> ssl.SSLContext | None:
        if not (self.tls_ca or self.tls_cert):
            return None
        ctx = ssl.create_default_context(cafile=self.tls_ca or None)
        if self.tls_cert:
            ctx.load_cert_chain(self.tls_cert, self.tls_key or None)
        return ctx


_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^@/\s]*)@")


def redact(text: str, cfg: ConnectionConfig | None = None) -> str:
    """`text` without credentials: URL user-info (`nats://u:p@h` -> `nats://***@h`) and, given
    `cfg`, any literal occurrence of its password or token."""
    out = _USERINFO.sub(lambda m: f"{m['scheme']}***@", text)
    if cfg is not None:
        for secret in (cfg.password, cfg.token):
            if secret:
                out = out.replace(secret, "***")
    return out


def _refused(exc: BaseException) -> bool:
    """The server said no to these credentials or this certificate: retrying cannot help."""
    from nats.errors import AuthorizationError

    # during the handshake nats-py reports the server's -ERR as a plain `Error` with its text
    if isinstance(exc, AuthorizationError) or "authorization violation" in str(exc).lower():
        return True
    # a TLS alert or a failed verification; not an EOF or a reset, which a restart also gives
    return isinstance(exc, ssl.SSLError) and not isinstance(
        exc, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLSyscallError
    )


async def connect(cfg: ConnectionConfig, *, on_lost: Callable[[str], None] | None = None) -> Any:
    """An open `nats.aio.client.Client`; raises `ServerError` naming the URL when it cannot.

    `on_lost(reason)` is called once if the connection closes by itself later (the server is
    gone and every reconnect attempt failed), not when the caller closes it.
    """
    import nats.aio.client

    kwargs: dict[str, Any] = {
        "servers": [u.strip() for u in cfg.url.split(",") if u.strip()],
        "name": cfg.name,
        "connect_timeout": cfg.connect_timeout,
        "max_reconnect_attempts": cfg.max_reconnect_attempts,
        "reconnect_time_wait": cfg.reconnect_time_wait,
        "inbox_prefix": cfg.inbox(),
    }
    if cfg.token:
        kwargs["token"] = cfg.token
    if cfg.user:
        kwargs["user"] = cfg.user
        kwargs["password"] = cfg.password
    if cfg.creds_file:
        kwargs["user_credentials"] = cfg.creds_file
    if cfg.nkey_seed_file:
        kwargs["nkeys_seed"] = cfg.nkey_seed_file
    tls = cfg.tls_context()
    if tls is not None:
        kwargs["tls"] = tls

    errors: list[str] = []
    where = redact(cfg.url)
    client: list[Any] = []

    refused: list[str] = []  # the first connect's answer when it can only be no
    attempt = anyio.CancelScope()

    async def _on_error(exc: Exception) -> None:
        errors.append(redact(str(exc), cfg))
        _log.warning("nats_client_error", url=where, error=errors[-1])
        if not client and _refused(exc):
            refused.append(errors[-1])
            attempt.cancel()

    async def _on_closed() -> None:
        from nats.errors import NoServersError

        # closed after every reconnect attempt failed (nats-py records NoServersError then),
        # not closed by its owner
        if on_lost is not None and client and isinstance(client[0].last_error, NoServersError):
            last = errors[-1] if errors else "connection closed"
            on_lost(
                f"lost the log server at {where} after {cfg.max_reconnect_attempts} "
                f"reconnect attempts ({last})"
            )

    kwargs["error_cb"] = _on_error
    kwargs["closed_cb"] = _on_closed
    # nats-py keeps retrying a refused first connection (bad credentials included) while
    # reconnects are allowed: credentials or a certificate the server refused end the first
    # connect at once, anything else (no server listening yet) within a bound.
    limit = cfg.connect_timeout * (len(kwargs["servers"]) + 1) + 1.0
    nc = nats.aio.client.Client()
    connected = False
    try:
        with attempt, anyio.fail_after(limit):
            await nc.connect(**kwargs)
            connected = True
    except TimeoutError as exc:
        last = errors[-1] if errors else "no answer"
        raise ServerError(f"cannot connect to NATS at {where} within {limit:.0f}s: {last}") from exc
    except Exception as exc:
        raise ServerError(f"cannot connect to NATS at {where}: {redact(repr(exc), cfg)}") from exc
    finally:
        if not connected:  # an attempt stopped half-way leaves no socket or task behind
            shielded = anyio.CancelScope(shield=True)
            with shielded, anyio.move_on_after(2.0), contextlib.suppress(Exception):
                await nc.close()
    if not connected:
        raise ServerError(f"NATS at {where} refused the connection: {refused[0]}")
    client.append(nc)
    return nc
