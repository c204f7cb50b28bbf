"""The production cluster of ops/: three TLS servers from the templates, one account per run.

Certificates come from a CA this test makes in `tmp_path`; the servers listen on 127.0.0.1 free
ports and are stopped by PID. Checked: every rendered config passes `nats-server -t`, a client
without a certificate from the cluster CA is refused, and run A's credentials can neither
publish to, subscribe to, nor see the streams of run B, while each run's own log works with
three replicas.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import ipaddress
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from helpers.cluster import Started, start_ready

from mrl_actors import events as ev
from mrl_actors.errors import ServerError
from mrl_actors.see import EventLog, LogConfig
from mrl_actors.see.connection import ConnectionConfig, connect
from mrl_actors.see.server import free_port, nats_server_binary

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("render_nats", ROOT / "ops" / "render_nats.py")
assert _spec is not None and _spec.loader is not None
render_nats = importlib.util.module_from_spec(_spec)
sys.modules["render_nats"] = render_nats
_spec.loader.exec_module(render_nats)

RUNS = ("runa", "runb")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --------------------------------------------------------------------------- certificates


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path = path.with_name(path.stem + "-key.pem")
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)


def _ca(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], name: str, *, server: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = dt.datetime.now(dt.UTC)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if server:  # a server also dials its peers' routes, so it is a client too
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(ca[1], hashes.SHA256()), key


def make_certificates(tls: Path, servers: list[str]) -> None:
    """The cluster CA, a certificate per server and per run, and a stranger's CA and client."""
    tls.mkdir(parents=True)
    ca = _ca("mrl test CA")
    (tls / "ca.pem").write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    for name in servers:
        _write(tls / f"{name}.pem", *_leaf(ca, name, server=True))
    for run in RUNS:
        _write(tls / f"client-{run}.pem", *_leaf(ca, f"node-{run}", server=False))
    rogue = _ca("someone else")
    _write(tls / "rogue.pem", *_leaf(rogue, "node-runa", server=False))


# --------------------------------------------------------------------------- the cluster


@dataclass
class Cluster:
    out: Path
    tls: Path
    servers: list[Any]  # render_nats.Server
    configs: dict[str, Path]
    procs: list[subprocess.Popen[bytes]]

    def url(self, i: int = 0) -> str:
        return f"tls://127.0.0.1:{self.servers[i].client_port}"

    def urls(self) -> str:
        return ",".join(self.url(i) for i in range(len(self.servers)))

    def credentials(self, run: str) -> dict[str, str]:
        env = (self.out / "credentials" / f"{run}.env").read_text().splitlines()
        return dict(line.split("=", 1) for line in env if line)

    def config(self, run: str, **changes: Any) -> ConnectionConfig:
        c = self.credentials(run)
        base: dict[str, Any] = {
            "url": self.urls(),
            "user": c["MRL_NATS_USER"],
            "password": c["MRL_NATS_PASSWORD"],
            "tls_ca": c["MRL_NATS_TLS_CA"],
            "tls_cert": c["MRL_NATS_TLS_CERT"],
            "tls_key": c["MRL_NATS_TLS_KEY"],
            "connect_timeout": 3.0,
            "max_reconnect_attempts": 0,
        }
        base.update(changes)
        return ConnectionConfig(**base)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    names = ["n1", "n2", "n3"]
    tls = tmp_path / "tls"
    make_certificates(tls, names)
    out = tmp_path / "etc"
    limits = render_nats.Limits(
        js_max_memory="64M", js_max_file="256M", max_memory_store="256M", max_file_store="1G"
    )
    binary = nats_server_binary()
    servers: list[render_nats.Server] = []
    configs: dict[str, Path] = {}

    def launch() -> Started:
        servers[:] = [
            render_nats.Server(
                name=n,
                host="127.0.0.1",
                bind="127.0.0.1",
                client_port=free_port(),
                cluster_port=free_port(),
                monitor_port=free_port(),
            )
            for n in names
        ]
        shutil.rmtree(tmp_path / "js", ignore_errors=True)
        configs.clear()
        configs.update(
            render_nats.render_cluster(
                servers, list(RUNS), out, tls_dir=tls, store_dir=tmp_path / "js", limits=limits
            )
        )
        for conf in configs.values():  # every rendered config passes the server's own check
            check = subprocess.run([binary, "-t", "-c", str(conf)], capture_output=True, timeout=30)
            assert check.returncode == 0, check.stderr.decode()
        started = Started([], [s.monitor_port for s in servers], [])
        for s in servers:
            log = tmp_path / f"{s.name}.log"
            started.logs.append(log)
            with log.open("wb") as f:
                started.procs.append(
                    subprocess.Popen(
                        [binary, "-c", str(configs[s.name])], stdout=f, stderr=subprocess.STDOUT
                    )
                )
        return started

    procs = start_ready(launch).procs
    try:
        yield Cluster(out, tls, servers, configs, procs)
    finally:
        _stop(procs)


