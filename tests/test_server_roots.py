"""The client roots a server's TLS layer offers follow the trust store
(poller.server.credentials.TrustedClientRoots): a tenant CA added after start
is trusted at the next handshake, no restart; a removed one is no longer
offered; the server's own certificate, given as files, is re-read at a reload
(and refused, the pair in force kept, when it cannot serve: tests/test_gateway_rotation.py).
The interceptor's proof stays the authority on every call."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import ssl
import threading
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID
from test_gateway import started
from test_server_interceptor import Service, example

from poller.dial.peer import collector_context, fetch_peer_chain
from poller.gateway import PushEntry
from poller.identity.certinfo import load_der, serial_hex
from poller.identity.reasons import InvalidArgument
from poller.logs import EVENT_ATTR
from poller.pki.authority import create_tenant_ca
from poller.pki.ca import load_tenant_authority
from poller.pki.gateway import issue_gateway_cert
from poller.server import TenantServerInterceptor, server_credentials
from poller.server.credentials import TrustedClientRoots
from poller.testing.push_agent import refusal_of
from poller.trust import TrustStore

NEW = "new-co"


def deployment_tenant(pki, slug: str):
    """A tenant bound to a deployment CA (self-signed, not under the root): only
    the TLS roots of the moment can admit its agents' chains."""
    create_tenant_ca(pki.layout, slug, deployment=True)
    pki.tenants[slug] = load_tenant_authority(pki.layout, slug)
    return pki.agent(
        slug,
        "agent-001",
        cn="agent-001.partition-1.serviceradar",
        spiffe=f"spiffe://serviceradar.local/agent/{slug}/partition-1/agent-001",
    )


async def test_a_deployment_ca_added_after_start_is_trusted_at_the_next_handshake(pki, tmp_path, log_events):
    entry = PushEntry("edge-new", tenant=NEW, component="agent-001", interval=15.0)
    async with started(pki, tmp_path, entries=[entry]) as g:
        cert = deployment_tenant(pki, NEW)
        assert g.trust.reload().added == (NEW,)
        agent = g.agent(cert)
        assert (await agent.push([agent.status("ssh")])).received
        assert g.rows(NEW)[0]["identity"]["component_id"] == "agent-001"
        updated = [e for e in log_events() if e["event"] == "server_client_roots_updated"]
        assert [(e["added"], e["removed"]) for e in updated] == [([NEW], [])]


async def test_a_broken_platform_ca_file_holds_back_no_tenant_ca_added_beside_it(pki, tmp_path, log_events):
    # The trust store keeps the platform CA in force when its file breaks; so do the TLS roots,
    # and a deployment CA added by the same reload is offered at the next handshake.
    entry = PushEntry("edge-new", tenant=NEW, component="agent-001", interval=15.0)
    async with started(pki, tmp_path, entries=[entry]) as g:
        pki.layout.platform_ca.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
        g.trust.reload()
        cert = deployment_tenant(pki, NEW)
        assert NEW in g.trust.reload().added
        agent = g.agent(cert)
        assert (await agent.push([agent.status("ssh")])).received
        assert [e["event"] for e in log_events() if e["event"] == "server_platform_ca_kept"]
        updated = [e for e in log_events() if e["event"] == "server_client_roots_updated"]
        assert [e["added"] for e in updated] == [[NEW]]


async def test_a_removed_tenant_ca_is_no_longer_offered_to_a_new_connection(pki, tmp_path):
    cert = deployment_tenant(pki, NEW)
    entry = PushEntry("edge-new", tenant=NEW, component="agent-001", interval=15.0)
    async with started(pki, tmp_path, entries=[entry]) as g:
        first = g.agent(cert)
        assert (await first.push([first.status("ssh")])).received
        shutil.rmtree(pki.directory / "tenants" / NEW)
        assert g.trust.reload().removed == (NEW,)
        # The open connection: the interceptor proves the call, and refuses it.
        with pytest.raises(grpc.aio.AioRpcError) as open_conn:
            await first.push([first.status("ssh")])
        assert refusal_of(open_conn.value) == (grpc.StatusCode.UNAUTHENTICATED, "untrusted_chain")
        # A new connection: its chain no longer verifies at the handshake.
        second = g.agent(cert)
        with pytest.raises(grpc.aio.AioRpcError) as new_conn:
            await second.push([second.status("ssh")])
        assert new_conn.value.code() is grpc.StatusCode.UNAVAILABLE


