"""Render the production NATS cluster configs from the templates next to this file.

    python ops/render_nats.py --out /etc/nats --tls-dir /etc/nats/tls --store-dir /var/lib/nats \
        --server n1=10.0.0.11 --server n2=10.0.0.12 --server n3=10.0.0.13 \
        --run math-pair --run toy-pair

writes, for each server, `OUT/<name>/server.conf` and `OUT/<name>/accounts.conf` (the same
accounts on every server), and `OUT/credentials/<run>.env` (mode 0600) with the `MRL_NATS_*`
variables a node of that run needs. Passwords are generated once and kept: rendering again with
the same `--out` reuses `OUT/credentials/*.password`, so adding a run does not log out the others.

Templates use `{{name}}` placeholders (NATS configs use `$` for their own variables); every
placeholder must be given a value, or rendering fails naming it.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent / "nats"
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class RenderError(ValueError):
    """A template placeholder has no value, or an argument is malformed."""


def render(template: str, values: dict[str, str]) -> str:
    """`template` with every `{{name}}` replaced; unknown names are an error, not left in."""
    missing = sorted({m for m in _PLACEHOLDER.findall(template) if m not in values})
    if missing:
        raise RenderError(f"template needs values for: {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


@dataclass(frozen=True)
class Server:
    name: str
    host: str  # address other servers and clients reach it at
    client_port: int = 4222
    cluster_port: int = 6222
    monitor_port: int = 8222
    bind: str = "0.0.0.0"  # address it listens on


@dataclass(frozen=True)
class Limits:
    """Per-run account JetStream limits, and server-wide ceilings."""

    js_max_memory: str = "1G"
    js_max_file: str = "200G"
    js_max_streams: int = 8
    js_max_consumers: int = 512
    max_memory_store: str = "4G"
    max_file_store: str = "1T"


def _password(cred_dir: Path, name: str) -> str:
    path = cred_dir / f"{name}.password"
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(24)
    path.write_text(value + "\n")
    path.chmod(0o600)
    return value


def render_cluster(
    servers: list[Server],
    runs: list[str],
    out: Path,
    *,
    tls_dir: Path,
    store_dir: Path,
    cluster_name: str = "mrl",
    limits: Limits | None = None,
) -> dict[str, Path]:
    """Write every server's config and each run's credentials; the server configs by name."""
    limits = limits or Limits()
    for run in runs:
        if not _TOKEN.match(run):
            raise RenderError(f"run {run!r} must match [A-Za-z0-9_-]{{1,128}} (a subject token)")
    if len({s.name for s in servers}) != len(servers):
        raise RenderError("server names must be unique")
    cred_dir = out / "credentials"
    cred_dir.mkdir(parents=True, exist_ok=True)
    cred_dir.chmod(0o700)
    account_tmpl = (HERE / "run-account.conf.tmpl").read_text()
    blocks = []
    for run in runs:
        user = f"node-{run}"
        password = _password(cred_dir, run)
        blocks.append(
            render(
                account_tmpl,
                {
                    "run": run,
                    "account": f"RUN_{run}",
                    "user": user,
                    "password": password,
                    "js_max_memory": limits.js_max_memory,
                    "js_max_file": limits.js_max_file,
                    "js_max_streams": str(limits.js_max_streams),
                    "js_max_consumers": str(limits.js_max_consumers),
                },
            )
        )
        urls = ",".join(f"tls://{s.host}:{s.client_port}" for s in servers)
        env = cred_dir / f"{run}.env"
        env.write_text(
            f"MRL_NATS_URL={urls}\n"
            f"MRL_NATS_USER={user}\n"
            f"MRL_NATS_PASSWORD={password}\n"
            f"MRL_NATS_INBOX_PREFIX=_INBOX_{user}\n"
            f"MRL_NATS_TLS_CA={tls_dir}/ca.pem\n"
            f"MRL_NATS_TLS_CERT={tls_dir}/client-{run}.pem\n"
            f"MRL_NATS_TLS_KEY={tls_dir}/client-{run}-key.pem\n"
        )
        env.chmod(0o600)
    accounts = render(
        (HERE / "accounts.conf.tmpl").read_text(),
        {"sys_password": _password(cred_dir, "SYS"), "run_accounts": "\n".join(blocks)},
    )
    server_tmpl = (HERE / "server.conf.tmpl").read_text()
    written: dict[str, Path] = {}
    for s in servers:
        routes = "\n".join(
            f'    "nats-route://{peer.host}:{peer.cluster_port}"' for peer in servers
        )
        text = render(
            server_tmpl,
            {
                "server_name": s.name,
                "client_listen": f"{s.bind}:{s.client_port}",
                "cluster_listen": f"{s.bind}:{s.cluster_port}",
                "monitor_listen": f"127.0.0.1:{s.monitor_port}",
                "tls_dir": str(tls_dir),
                "store_dir": str(store_dir / s.name) if len(servers) > 1 else str(store_dir),
                "max_memory_store": limits.max_memory_store,
                "max_file_store": limits.max_file_store,
                "cluster_name": cluster_name,
                "routes": routes,
            },
        )
        target = out / s.name
        target.mkdir(parents=True, exist_ok=True)
        (target / "server.conf").write_text(text)
        (target / "accounts.conf").write_text(accounts)
        (target / "accounts.conf").chmod(0o600)  # it holds passwords
        written[s.name] = target / "server.conf"
    return written


def _server(arg: str) -> Server:
    name, _, host = arg.partition("=")
    if not name or not host:
        raise argparse.ArgumentTypeError(f"--server {arg!r}: use NAME=HOST")
    return Server(name=name, host=host)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tls-dir", type=Path, default=Path("/etc/nats/tls"))
    parser.add_argument("--store-dir", type=Path, default=Path("/var/lib/nats/jetstream"))
    parser.add_argument("--server", type=_server, action="append", required=True)
    parser.add_argument("--run", action="append", required=True, help="a run id (repeat)")
    parser.add_argument("--cluster-name", default="mrl")
    args = parser.parse_args(argv)
    try:
        written = render_cluster(
            args.server,
            args.run,
            args.out,
            tls_dir=args.tls_dir,
            store_dir=args.store_dir,
            cluster_name=args.cluster_name,
        )
    except (RenderError, OSError) as exc:
        print(f"mrl: error: {exc}", file=sys.stderr)
        return 2
    for name, path in written.items():
        print(f"{name}: {path}")
    print(f"credentials: {args.out / 'credentials'} (one .env per run, mode 0600)")
    return 0


if __name__ == "__main__":
    os.umask(0o077)
    raise SystemExit(main())
