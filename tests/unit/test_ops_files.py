"""The files under ops/ that no server starts here: systemd units, Prometheus, Grafana, templates.

(The NATS templates are rendered, checked with `nats-server -t` and started as a TLS cluster in
tests/integration/test_ops_cluster.py.)
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mrl_actors.report.metrics import COUNTERS, GAUGES, MetricsConfig

OPS = Path(__file__).resolve().parents[2] / "ops"
UNITS = sorted((OPS / "systemd").glob("*.service"))
HARDENING = (
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "PrivateTmp=yes",
    "ProtectHome=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectControlGroups=yes",
    "RestrictNamespaces=yes",
    "RestrictSUIDSGID=yes",
    "CapabilityBoundingSet=",
)


def _series() -> set[str]:
    """Every series name `mrl_actors.report.metrics` exposes, as Prometheus spells it."""
    return set(GAUGES) | {f"{name}_total" for name in COUNTERS} | {"mrl_seconds_since_learner_step"}


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_units_are_hardened_and_run_unprivileged(unit: Path) -> None:
    text = unit.read_text()
    for line in HARDENING:
        assert re.search(rf"^{re.escape(line)}\s*$", text, re.M), f"{unit.name}: no {line}"
    assert re.search(r"^User=(?!root)\w+", text, re.M), f"{unit.name} must not run as root"
    assert re.search(r"^ReadWritePaths=/var/lib/\w+", text, re.M)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_units_pass_systemd_analyze(unit: Path, tmp_path: Path) -> None:
    # A template unit (`name@.service`) is verified as an instance of itself.
    target = tmp_path / unit.name.replace("@.", "@check.")
    target.write_text(unit.read_text())
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(target)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # The binaries are installed on the hosts, not here; everything else must be clean.
    problems = [
        line
        for line in (done.stdout + done.stderr).splitlines()
        if line.strip() and "is not executable" not in line
    ]
    assert problems == []


def test_prometheus_scrapes_the_metrics_port() -> None:
    config = yaml.safe_load((OPS / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = [t for sc in jobs["mrl-node"]["static_configs"] for t in sc["targets"]]
    assert f"127.0.0.1:{MetricsConfig().port}" in targets
    assert jobs["mrl-node"]["metrics_path"] == "/metrics"


def test_grafana_dashboard_shows_every_series_and_only_real_ones() -> None:
    dashboard = json.loads((OPS / "grafana" / "mrl-run.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\bmrl_\w+", expr)}
    assert used <= _series(), f"unknown series on the dashboard: {used - _series()}"
    shown = _series() - {"mrl_learner_step_timestamp_seconds"}  # shown as seconds-since
    assert shown <= used, f"series missing from the dashboard: {shown - used}"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_templates_name_only_known_placeholders(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("render_nats", OPS / "render_nats.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["render_nats"] = module
    spec.loader.exec_module(module)
    with pytest.raises(module.RenderError, match="server_name"):
        module.render((OPS / "nats" / "server.conf.tmpl").read_text(), {})
    with pytest.raises(module.RenderError, match="must match"):
        module.render_cluster([], ["bad.run"], tmp_path, tls_dir=tmp_path, store_dir=tmp_path)
