"""The daemon keeps identities true for their whole life (issue 6): revocation
picked up from a file change and from SIGHUP, a removed tenant CA, a
certificate that expires while polled, and an agent that rotates its
certificate, all without restarting the poller and without redialing the
agents whose identity still holds.

The daemon runs in this process (real signal handlers on the test's loop),
against real mock agents; synchronisation is on published results
(MemorySink.wait_for), never on time.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest
from events import captured

from poller.config import load_config
from poller.daemon import watch
from poller.daemon.daemon import PollerDaemon
from poller.identity.certinfo import utcnow
from poller.testing.memory_sink import MemorySink

ACME, XYZ = "acme-corp", "xyz-inc"
CHECK = [{"service_type": "icmp", "service_name": "ping"}]


@asynccontextmanager
async def running_daemon(pki, tmp_path, agents: dict[str, tuple[object, str]]) -> AsyncIterator[tuple[PollerDaemon, MemorySink]]:
    config = tmp_path / "poller.json"
    config.write_text(
        json.dumps(
            {
                "poller_id": "p",
                "poll_interval": "1s",
                "call_timeout": "700ms",
                "backoff_initial": "100ms",
                "backoff_max": "200ms",
                "certs_dir": str(pki.directory),
                "log_format": "json",
                "agents": {name: {"address": a.address, "tenant": t, "checks": CHECK} for name, (a, t) in agents.items()},
            }
        )
    )
    sink = MemorySink()
    daemon = PollerDaemon(load_config(config), sink=sink)
    task = asyncio.get_running_loop().create_task(daemon.run(install_signals=True))
    try:
        yield daemon, sink
    finally:
        daemon.request_stop()
        async with asyncio.timeout(10):
            assert await task == 0


async def wait_result(sink: MemorySink, agent: str, after: int = 0, **want: object):
    """The first result of `agent` published after index `after` that has the wanted fields."""

    def match(results):
        return any(r.agent == agent and all(getattr(r, k) == v for k, v in want.items()) for r in results[after:])

    async with asyncio.timeout(20):
        results = await sink.wait_for(match)
    return next(r for r in results[after:] if r.agent == agent and all(getattr(r, k) == v for k, v in want.items()))


async def all_ok(sink: MemorySink, names) -> None:
    for name in names:
        await wait_result(sink, name, available=True)


@pytest.fixture
def slow_watch(monkeypatch):
    """Watcher effectively off: only SIGHUP can reload."""
    monkeypatch.setattr(watch, "WATCH_INTERVAL", 3600.0)


@pytest.fixture
def fast_watch(monkeypatch):
    monkeypatch.setattr(watch, "WATCH_INTERVAL", 0.1)
    monkeypatch.setattr(watch, "SETTLE_DELAY", 0.05)


@pytest.mark.parametrize("how", ["file-change", "sighup"])
async def test_revocation_is_published_from_the_next_cycle_and_others_are_not_redialed(pki, serve, tmp_path, monkeypatch, how):
    monkeypatch.setattr(watch, "WATCH_INTERVAL", 0.1 if how == "file-change" else 3600.0)
    revoked = await serve(pki.agent(ACME, "agent-001"))
    kept = await serve(pki.agent(ACME, "agent-002"))
    other = await serve(pki.agent(XYZ, "agent-007", "site-b"))
    agents = {"revoked": (revoked, ACME), "kept": (kept, ACME), "other": (other, XYZ)}
    async with running_daemon(pki, tmp_path, agents) as (daemon, sink):
        await all_ok(sink, agents)
        connections = {name: daemon.scheduler.worker(name).connection for name in ("kept", "other")}
        mark = len(sink.results)
        pki.revoke(ACME, revoked.certificate)
        if how == "sighup":
            os.kill(os.getpid(), signal.SIGHUP)
        result = await wait_result(sink, "revoked", after=mark, available=False)
        assert (result.reason, result.proven) == ("revoked", False)
        later = len(sink.results)
        for name in ("kept", "other"):
            assert (await wait_result(sink, name, after=later)).available
            assert daemon.scheduler.worker(name).connection is connections[name]  # not redialed
        revoked.reset_records()
        await wait_result(sink, "revoked", after=len(sink.results), reason="revoked")  # and it stays refused
        assert revoked.count("GetStatus") == 0


async def test_a_removed_tenant_ca_is_published_as_untrusted_chain(pki, serve, tmp_path, fast_watch):
    xyz = await serve(pki.agent(XYZ, "agent-007", "site-b"))
    acme = await serve(pki.agent(ACME))
    async with running_daemon(pki, tmp_path, {"xyz": (xyz, XYZ), "acme": (acme, ACME)}) as (daemon, sink):
        await all_ok(sink, ["xyz", "acme"])
        acme_conn = daemon.scheduler.worker("acme").connection
        mark = len(sink.results)
        shutil.rmtree(pki.layout.tenant_dir(XYZ))
        result = await wait_result(sink, "xyz", after=mark, available=False)
        assert result.reason == "untrusted_chain"
        assert (await wait_result(sink, "acme", after=len(sink.results))).available
        assert daemon.scheduler.worker("acme").connection is acme_conn


async def test_a_certificate_valid_for_seconds_is_refused_from_its_not_after_on(pki, serve, tmp_path, slow_watch):
    # Long enough that a loaded machine still sees one ok poll before notAfter (4 s was
    # not: the first proven poll can take that long under load), short for a test.
    cert = pki.agent(ACME, not_after=utcnow() + timedelta(seconds=10))
    agent = await serve(cert)
    async with running_daemon(pki, tmp_path, {"short": (agent, ACME)}) as (_, sink):
        ok = await wait_result(sink, "short", available=True)
        assert ok.context.serial == cert.serial_hex
        refused = await wait_result(sink, "short", reason="expired")
        assert utcnow() >= cert.cert.not_valid_after_utc
        # Every result published from the refusal on says expired, none ok.
        index = sink.results.index(refused)
        assert all(not r.available for r in sink.results[index:] if r.agent == "short")


async def test_rotation_is_proven_again_and_polled_without_a_restart(log_events, pki, serve, tmp_path, slow_watch):
    old = pki.agent(ACME, "agent-001", "partition-1")
    agent = await serve(old)
    with captured(log_events) as logs:
        async with running_daemon(pki, tmp_path, {"edge": (agent, ACME)}) as (_, sink):
            await wait_result(sink, "edge", available=True)
            new = pki.agent(ACME, "agent-001", "partition-1")
            await agent.restart(cert_chain_pem=new.chain_pem, key_pem=new.key_pem)
            result = await wait_result(sink, "edge", after=len(sink.results), available=True)
            while result.context.serial != new.serial_hex:  # a result may have been in flight on the old pin
                result = await wait_result(sink, "edge", after=sink.results.index(result) + 1, available=True)
    rotated = [e for e in logs if e.get("event") == "identity_rotated"]
    assert [(e["old_serial"], e["serial"]) for e in rotated] == [(old.serial_hex, new.serial_hex)]


async def test_an_agent_restarted_with_an_impostor_certificate_is_refused(pki, serve, tmp_path, slow_watch):
    agent = await serve(pki.agent(ACME, "agent-001", "partition-1"))
    async with running_daemon(pki, tmp_path, {"edge": (agent, ACME)}) as (_, sink):
        await wait_result(sink, "edge", available=True)
        impostor = pki.agent(ACME, "agent-001", "partition-1", issuer_tenant=XYZ, dns=[])
        await agent.restart(cert_chain_pem=impostor.chain_pem, key_pem=impostor.key_pem)
        agent.reset_records()
        result = await wait_result(sink, "edge", after=len(sink.results), reason="tenant_mismatch")
        assert not result.available and agent.count("GetStatus") == 0


async def test_missing_crl_is_warned_at_start_and_read_as_zero(log_events, pki, serve, tmp_path):
    from crls import write_tenant_crl

    write_tenant_crl(pki, XYZ)
    agent = await serve(pki.agent(ACME))
    config = tmp_path / "once.json"
    config.write_text(
        json.dumps(
            {
                "poller_id": "p",
                "certs_dir": str(pki.directory),
                "agents": {"a": {"address": agent.address, "tenant": ACME, "checks": CHECK}},
            }
        )
    )
    daemon = PollerDaemon(load_config(config), sink=MemorySink())
    with captured(log_events) as logs:
        [result] = await daemon.run_once()
    assert result.available  # allowed by default
    assert [e["tenant"] for e in logs if e["event"] == "tenant_crl_absent"] == [ACME]
    registry = daemon.metrics.registry
    assert registry.get_sample_value("poller_tenant_crl_loaded", {"tenant": ACME}) == 0
    assert registry.get_sample_value("poller_tenant_crl_loaded", {"tenant": XYZ}) == 1


async def test_a_broken_file_is_refused_with_a_log_line_and_polling_goes_on(log_events, pki, serve, tmp_path, fast_watch):
    agent = await serve(pki.agent(ACME))
    async with running_daemon(pki, tmp_path, {"edge": (agent, ACME)}) as (daemon, sink):
        await wait_result(sink, "edge", available=True)
        conn = daemon.scheduler.worker("edge").connection
        with captured(log_events) as logs:
            pki.layout.tenant_crl(ACME).write_text("-----BEGIN X509 CRL-----\nnot a crl\n-----END X509 CRL-----\n")
            async with asyncio.timeout(20):
                while not any(e["event"] == "trust_material_refused" for e in log_events()):
                    seen = len(sink.results)  # the daemon's cycles go on: each result is a moment to look again
                    await sink.wait_for(lambda results, seen=seen: len(results) > seen)
        [line] = [e for e in logs if e["event"] == "trust_material_refused"]
        assert "crl.pem" in line["problem"] and "not a readable PEM CRL" in line["problem"]
        assert (await wait_result(sink, "edge", after=len(sink.results))).available
        assert daemon.scheduler.worker("edge").connection is conn
