"""/healthz and /readyz on metrics_listen, against a real daemon on loopback.

Readiness: trust loaded for every configured tenant, the sink able to make a
result durable (NATS connected, or its outbox writable; the file sink's
directory writable), and whatever a part the daemon starts registers (the
gateway's "listening"). Both answer JSON with the reasons; 503 when not ok.
The NATS cases use a real nats-server, or a port nothing listens on.
"""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

from daemons import running
from taps import Tapped

from poller.config import parse_config
from poller.daemon.daemon import PollerDaemon, make_sink
from poller.daemon.health import CheckResult, HealthChecks, writable
from poller.metrics import PollerMetrics
from poller.testing.memory_sink import MemorySink

ACME = "acme-corp"
CHECK = [{"service_type": "process", "service_name": "nginx", "details": "nginx"}]


def settings_for(pki, agent, sink: dict, tenant: str = ACME):
    return parse_config(
        {
            "crl_state": None,  # in memory: some tests make the outbox (the default state file's place) unwritable
            "poller_id": "poller-health",
            "poll_interval": "30s",
            "call_timeout": "1s",
            "certs_dir": str(pki.directory),
            "metrics_listen": "127.0.0.1:0",
            "sink": sink,
            "agents": {"edge": {"address": agent.address, "tenant": tenant, "checks": CHECK}},
        }
    )


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def probe(daemon: PollerDaemon, path: str) -> tuple[int, dict]:
    return await asyncio.to_thread(_get, f"http://127.0.0.1:{daemon.metrics_port}{path}")


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_check_that_raises_fails_with_its_exception_named():
    checks = HealthChecks()
    checks.add_ready("fine", lambda: CheckResult(True, "yes"))
    checks.add_ready("broken", lambda: 1 / 0)
    report = checks.ready()
    assert report["status"] == "unavailable"
    assert report["reasons"] == ["broken: the check raised ZeroDivisionError: division by zero"]
    assert report["checks"]["fine"] == {"ok": True, "detail": "yes"}
    assert HealthChecks().live()["status"] == "unavailable"  # nothing registered proves nothing


def test_writable_refuses_a_path_below_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    assert writable(tmp_path / "new" / "deeper")
    assert not writable(tmp_path / "file" / "results")


async def test_healthz_and_readyz_answer_json_for_a_file_sink(pki, serve, tmp_path):
    agent = await serve(pki.agent(ACME, "agent-001"))
    daemon = PollerDaemon(settings_for(pki, agent, {"type": "file", "dir": str(tmp_path / "results")}))
    async with running(daemon):
        status, live = await probe(daemon, "/healthz")
        assert status == 200 and live["status"] == "ok" and live["poller_id"] == "poller-health"
        assert live["checks"]["loop"]["ok"] and live["reasons"] == []
        status, ready = await probe(daemon, "/readyz")
        assert status == 200, ready
        assert set(ready["checks"]) == {"trust", "sink"}
        assert ready["checks"]["trust"] == {"ok": True, "detail": "2 tenant CAs loaded"}
        # A part the daemon starts adds its own check; failing, it makes the poller unready.
        daemon.health.add_ready("gateway", lambda: CheckResult(False, "not listening on 0.0.0.0:50052"))
        status, ready = await probe(daemon, "/readyz")
        assert status == 503 and ready["status"] == "unavailable"
        assert ready["reasons"] == ["gateway: not listening on 0.0.0.0:50052"]
        status, live = await probe(daemon, "/healthz")  # readiness is not liveness
        assert status == 200


async def test_readyz_fails_when_the_result_directory_cannot_be_made(pki, serve, tmp_path):
    agent = await serve(pki.agent(ACME, "agent-001"))
    (tmp_path / "file").write_text("in the way")
    daemon = PollerDaemon(settings_for(pki, agent, {"type": "file", "dir": str(tmp_path / "file" / "results")}))
    async with running(daemon):
        status, ready = await probe(daemon, "/readyz")
    assert status == 503
    assert ready["reasons"] == [f"sink: result directory {tmp_path / 'file' / 'results'} not writable"]


async def test_readyz_fails_for_a_tenant_without_a_ca(pki, serve, tmp_path):
    agent = await serve(pki.agent(ACME, "agent-001"))
    daemon = PollerDaemon(settings_for(pki, agent, {"type": "file", "dir": str(tmp_path)}, tenant="globex"), sink=MemorySink())
    async with running(daemon):
        status, ready = await probe(daemon, "/readyz")
    assert status == 503
    assert ready["reasons"] == ["trust: no tenant CA in certs_dir for globex"]
    assert ready["checks"]["sink"] == {"ok": True, "detail": "MemorySink (given by the caller)"}


async def test_readyz_with_nats_down_is_ready_only_while_the_outbox_is_writable(pki, serve, tmp_path):
    agent = await serve(pki.agent(ACME, "agent-001"))
    url = f"nats://127.0.0.1:{dead_port()}"
    with_outbox = PollerDaemon(settings_for(pki, agent, {"type": "nats", "url": url, "outbox": str(tmp_path / "o.db")}))
    async with running(with_outbox):
        status, ready = await probe(with_outbox, "/readyz")
    assert status == 200
    assert ready["checks"]["sink"]["detail"] == f"NATS not connected; results wait in the outbox {tmp_path / 'o.db'}"
    (tmp_path / "file").write_text("in the way")
    blocked = tmp_path / "file" / "o.db"
    unwritable = PollerDaemon(settings_for(pki, agent, {"type": "nats", "url": url, "outbox": str(blocked)}))
    async with running(unwritable):
        status, ready = await probe(unwritable, "/readyz")
    assert status == 503
    assert ready["reasons"] == [f"sink: NATS not connected and outbox {blocked} not writable"]


async def test_readyz_says_connected_once_the_nats_sink_is(pki, serve, nats_server, tmp_path: Path):
    agent = await serve(pki.agent(ACME, "agent-001"))
    settings = settings_for(pki, agent, {"type": "nats", "url": nats_server.url, "outbox": str(tmp_path / "o.db")})
    metrics = PollerMetrics()
    nats_sink = make_sink(settings, metrics)
    seen = MemorySink()
    daemon = PollerDaemon(settings, sink=Tapped(nats_sink, seen), metrics=metrics)
    # The daemon's own check of its NATS sink, as PollerDaemon registers it when it makes the sink itself.
    from poller.daemon.health import sink_check

    daemon.health.add_ready("sink", sink_check(nats_sink, settings))
    async with running(daemon):
        async with asyncio.timeout(20):
            await seen.wait_for(lambda rs: len(rs) >= 1)
        assert await nats_sink.wait_drained(20)  # acknowledged by JetStream: connected
        status, ready = await probe(daemon, "/readyz")
    assert status == 200, ready
    assert ready["checks"]["sink"] == {"ok": True, "detail": "connected to NATS"}