def test_the_fetcher_answers_unchanged_until_the_roots_or_the_certificate_change(pki):
    trust = TrustStore(pki.directory, require_client=False)
    chain, key = pki.client_identity()
    roots = TrustedClientRoots(trust, chain, key)
    assert isinstance(roots.initial(), grpc.ServerCertificateConfiguration)
    assert roots() is None  # the snapshot served: nothing to do
    trust.reload()  # a new snapshot with the same CAs (a CRL, say): the roots in force stay
    assert roots() is None
    deployment_tenant(pki, NEW)
    trust.reload()
    assert isinstance(roots(), grpc.ServerCertificateConfiguration)
    assert roots() is None  # given once, then in force


def test_a_reload_that_leaves_the_server_files_as_they_are_changes_nothing(pki, tmp_path, log_events):
    trust = TrustStore(pki.directory, require_client=False)
    chain_file, key_file = tmp_path / "server.pem", tmp_path / "server-key.pem"
    for path, data in zip((chain_file, key_file), pki.client_identity(), strict=True):
        path.write_bytes(data)
    roots = TrustedClientRoots(trust, chain_file, key_file)
    trust.reload()  # the files re-read, the same bytes: no new configuration, no line
    assert roots() is None
    rotated = pki.agent("acme-corp", "poller-1", signed_by="platform", dns=["poller-1.serviceradar"])
    chain_file.write_bytes(rotated.chain_pem)
    key_file.write_bytes(rotated.key_pem)
    trust.reload()
    trust.reload()  # twice before any handshake: one change all the same
    assert isinstance(roots(), grpc.ServerCertificateConfiguration)
    assert roots() is None
    changed = [e for e in log_events() if e["event"] == "server_certificate_changed"]
    assert [e["serial"] for e in changed] == [rotated.serial_hex]
    assert not [e for e in log_events() if e["event"] == "server_certificate_kept"]


