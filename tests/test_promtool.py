"""The metrics and the alert rules pass Prometheus's own tool.

`promtool check metrics` lints what a real daemon serves on /metrics (one
prefix, base units, counter suffixes, help text); `promtool check rules` and
`promtool test rules` check docs/alerts.yml and its unit tests
(tests/alerts_test.yml). promtool comes from Debian's `prometheus` package,
which `.ci/run` installs; where it is absent these tests are skipped.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from taps import Tapped

import poller
from poller.config import parse_config
from poller.daemon.daemon import PollerDaemon, make_sink
from poller.metrics import PollerMetrics, add_process_metrics
from poller.testing.memory_sink import MemorySink

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "docs" / "alerts.yml"
ALERT_TESTS = ROOT / "tests" / "alerts_test.yml"
ACME, XYZ = "acme-corp", "xyz-inc"
CHECK = [{"service_type": "process", "service_name": "nginx", "details": "nginx"}]

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus)")


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False)


async def served_metrics(pki, serve, nats_server, tmp_path: Path) -> str:
    """/metrics of a daemon with a proven agent, an impostor and a NATS sink (its outbox on disk)."""
    good = await serve(pki.agent(ACME, "agent-001"))
    impostor = await serve(pki.agent(ACME, "agent-666", issuer_tenant=XYZ, dns=[]))
    settings = parse_config(
        {
            "poller_id": "poller-test",
            "poll_interval": "10s",
            "call_timeout": "1s",
            "certs_dir": str(pki.directory),
            "metrics_listen": "127.0.0.1:0",
            "sink": {"type": "nats", "url": nats_server.url, "outbox": str(tmp_path / "outbox.db")},
            "agents": {
                "good": {"address": good.address, "tenant": ACME, "checks": CHECK},
                "impostor": {"address": impostor.address, "tenant": ACME, "checks": CHECK},
                "other": {"address": good.address, "tenant": XYZ, "checks": CHECK},
            },
        }
    )
    # As PollerDaemon makes them for itself, with a tap on the NATS sink to know when every agent was polled.
    metrics = PollerMetrics()
    add_process_metrics(metrics.registry, version=poller.__version__)
    seen = MemorySink()
    daemon = PollerDaemon(settings, sink=Tapped(make_sink(settings, metrics), seen), metrics=metrics)
    task = asyncio.ensure_future(daemon.run(install_signals=False))
    try:
        async with asyncio.timeout(30):
            everyone = {(ACME, "good"), (ACME, "impostor"), (XYZ, "other")}
            await seen.wait_for(lambda rs: {(r.tenant, r.agent) for r in rs} == everyone)
        url = f"http://127.0.0.1:{daemon.metrics_port}/metrics"
        return (await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())).decode()
    finally:
        daemon.request_stop()
        assert await task == 0


@needs_promtool
async def test_promtool_check_metrics_is_clean_on_a_real_daemon(pki, serve, nats_server, tmp_path):
    text = await served_metrics(pki, serve, nats_server, tmp_path)
    names = {family.name for family in text_string_to_metric_families(text)}
    # What the check covers: the poller's, the NATS sink's, the process collectors and the build info.
    assert {"poller_polls", "poller_outbox_pending", "process_cpu_seconds", "poller_build_info"} <= names
    checked = promtool("check", "metrics", stdin=text)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == ""


def test_every_poller_metric_has_the_one_prefix():
    """No promtool needed: every family the daemon's registry can hold starts with poller_
    (or is one of prometheus_client's standard process/platform families)."""
    from prometheus_client import CollectorRegistry

    from poller.nats.metrics import DeliveryMetrics

    registry = CollectorRegistry()
    metrics = PollerMetrics(registry)
    DeliveryMetrics(registry).prime([ACME])
    metrics.prime([ACME], handlers=["nats-sink"])
    add_process_metrics(registry, version="0.0.0")
    names = {family.name for family in registry.collect()}
    foreign = {n for n in names if not n.startswith(("poller_", "process_", "python_"))}
    assert not foreign, foreign
    assert "poller_build_info" in names


def alert_rules(text: str) -> list[dict[str, str]]:
    """{alert, expr} of each rule in docs/alerts.yml (its two shapes of expr: one line, or a
    `>-` block), read without a YAML library, which the project does not depend on."""
    rules: list[dict[str, str]] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if m := re.match(r"\s*- alert: (\S+)$", line):
            rules.append({"alert": m.group(1)})
        elif (m := re.match(r"(\s*)expr: (.*)$", line)) and rules:
            indent, expr = len(m.group(1)), m.group(2)
            if expr == ">-":
                block = itertools.takewhile(lambda l, n=indent: len(l) - len(l.lstrip()) > n, lines[i + 1 :])
                expr = " ".join(l.strip() for l in block)
            rules[-1]["expr"] = expr
    return rules


@needs_promtool
def test_promtool_check_rules_accepts_the_alert_rules():
    checked = promtool("check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


@needs_promtool
def test_promtool_test_rules_passes_the_alert_unit_tests():
    tested = promtool("test", "rules", str(ALERT_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_alert_rules_cover_the_operators_list_and_name_exported_metrics():
    """Without promtool too: the rules name only metrics the poller exports (or
    Prometheus's own `up`), and every case issue 20 lists has its alert."""
    from test_grafana_dashboard import exported_names, metric_names

    rules = alert_rules(ALERTS.read_text())
    assert len(rules) >= 10
    exported = exported_names() | {"up"}
    for rule in rules:
        unknown = metric_names(rule["expr"]) - exported
        assert not unknown, f"{rule['alert']} names metrics the poller does not export: {sorted(unknown)}"
    assert {
        "PollerAgentRefused",
        "PollerAgentUnreachable",
        "PollerAgentCertificateExpiring",
        "PollerCertificateExpiring",
        "PollerOutboxGrowing",
        "PollerOutboxDropping",
        "PollerTenantCrlAbsent",
        "PollerTenantCrlStale",
        "PollerNatsDisconnected",
        "PollerClusterReplicaMissing",
    } <= {rule["alert"] for rule in rules}
    tested = ALERT_TESTS.read_text()
    assert all(f"alertname: {rule['alert']}" in tested for rule in rules)  # every rule has a unit test


async def test_the_nats_sinks_counters_start_at_0_and_a_reload_adds_new_tenants(pki, tmp_path):
    """No promtool needed. The daemon's own NATS sink (nothing listens at its URL: it is never started here)."""
    import json
    import socket

    from poller.config import load_config

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"nats://127.0.0.1:{s.getsockname()[1]}"

    def write(tenants: list[str]) -> None:
        agents = {f"{t}-edge": {"address": "127.0.0.1:1", "tenant": t, "checks": CHECK} for t in tenants}
        doc = {"poller_id": "p", "certs_dir": str(pki.directory), "crl_state": None, "agents": agents}
        config.write_text(json.dumps({**doc, "sink": {"type": "nats", "url": url, "outbox": str(tmp_path / "o.db")}}))

    config = tmp_path / "poller.json"
    write([ACME])
    daemon = PollerDaemon(load_config(config))
    sample = daemon.metrics.registry.get_sample_value
    assert sample("poller_outbox_dropped_total", {"tenant": ACME}) == 0
    assert sample("poller_nats_publish_failures_total", {"tenant": ACME, "reason": "not_acknowledged"}) == 0
    assert sample("poller_outbox_dropped_total", {"tenant": XYZ}) is None
    write([ACME, XYZ])
    assert await daemon.reload()
    assert sample("poller_outbox_dropped_total", {"tenant": XYZ}) == 0
    assert sample("poller_identity_refusals_total", {"tenant": XYZ, "reason": "revoked"}) == 0
    await daemon.shutdown()
