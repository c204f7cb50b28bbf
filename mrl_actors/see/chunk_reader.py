"""A blob's chunks read straight off the socket into their place in one buffer.

nats-py copies every byte it receives five or six times on its way to a subscription (the
socket into asyncio's buffer, out of it, into the parser's buffer, a slice, `bytes()` of the
slice) before our code copies it once more. For weights, gigabytes a version, those copies
are most of the cost. This reader opens its own connection to the server the client is on,
authenticates with the client's own credentials (user and password, token, nkey or JWT, TLS
when the server asks), subscribes to a private inbox, and has the main client create an
ephemeral push consumer (flow control, heartbeats, no acks: what nats-py's ordered consumer
creates) delivering the object's chunk subject there. Each chunk's payload is received with
`recv_into` directly into its place in the output buffer (one copy, by the kernel) and hashed
there; flow-control requests are answered on the same connection.

It runs in a worker thread (blocking socket, bounded by a timeout), so the event loop stays
free. Anything it does not expect (a gap in the delivery sequence, an error line, a lost
connection) raises `ChunkReadError`, and the caller reads the blob again the ordinary way.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from typing import Any

from mrl_actors.errors import LogError


class ChunkReadError(LogError):
    """The fast path could not read the blob; the caller falls back to nats-py's reader."""


_CRLF = b"\r\n"
_MAX_LINE = 64 * 1024