async def _raw(cluster: Cluster, run: str, errors: list[str]) -> Any:
    """A plain nats-py client with run credentials that records the server's errors."""
    import nats

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    cfg = cluster.config(run)
    return await nats.connect(
        servers=[cluster.url(0)],
        user=cfg.user,
        password=cfg.password,
        tls=cfg.tls_context(),
        error_cb=on_error,
        allow_reconnect=False,
        connect_timeout=3,
    )


@pytest.fixture
async def clients(cluster: Cluster) -> AsyncIterator[tuple[Any, Any]]:
    a = await connect(cluster.config("runa"))
    b = await connect(cluster.config("runb"))
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


def _heartbeat(run: str, n: int) -> ev.NodeHeartbeat:
    return ev.NodeHeartbeat(
        run=run, source="n0", event_id=ev.event_id("node", run, "n0", "hb", n), node="n0", slots=1
    )


# --------------------------------------------------------------------------- tests


async def test_each_run_keeps_a_replicated_log_in_its_own_account(
    cluster: Cluster, clients: tuple[Any, Any]
) -> None:
    a, b = clients
    log_a = await EventLog.open(a, "runa", LogConfig(replicas=3))
    log_b = await EventLog.open(b, "runb", LogConfig(replicas=3))
    seq_a = await log_a.append(_heartbeat("runa", 1))
    seq_b = await log_b.append(_heartbeat("runb", 1))
    assert (await log_a.get(seq_a)).event == _heartbeat("runa", 1)
    assert (await log_b.get(seq_b)).event == _heartbeat("runb", 1)
    info = await a.jetstream().stream_info("MRL_runa")
    assert info.config.num_replicas == 3 and len(info.cluster.replicas or []) == 2
    from nats.js.errors import NotFoundError

    with pytest.raises(NotFoundError):  # run B's stream does not exist in run A's account
        await a.jetstream().stream_info("MRL_runb")


async def test_run_a_cannot_publish_or_read_run_b_subjects(cluster: Cluster) -> None:
    b_errors: list[str] = []
    a_errors: list[str] = []
    b = await _raw(cluster, "runb", b_errors)
    a = await _raw(cluster, "runa", a_errors)
    try:
        got_b: list[str] = []
        got_a: list[str] = []

        async def on_b(msg: Any) -> None:
            got_b.append(msg.subject)

        async def on_a(msg: Any) -> None:
            got_a.append(msg.subject)

        await b.subscribe("mrl.runb.>", cb=on_b)
        await a.subscribe("mrl.runb.>", cb=on_a)  # refused by the server
        await a.publish("mrl.runb.node.intruder", b"x")  # refused by the server
        await b.publish("mrl.runb.node.own", b"y")  # run B's own traffic: delivered
        await a.flush()
        await b.flush()
        with anyio.move_on_after(10):
            while not (got_b and len(a_errors) >= 2):
                await anyio.sleep(0.05)
        await anyio.sleep(0.5)  # room for a wrongly delivered message to arrive
        assert got_b == ["mrl.runb.node.own"]  # never the intruder's
        assert got_a == []
        violations = " ".join(a_errors)
        assert "permissions violation for subscription to" in violations.lower()
        assert "permissions violation for publish to" in violations.lower()
        assert b_errors == []
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("case", ["no certificate", "stranger's certificate", "no tls"])
async def test_client_without_a_valid_certificate_is_refused(cluster: Cluster, case: str) -> None:
    good = cluster.config("runa")
    assert good.tls_cert  # the same credentials with the right certificate connect (above)
    if case == "no certificate":
        cfg = cluster.config("runa", url=cluster.url(0), tls_cert="", tls_key="")
    elif case == "stranger's certificate":
        rogue = cluster.tls / "rogue.pem"
        cfg = cluster.config(
            "runa", url=cluster.url(0), tls_cert=str(rogue), tls_key=str(rogue)[:-4] + "-key.pem"
        )
    else:
        port = cluster.servers[0].client_port
        cfg = cluster.config("runa", url=f"nats://127.0.0.1:{port}", tls_ca="", tls_cert="")
    with pytest.raises(ServerError, match="refused the connection"):  # at once: no retries
        nc = await connect(cfg)
        await nc.close()
