"""Rotating the gateway's serving certificate in place, without a restart.

The daemon serves push agents with `gateway.cert` / `gateway.key`; an operator
re-issues them in place (`pki gateway` again, or any writer) and reloads
(SIGHUP), or lets the certs watcher see the change. What the gateway presents
is read by a real TLS client of its own (the project's peer-chain collector)
on loopback, against the daemon's real grpc.aio server; push agents check it
against the root for its name. A pair that could not serve (expired, not yet
valid, clientAuth only, a key that is not the certificate's, half written) is
refused as at start and the pair in force stays, said in an error line.
Synchronisation is on reloads done (events), never on time.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from daemons import running
from events import captured
from test_gateway_daemon import ACME, config, push_entry

from poller.config import load_config
from poller.daemon import watch
from poller.daemon.daemon import PollerDaemon
from poller.dial.peer import collector_context, fetch_peer_chain
from poller.identity.certinfo import load_der, serial_hex
from poller.pki.build import cert_pem
from poller.pki.gateway import IssuedGateway, issue_gateway_cert
from poller.testing import ForgedCert, ForgePki, MemorySink
from poller.testing.push_agent import PushAgent

SERVER_NAME = "gw.example.net"


@pytest.fixture
def slow_watch(monkeypatch):
    """Watcher effectively off: only a reload (SIGHUP) re-reads."""
    monkeypatch.setattr(watch, "WATCH_INTERVAL", 3600.0)


def gateway_daemon(pki: ForgePki, tmp_path: Path) -> PollerDaemon:
    """A daemon loaded from a config file, serving <certs>/gateway.pem and gateway-key.pem (the defaults)."""
    doc = config(pki, {"edge-1": push_entry(ACME, component="agent-001")})
    del doc["gateway"]["cert"], doc["gateway"]["key"]
    path = tmp_path / "poller.json"
    path.write_text(json.dumps(doc))
    return PollerDaemon(load_config(path), sink=MemorySink())


def on_each_call(daemon: PollerDaemon, name: str) -> asyncio.Event:
    """An event set each time the daemon's coroutine method `name` has returned."""
    done = asyncio.Event()
    original = getattr(daemon, name)

    async def wrapped() -> Any:
        try:
            return await original()
        finally:
            done.set()

    setattr(daemon, name, wrapped)
    return done


async def presented(daemon: PollerDaemon) -> x509.Certificate:
    """The leaf the gateway presents to a new connection."""
    chain = await fetch_peer_chain(f"127.0.0.1:{daemon.gateway_port}", collector_context(daemon.trust.client), timeout=10)
    return load_der(chain[0])


async def pushed(daemon: PollerDaemon, pki: ForgePki, agent: PushAgent | None = None) -> bool:
    """A push taken by the gateway, on `agent`'s connection or a new agent's (which checks
    the gateway's certificate against the root for SERVER_NAME)."""
    own = agent is None
    if agent is None:
        address = f"127.0.0.1:{daemon.gateway_port}"
        agent = PushAgent.for_cert(address, pki.agent(ACME, "agent-001"), ca_pem=pki.root_pem, server_name=SERVER_NAME)
    try:
        return (await agent.push([agent.status("ssh")])).received
    finally:
        if own:
            await agent.close()


def of(events: list[dict], name: str) -> list[dict]:
    return [e for e in events if e["event"] == name]


async def test_a_certificate_rotated_in_place_is_presented_from_the_next_connection_after_sighup(
    pki, tmp_path, log_events, slow_watch
):
    first = issue_gateway_cert(pki.directory, dns=[SERVER_NAME])
    daemon = gateway_daemon(pki, tmp_path)
    reloaded = on_each_call(daemon, "reload")
    async with running(daemon, install_signals=True):
        assert serial_hex(await presented(daemon)) == first.serial
        address = f"127.0.0.1:{daemon.gateway_port}"
        before = PushAgent.for_cert(address, pki.agent(ACME, "agent-001"), ca_pem=pki.root_pem, server_name=SERVER_NAME)
        try:
            assert await pushed(daemon, pki, before)  # a connection made with the first certificate
            second = issue_gateway_cert(pki.directory, dns=[SERVER_NAME])
            gc.collect()  # the store holds the credentials' fetcher weakly: the server keeps it
            with captured(log_events) as events:
                os.kill(os.getpid(), signal.SIGHUP)
                async with asyncio.timeout(30):
                    await reloaded.wait()
            assert serial_hex(await presented(daemon)) == second.serial
            assert await pushed(daemon, pki)  # a new agent verifies the new certificate
            assert await pushed(daemon, pki, before)  # the open connection keeps its own
        finally:
            await before.close()
    [changed] = of(events, "server_certificate_changed")
    assert changed["level"] == "info"
    assert (changed["certificate"], changed["subject"]) == (str(second.cert_path), f"CN={SERVER_NAME}")
    assert (changed["serial"], changed["previous_serial"]) == (second.serial, first.serial)
    assert changed["not_after"] == second.not_after.isoformat()
    assert not of(events, "server_certificate_kept")