def _server_serial(port: int, who, tmp_path) -> int:
    """The serial of the certificate the server presents to a new connection (a TLS client of its own)."""
    cert_file, key_file = tmp_path / "client.pem", tmp_path / "client-key.pem"
    cert_file.write_bytes(who.chain_pem)
    key_file.write_bytes(who.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only read what it presents; the server verifies us
    context.load_cert_chain(cert_file, key_file)
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, context.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return load_der(der).serial_number


async def test_a_server_certificate_given_as_files_is_re_read_at_a_reload(pki, tmp_path):
    trust = TrustStore(pki.directory, require_client=False)
    chain, key = pki.client_identity()
    chain_file, key_file = tmp_path / "server.pem", tmp_path / "server-key.pem"
    chain_file.write_bytes(chain)
    key_file.write_bytes(key)
    server = grpc.aio.server(interceptors=[TenantServerInterceptor(trust, policies=example.POLICIES)])
    server.add_generic_rpc_handlers((example.handlers(),))
    port = server.add_secure_port("127.0.0.1:0", server_credentials(trust, chain_file, key_file))
    await server.start()
    service = Service(pki, port, server)
    agent = pki.agent("acme-corp", "agent-001")
    try:
        before = await asyncio.to_thread(_server_serial, port, agent, tmp_path)
        rotated = pki.agent("acme-corp", "poller-1", signed_by="platform", dns=["poller-1.serviceradar"])  # a new pair
        chain_file.write_bytes(rotated.chain_pem)
        key_file.write_bytes(rotated.key_pem)
        trust.reload()
        after = await asyncio.to_thread(_server_serial, port, agent, tmp_path)
        assert before != after == rotated.cert.serial_number
        key_file.write_bytes(key)  # a key that is not the certificate's: the pair in force stays
        trust.reload()
        assert await asyncio.to_thread(_server_serial, port, agent, tmp_path) == rotated.cert.serial_number
        assert (await service.call(agent, "Whoami"))["tenant"] == "acme-corp"
    finally:
        await service.close()
        await server.stop(None)


class _HoldAt(logging.Handler):
    """Holds the thread that logs `event` (grpc's, inside TrustedClientRoots.__call__)
    until released: the window between taking the waiting pair and serving it."""

    def __init__(self, event: str) -> None:
        super().__init__()
        self.event, self.entered, self.resume = event, threading.Event(), threading.Event()

    def handle(self, record: logging.LogRecord) -> bool:  # no handler lock: other threads keep logging
        if getattr(record, EVENT_ATTR, {}).get("event") == self.event and not self.entered.is_set():
            self.entered.set()
            self.resume.wait(30)
        return True


async def test_a_rotation_back_while_a_handshake_takes_the_new_pair_is_not_lost(pki):
    # Found by an outside review: the reload that put pair A back compared the files with
    # the pair in force while a handshake was handing grpc pair B, saw no change, and B
    # was presented for ever while the files held A.
    a = issue_gateway_cert(pki.directory, dns=["gw.example.net"])
    a_cert, a_key = a.cert_path.read_bytes(), a.key_path.read_bytes()
    trust = TrustStore(pki.directory, require_client=False)
    roots = TrustedClientRoots(trust, a.cert_path, a.key_path)
    server = grpc.aio.server()
    port = server.add_secure_port(
        "127.0.0.1:0", grpc.dynamic_ssl_server_credentials(roots.initial(), roots, require_client_authentication=True)
    )
    await server.start()
    context = collector_context(trust.client)

    async def presented() -> str:
        return serial_hex(load_der((await fetch_peer_chain(f"127.0.0.1:{port}", context, timeout=10))[0]))

    hold = _HoldAt("server_client_roots_updated")
    logger = logging.getLogger("poller")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(hold)
    try:
        assert await presented() == a.serial
        b = issue_gateway_cert(pki.directory, dns=["gw.example.net"])  # rotated in place
        trust.reload()  # B waits for the next handshake
        handshake = asyncio.ensure_future(presented())  # grpc's thread takes B, and is held
        assert await asyncio.to_thread(hold.entered.wait, 30)
        a.cert_path.write_bytes(a_cert)  # the operator puts A back and reloads, meanwhile
        a.key_path.write_bytes(a_key)
        reached = threading.Event()  # the reload has reached the credentials (the store calls trust_changed)
        decide = roots.trust_changed

        def reaching(snapshot):  # type: ignore[no-untyped-def]
            reached.set()
            decide(snapshot)

        roots.trust_changed = reaching  # type: ignore[method-assign]
        reload = asyncio.ensure_future(asyncio.to_thread(trust.reload))
        assert await asyncio.to_thread(reached.wait, 30)
        hold.resume.set()
        await reload
        assert await handshake == b.serial  # that handshake had B already
        assert await presented() == a.serial  # the next one gets what the files hold
    finally:
        hold.resume.set()
        logger.removeHandler(hold)
        logger.setLevel(level)
        await server.stop(None)


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"eku": [ExtendedKeyUsageOID.CLIENT_AUTH]}, "is not for serving"),
        ({"not_after": datetime.now(UTC) - timedelta(days=1)}, "expired at"),
        ({"key_kind": "rsa"}, "the key does not match"),  # the other certificate's key below
    ],
)
def test_a_server_pair_that_cannot_serve_is_refused_at_start_naming_why(pki, tmp_path, options, problem):
    # grpc would serve a client's certificate or an expired one without a word, and every
    # client's handshake would fail: the library's server refuses them first, as a reload does.
    trust = TrustStore(pki.directory, require_client=False)
    cert = pki.agent("acme-corp", "agent-001", **options)
    key = pki.agent("acme-corp", "agent-002").key_pem if problem.startswith("the key") else cert.key_pem
    chain_file = tmp_path / "server.pem"
    chain_file.write_bytes(cert.chain_pem)
    with pytest.raises(InvalidArgument) as info:
        server_credentials(trust, chain_file, key)
    assert problem in str(info.value) and str(chain_file) in str(info.value)
    good = pki.agent("acme-corp", "agent-003")  # an agent's certificate is for serving too (AgentService)
    assert server_credentials(trust, good.chain_pem, good.key_pem) is not None


def test_a_rotation_that_drops_a_name_or_changes_issuer_is_taken_and_said_loudly(pki, log_events):
    # Agents dial one of the names and trust one issuer: a rotation away from either makes
    # their handshakes fail, which tells nobody here why. It is the operator's act, so taken.
    first = issue_gateway_cert(pki.directory, dns=["gw.example.net", "gw-old.example.net"], ips=["127.0.0.1"])
    trust = TrustStore(pki.directory, require_client=False)
    roots = TrustedClientRoots(trust, first.cert_path, first.key_path)
    renewed = issue_gateway_cert(pki.directory, dns=["gw.example.net", "gw-old.example.net"], ips=["127.0.0.1"])
    trust.reload()
    moved = issue_gateway_cert(pki.directory, dns=["gw.example.net"], issuer="root")
    trust.reload()
    changes = [e for e in log_events() if e["event"] == "server_certificate_changed"]
    assert [(e["level"], e["serial"]) for e in changes] == [("info", renewed.serial), ("warning", moved.serial)]
    assert "dropped_names" not in changes[0] and "issuer" not in changes[0]  # a plain renewal
    assert changes[1]["dropped_names"] == ["127.0.0.1", "gw-old.example.net"]
    assert changes[1]["previous_issuer"] != changes[1]["issuer"]
    assert changes[1]["previous_issuer_key_id"] != changes[1]["issuer_key_id"]
    assert changes[1]["previous_serial"] == renewed.serial
    assert roots() is not None  # taken: the next handshake is served the moved pair