class _Conn:
    """A minimal NATS protocol connection: control lines buffered, payloads received in place."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray(_MAX_LINE)
        self.lo = 0  # unread bytes are buf[lo:hi]
        self.hi = 0

    def _fill(self) -> None:
        if self.lo == self.hi:
            self.lo = self.hi = 0
        elif self.hi == len(self.buf):
            self.buf[: self.hi - self.lo] = self.buf[self.lo : self.hi]
            self.hi -= self.lo
            self.lo = 0
        n = self.sock.recv_into(memoryview(self.buf)[self.hi :])
        if not n:
            raise ChunkReadError("the server closed the blob connection")
        self.hi += n

    def line(self) -> bytes:
        while True:
            i = self.buf.find(_CRLF, self.lo, self.hi)
            if i >= 0:
                out = bytes(self.buf[self.lo : i])
                self.lo = i + 2
                return out
            if self.hi - self.lo >= _MAX_LINE - 2:
                raise ChunkReadError("a protocol line longer than 64 KiB")
            self._fill()

    def read_into(self, out: memoryview) -> None:
        """Exactly `len(out)` bytes: what is buffered first, then the socket straight into it."""
        have = min(self.hi - self.lo, len(out))
        out[:have] = self.buf[self.lo : self.lo + have]
        self.lo += have
        got = have
        while got < len(out):
            n = self.sock.recv_into(out[got:])
            if not n:
                raise ChunkReadError("the server closed the blob connection")
            got += n

    def take(self, n: int) -> bytes:
        out = bytearray(n)
        self.read_into(memoryview(out))
        return bytes(out)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)


def connect_like(nc: Any, timeout_s: float) -> _Conn:
    """A raw connection to the server `nc` is connected to, with `nc`'s credentials."""
    url = nc.connected_url
    if url is None or url.scheme not in ("nats", "tls", None, ""):
        raise ChunkReadError(f"no plain NATS URL to open a blob connection to ({url})")
    sock = socket.create_connection((url.hostname, url.port or 4222), timeout=timeout_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = _Conn(sock)
    try:
        first = conn.line()
        if not first.startswith(b"INFO "):
            raise ChunkReadError(f"expected INFO from the server, got {first[:40]!r}")
        info = json.loads(first[5:])
        if info.get("tls_required") or url.scheme == "tls":
            ctx = nc.ssl_context if nc.options.get("tls") else ssl.create_default_context()
            name = nc.options.get("tls_hostname") or url.hostname
            sock = ctx.wrap_socket(sock, server_hostname=name)
            conn = _Conn(sock)
        conn.send(b"CONNECT " + json.dumps(_connect_options(nc, info)).encode() + _CRLF)
        conn.send(b"PING" + _CRLF)
        while True:
            reply = conn.line()
            if reply == b"PONG":
                return conn
            if reply.startswith(b"-ERR"):
                raise ChunkReadError(f"the server refused the blob connection: {reply[:200]!r}")
    except BaseException:
        sock.close()
        raise


def _connect_options(nc: Any, info: dict[str, Any]) -> dict[str, Any]:
    """CONNECT's fields, credentials as the client sends them (nats-py keeps them on `nc`)."""
    opts: dict[str, Any] = {
        "verbose": False,
        "pedantic": False,
        "lang": "python3",
        "version": "mrl-chunk-reader",
        "protocol": 1,
        "headers": True,
        "no_responders": True,
        "echo": False,
    }
    o = nc.options
    nonce = info.get("nonce")
    sign = getattr(nc, "_signature_cb", None)
    if nonce and sign is not None:  # nkey or JWT (creds file)
        opts["sig"] = sign(nonce).decode()
        jwt_cb = getattr(nc, "_user_jwt_cb", None)
        if jwt_cb is not None:
            opts["jwt"] = jwt_cb().decode()
        elif getattr(nc, "_public_nkey", None):
            opts["nkey"] = nc._public_nkey
    user, password, token = o.get("user"), o.get("password"), o.get("token")
    if user is not None and password is not None:
        opts["user"] = user() if callable(user) else user
        opts["pass"] = password() if callable(password) else password
    if token is not None:
        opts["auth_token"] = token() if callable(token) else token
    return opts


def _status(header: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    lines = header.split(_CRLF)
    fields = {}
    for ln in lines[1:]:
        k, sep, v = ln.partition(b":")
        if sep:
            fields[k.strip().lower()] = v.strip()
    return lines[0], fields


def pour(
    conn: _Conn,
    inbox: str,
    out: memoryview,
    hasher: Any,
    *,
    chunks: int | None = None,
    stall_s: float = 30.0,
) -> None:
    """Receive the consumer's deliveries on `inbox` into `out` until it is full, updating
    `hasher` with each chunk where it landed. The consumer must be created after this
    connection's `SUB` (`subscribe`) has been answered. No chunk for `stall_s` (heartbeats
    alone keep the socket busy: chunks that are gone) is a `ChunkReadError`."""
    got = 0
    expected = 1  # the next consumer (delivery) sequence
    last = time.monotonic()
    while got < len(out):
        if time.monotonic() - last > stall_s:
            raise ChunkReadError(f"no chunk for {stall_s:.0f} s ({got} of {len(out)} bytes)")
        line = conn.line()
        if line.startswith(b"HMSG ") or line.startswith(b"MSG "):
            parts = line.split()
            if parts[0] == b"HMSG":
                reply = parts[3] if len(parts) == 6 else b""
                hlen, total = int(parts[-2]), int(parts[-1])
            else:
                reply = parts[3] if len(parts) == 5 else b""
                hlen, total = 0, int(parts[-1])
            header = conn.take(hlen) if hlen else b""
            size = total - hlen
            if header.startswith(b"NATS/1.0 100") or (header and size == 0):
                conn.take(size + 2)
                status, fields = _status(header)
                stalled = fields.get(b"nats-consumer-stalled")
                answer = reply if b"FlowControl" in status else stalled
                if answer:
                    conn.send(b"PUB " + answer + b" 0" + _CRLF + _CRLF)
                continue
            if header:  # a chunk with headers: not what our writers publish
                raise ChunkReadError(f"unexpected headers on a chunk: {header[:80]!r}")
            tokens = reply.split(b".")
            dseq = int(tokens[6] if len(tokens) == 9 else tokens[8]) if reply else expected
            if dseq != expected:
                raise ChunkReadError(f"delivery {dseq} after {expected - 1}: a gap")
            expected += 1
            if got + size > len(out):
                from mrl_actors.errors import BlobIntegrityError

                raise BlobIntegrityError(f"chunks hold more than the blob's {len(out)} bytes")
            dst = out[got : got + size]
            conn.read_into(dst)  # [size] straight from the socket into its place
            hasher.update(dst)
            got += size
            last = time.monotonic()
            if conn.take(2) != _CRLF:
                raise ChunkReadError("a chunk not followed by CRLF")
        elif line == b"PING":
            conn.send(b"PONG" + _CRLF)
        elif line.startswith(b"-ERR"):
            raise ChunkReadError(f"the server sent {line[:200]!r}")
        # PONG, +OK, INFO: nothing to do
    if chunks is not None and expected - 1 != chunks:
        raise ChunkReadError(f"{expected - 1} chunks delivered, the meta says {chunks}")


def subscribe(conn: _Conn, inbox: str) -> None:
    """Subscribe `inbox` and wait until the server has it (its PONG)."""
    conn.send(f"SUB {inbox} 1".encode() + _CRLF + b"PING" + _CRLF)
    while True:
        reply = conn.line()
        if reply == b"PONG":
            return
        if reply.startswith(b"-ERR"):
            raise ChunkReadError(f"the server refused the blob subscription: {reply[:200]!r}")