def gateway_cert(pki: ForgePki, **options: Any) -> ForgedCert:
    """A serving certificate from the platform CA for SERVER_NAME (serverAuth unless `eku` says)."""
    return pki.agent(
        ACME,
        "gw",
        signed_by="platform",
        cn=SERVER_NAME,
        spiffe=None,
        dns=[SERVER_NAME],
        **{"eku": [ExtendedKeyUsageOID.SERVER_AUTH], **options},
    )


def write_bad(pki: ForgePki, issued: IssuedGateway, material: str) -> None:
    """Write, in place, a rotation that cannot serve."""
    now = datetime.now(UTC)
    cert, key = issued.cert_path, issued.key_path
    if material == "half-written":  # the new certificate written, its key not yet
        cert.write_bytes(gateway_cert(pki).chain_pem)
        return
    if material == "truncated":
        chain = gateway_cert(pki).chain_pem
        cert.write_bytes(chain[: len(chain) // 2])
        return
    if material == "key-removed":
        key.unlink()
        return
    forged = {
        "expired": lambda: gateway_cert(pki, not_after=now - timedelta(days=1)),
        "not-yet-valid": lambda: gateway_cert(pki, not_before=now + timedelta(hours=1)),
        "client-only": lambda: gateway_cert(pki, eku=[ExtendedKeyUsageOID.CLIENT_AUTH]),
        "other-key": lambda: gateway_cert(pki),
    }[material]()
    cert.write_bytes(forged.cert_pem + cert_pem(pki.platform.cert))
    key.write_bytes(gateway_cert(pki).key_pem if material == "other-key" else forged.key_pem)


@pytest.mark.parametrize(
    "material, problem",
    [
        ("expired", "expired at"),
        ("not-yet-valid", "is not valid before"),
        ("client-only", "its extended key usage has no serverAuth"),
        ("other-key", "the key does not match certificate"),
        ("half-written", "the key does not match certificate"),
        ("truncated", "holds no readable PEM certificate"),
        ("key-removed", "private key"),
    ],
)
async def test_a_rotation_that_cannot_serve_is_refused_and_the_pair_in_force_stays(
    pki, tmp_path, log_events, slow_watch, material, problem
):
    first = issue_gateway_cert(pki.directory, dns=[SERVER_NAME])
    async with running(gateway_daemon(pki, tmp_path)) as daemon:
        write_bad(pki, first, material)
        with captured(log_events) as events:
            assert await daemon.reload()
        assert serial_hex(await presented(daemon)) == first.serial
        assert await pushed(daemon, pki)
        [kept] = of(events, "server_certificate_kept")
        assert kept["level"] == "error" and kept["serving_serial"] == first.serial
        assert kept["certificate"] == str(first.cert_path) and kept["key"] == str(first.key_path)
        assert any(problem in p for p in kept["problems"]), kept["problems"]
        assert not of(events, "server_certificate_changed")
        # Finished (or redone) and reloaded again: the new pair is presented.
        second = issue_gateway_cert(pki.directory, dns=[SERVER_NAME])
        with captured(log_events) as events:
            assert await daemon.reload()
        assert serial_hex(await presented(daemon)) == second.serial
        assert [e["serial"] for e in of(events, "server_certificate_changed")] == [second.serial]
        assert await pushed(daemon, pki)


async def test_a_reload_whose_trust_material_is_refused_whole_still_rotates_the_certificate(
    pki, tmp_path, log_events, slow_watch
):
    """A certs directory the store refuses as a whole (two tenants with one CA key) keeps
    the trust snapshot in force, the very same object: the gateway's files are re-read anyway."""
    from short_ca import write_twin_tenant_ca

    issue_gateway_cert(pki.directory, dns=[SERVER_NAME])
    async with running(gateway_daemon(pki, tmp_path)) as daemon:
        snapshot = daemon.trust.snapshot
        write_twin_tenant_ca(pki, key_of=ACME)
        second = issue_gateway_cert(pki.directory, dns=[SERVER_NAME])
        with captured(log_events) as events:
            await daemon.reload()
        assert daemon.trust.snapshot is snapshot
        assert any("same public key" in e["problem"] for e in of(events, "trust_material_refused"))
        assert serial_hex(await presented(daemon)) == second.serial
        assert await pushed(daemon, pki)


async def test_the_certs_watcher_rotates_it_without_a_signal(pki, tmp_path, monkeypatch):
    monkeypatch.setattr(watch, "WATCH_INTERVAL", 0.1)
    monkeypatch.setattr(watch, "SETTLE_DELAY", 0.05)
    first = issue_gateway_cert(pki.directory, dns=[SERVER_NAME])
    daemon = gateway_daemon(pki, tmp_path)
    reloads = on_each_call(daemon, "_certs_changed")  # before run(): the watcher takes it then
    async with running(daemon):
        # The watcher's task is started just after `started` is set, and takes its baseline scan
        # at its first step: this await lets it run before the files change.
        assert serial_hex(await presented(daemon)) == first.serial
        second = issue_gateway_cert(pki.directory, dns=[SERVER_NAME])

        async def rotated() -> bool:
            return serial_hex(await presented(daemon)) == second.serial

        # The watcher may see the key before the certificate (a half-written pair is refused,
        # and the next change reloads again): wait for the reload after which it is served.
        async with asyncio.timeout(30):
            while not await rotated():
                await reloads.wait()
                reloads.clear()
        assert await pushed(daemon, pki)
