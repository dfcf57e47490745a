"""An identity that holds for the connection's whole life (issue 6), at the
dial_agent level: pinning, live local re-checks, expiry, rotation, and trust
material that comes from PEM bytes instead of a directory.

Every case is real TLS on loopback against real grpc.aio mock agents.
"""

from __future__ import annotations

import shutil
from datetime import timedelta

import grpc
import pytest
from crls import tenant_crl, write_tenant_crl
from events import captured
from short_ca import tenant_ca_until

from poller.agent.client import AgentClient
from poller.dial.dialer import dial_agent
from poller.identity.certinfo import utcnow
from poller.identity.reasons import AgentUnreachable, IdentityRefused, Reason
from poller.testing.clock import ManualClock
from poller.testing.forge import ForgePki
from poller.trust.store import TrustStore

ACME, XYZ = "acme-corp", "xyz-inc"


async def ping(conn):
    return await AgentClient(conn, timeout=5).get_status("ping", "icmp")


# ---------------------------------------------------------------- pinning


async def test_the_channel_is_pinned_to_the_proven_leaf_not_to_the_tenant(pki, trust, serve):
    """A second certificate with the same CN from the same tenant CA (valid,
    not revoked) is refused by gRPC's own handshake: only the proven leaf passes."""
    agent = await serve(pki.agent(ACME, "agent-001"))
    conn = await dial_agent(agent.address, tenant=ACME, trust=trust)
    try:
        proven = conn.serial
        assert proven == format(agent.certificate.serial_number, "x")
        from poller.proto import monitoring_pb2 as pb
        from poller.proto import monitoring_pb2_grpc as pb_grpc

        twin = pki.agent(ACME, "agent-001")
        await agent.restart(cert_chain_pem=twin.chain_pem, key_pem=twin.key_pem)
        agent.reset_records()
        # A bare stub on the raw pinned channel: no re-proof, just gRPC's handshake.
        raw = conn.current_channel
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pb_grpc.AgentServiceStub(raw).GetStatus(pb.StatusRequest(), timeout=5)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "CERTIFICATE_VERIFY_FAILED" in (caught.value.details() or "")
        assert agent.count("GetStatus") == 0
    finally:
        await conn.close()


async def test_a_pinned_reconnect_to_the_same_certificate_needs_no_new_proof(log_events, pki, trust, serve):
    cert = pki.agent(ACME)
    agent = await serve(cert)
    conn = await dial_agent(agent.address, tenant=ACME, trust=trust)
    try:
        await ping(conn)
        channel = conn.current_channel
        await agent.restart()  # same certificate
        with captured(log_events) as logs:
            reply = await _ping_through_reconnect(conn)
        assert reply.response.available and conn.current_channel is channel
        assert not [entry for entry in logs if entry.get("audit")]  # no second proof
    finally:
        await conn.close()


async def _ping_through_reconnect(conn):
    """The first call after the agent restarts may meet the dead connection;
    the next one goes over the reconnected (pinned) channel."""
    try:
        return await ping(conn)
    except AgentUnreachable:
        return await ping(conn)


# ---------------------------------------------------------------- live re-checks


async def test_revocation_while_connected_ends_the_identity_at_once(log_events, pki, serve):
    trust = TrustStore(pki.directory)
    revoked = await serve(pki.agent(ACME, "agent-001"))
    kept = await serve(pki.agent(ACME, "agent-002"))
    other = await serve(pki.agent(XYZ, "agent-007", "site-b"))
    conns = [await dial_agent(a.address, tenant=t, trust=trust) for a, t in ((revoked, ACME), (kept, ACME), (other, XYZ))]
    try:
        channels = [c.current_channel for c in conns]
        for conn in conns:
            await ping(conn)
        pki.revoke(ACME, revoked.certificate)
        with captured(log_events) as logs:
            report = trust.reload()
        assert report.changed == (ACME,)
        # Refused by the reload itself, before any call: no network needed.
        assert conns[0].refusal is not None and conns[0].refusal.reason is Reason.REVOKED
        revoked.reset_records()
        with pytest.raises(IdentityRefused) as caught:
            await ping(conns[0])
        assert caught.value.reason is Reason.REVOKED
        assert revoked.count("GetStatus") == 0
        [line] = [e for e in logs if e.get("event") == "identity_refused"]
        assert (line["phase"], line["reason"], line["serial"]) == ("recheck", "revoked", conns[0].serial)
        assert (line["tenant"], line["issuer_tenant"]) == (ACME, ACME)
        # The others still hold, on the very same channels: nobody was redialed.
        for conn, channel in zip(conns[1:], channels[1:], strict=True):
            assert conn.refusal is None and conn.current_channel is channel
            assert (await ping(conn)).response.available
    finally:
        for conn in conns:
            await conn.close()


async def test_tenant_ca_removed_ends_its_identities_as_untrusted_chain(pki, serve):
    trust = TrustStore(pki.directory)
    agent = await serve(pki.agent(XYZ, "agent-007", "site-b"))
    conn = await dial_agent(agent.address, tenant=XYZ, trust=trust)
    try:
        shutil.rmtree(pki.layout.tenant_dir(XYZ))
        report = trust.reload()
        assert report.removed == (XYZ,)
        assert (await conn.wait_refused()).reason is Reason.UNTRUSTED_CHAIN
        with pytest.raises(IdentityRefused) as caught:
            await ping(conn)
        assert caught.value.reason is Reason.UNTRUSTED_CHAIN
    finally:
        await conn.close()


async def test_tenant_ca_rekeyed_ends_its_identities_as_untrusted_chain(pki, serve, tmp_path):
    trust = TrustStore(pki.directory)
    agent = await serve(pki.agent(ACME))
    conn = await dial_agent(agent.address, tenant=ACME, trust=trust)
    try:
        rekeyed = ForgePki.create(tmp_path / "rekeyed", tenants=(ACME,))  # same CA name, another key
        shutil.copy(rekeyed.layout.tenant_ca(ACME), pki.layout.tenant_ca(ACME))
        shutil.copy(rekeyed.layout.root_ca, pki.layout.root_ca)
        trust.reload()
        assert (await conn.wait_refused()).reason is Reason.UNTRUSTED_CHAIN
    finally:
        await conn.close()


async def test_a_certificate_that_expires_while_connected_is_refused_from_its_not_after_on(pki, trust, serve):
    cert = pki.agent(ACME, not_after=utcnow() + timedelta(seconds=3))
    agent = await serve(cert)
    conn = await dial_agent(agent.address, tenant=ACME, trust=trust)
    try:
        assert (await ping(conn)).response.available  # the HTTP/2 connection is up
        refusal = await conn.wait_refused()  # the notAfter timer, no call needed
        assert refusal.reason is Reason.EXPIRED
        assert utcnow() >= cert.cert.not_valid_after_utc  # not one moment early
        agent.reset_records()
        with pytest.raises(IdentityRefused) as caught:
            await ping(conn)
        assert caught.value.reason is Reason.EXPIRED
        assert agent.count("GetStatus") == 0
    finally:
        await conn.close()


async def test_a_call_after_not_after_is_refused_even_if_the_timer_has_not_run(pki, trust, serve):
    """The per-call check does not depend on the timer: simulate a late timer
    by moving the connection's deadline (the check is a clock comparison)."""
    agent = await serve(pki.agent(ACME))
    conn = await dial_agent(agent.address, tenant=ACME, trust=trust)
    try:
        await ping(conn)
        conn._deadline = 0.0  # "now is past the deadline"; the re-check then reads the real dates
        assert (await ping(conn)).response.available  # not expired in truth: re-checked and still holds
        assert conn.refusal is None
    finally:
        await conn.close()


async def test_the_connection_clock_ends_the_identity_at_not_after_not_before(pki, trust, serve):
    """The same as above on a clock the test moves: no real waiting."""
    clock = ManualClock()
    cert = pki.agent(ACME, not_after=clock.utcnow() + timedelta(seconds=30))
    agent = await serve(cert)
    conn = await dial_agent(agent.address, tenant=ACME, trust=trust, clock=clock)
    try:
        assert (await ping(conn)).response.available
        clock.advance(29.0)  # the last second of validity
        assert conn.refusal is None and (await ping(conn)).response.available
        clock.advance(2.0)
        refusal = await conn.wait_refused()  # the notAfter timer, no call needed
        assert refusal.reason is Reason.EXPIRED
        assert clock.utcnow() >= cert.cert.not_valid_after_utc
    finally:
        await conn.close()


async def test_the_connection_clock_ends_the_identity_at_its_tenant_cas_not_after(pki, serve):
    """A leaf that outlives its tenant CA: the pinned channel trusts the leaf alone,
    so only the re-check can end it, at the CA's notAfter, as a fresh proof would."""
    clock = ManualClock()
    tenant_ca_until(pki, "short-co", clock.utcnow() + timedelta(seconds=30))
    trust = TrustStore(pki.directory)
    agent = await serve(pki.agent("short-co"))  # a year
    conn = await dial_agent(agent.address, tenant="short-co", trust=trust, clock=clock)
    try:
        assert (await ping(conn)).response.available
        clock.advance(31.0)
        refusal = await conn.wait_refused()  # the deadline timer, no call needed
        assert refusal.reason is Reason.UNTRUSTED_CHAIN and "tenant-short-co.ca.serviceradar expired" in refusal.detail
        agent.reset_records()
        with pytest.raises(IdentityRefused) as caught:
            await ping(conn)
        assert caught.value.reason is Reason.UNTRUSTED_CHAIN and agent.count("GetStatus") == 0
    finally:
        await conn.close()


async def test_stale_crl_while_connected_ends_the_identity_as_crl_expired(pki, serve):
    clock = ManualClock()
    write_tenant_crl(pki, ACME, number=1, next_update=utcnow() + timedelta(seconds=3))
    trust = TrustStore(pki.directory)
    agent = await serve(pki.agent(ACME))
    conn = await dial_agent(agent.address, tenant=ACME, trust=trust, clock=clock)
    clock.advance(4.0)  # past nextUpdate, without waiting for it
    try:
        assert (await conn.wait_refused()).reason is Reason.CRL_EXPIRED
    finally:
        await conn.close()


# ---------------------------------------------------------------- rotation


async def test_rotation_to_a_new_certificate_for_the_same_identity_repins(log_events, pki, trust, serve):
    old = pki.agent(ACME, "agent-001", "partition-1")
    agent = await serve(old)
    conn = await dial_agent(agent.address, tenant=ACME, trust=trust)
    client = AgentClient(conn, timeout=5)  # made once: its stubs must follow the new channel
    try:
        await client.get_status("ping", "icmp")
        before = conn.current_channel
        new = pki.agent(ACME, "agent-001", "partition-1")
        await agent.restart(cert_chain_pem=new.chain_pem, key_pem=new.key_pem)
        with captured(log_events) as logs:
            # The call meets the pinned failure, the agent is proven afresh, the
            # channel re-pinned, and the call goes once more: no failed poll.
            reply = await client.get_status("ping", "icmp")
        assert reply.response.available and reply.context.serial == new.serial_hex == conn.serial
        assert conn.current_channel is not before
        [rotated] = [e for e in logs if e.get("event") == "identity_rotated"]
        assert (rotated["old_serial"], rotated["serial"], rotated["rotated"]) == (old.serial_hex, new.serial_hex, True)
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        (dict(issuer_tenant=XYZ, dns=[]), Reason.TENANT_MISMATCH),
        (dict(revoked=True), Reason.REVOKED),
        (dict(component_id="agent-002"), Reason.IDENTITY_MISMATCH),
    ],
    ids=["other-tenant-ca", "revoked-same-cn", "other-component"],
)
async def test_rotation_to_an_impostor_is_refused(pki, serve, forge, reason):
    agent = await serve(pki.agent(ACME, "agent-001", "partition-1"))
    revoke = forge.pop("revoked", False)
    impostor = pki.agent(ACME, **{"component_id": "agent-001", "partition_id": "partition-1", **forge})
    if revoke:
        pki.revoke(ACME, impostor)
    trust = TrustStore(pki.directory)
    conn = await dial_agent(agent.address, tenant=ACME, trust=trust)
    try:
        await ping(conn)
        await agent.restart(cert_chain_pem=impostor.chain_pem, key_pem=impostor.key_pem)
        agent.reset_records()
        with pytest.raises(IdentityRefused) as caught:
            await ping(conn)
        assert caught.value.reason is reason
        assert agent.count("GetStatus") == 0
    finally:
        await conn.close()


async def test_a_rotated_poller_certificate_is_used_for_new_connections(pki, serve):
    from poller.pki.authority import load_root

    trust = TrustStore(pki.directory)
    first = await serve(pki.agent(ACME, "agent-001"))
    conn = await dial_agent(first.address, tenant=ACME, trust=trust)
    try:
        await ping(conn)
        assert first.peers[-1] == "poller-1.serviceradar"
        # A new poller identity in the same directory (same root, new id and key).
        root_before = load_root(pki.directory).cert
        _issue_poller(pki, "2")
        assert load_root(pki.directory).cert == root_before
        report = trust.reload()
        assert report.client_changed
        second = await serve(pki.agent(ACME, "agent-002"))
        conn2 = await dial_agent(second.address, tenant=ACME, trust=trust)
        try:
            await ping(conn2)
            assert second.peers[-1] == "poller-2.serviceradar"
        finally:
            await conn2.close()
        # The live connection keeps its pin, and its new connections present the new certificate too.
        await first.restart()
        await _ping_through_reconnect(conn)
        assert first.peers[-1] == "poller-2.serviceradar"
    finally:
        await conn.close()


def _issue_poller(pki, poller_id: str) -> None:
    """Overwrite poller.pem / poller-key.pem with a new certificate from the platform CA."""
    from poller.pki.build import CLIENT_AUTH, build_certificate, cert_pem, key_pem, new_key

    key = new_key("ec")
    cert = build_certificate(
        subject_key=key,
        subject_cn=f"poller-{poller_id}.serviceradar",
        issuer_cert=pki.platform.cert,
        issuer_key=pki.platform.key,
        eku=[CLIENT_AUTH],
    )
    pki.layout.service_cert("poller").write_bytes(cert_pem(cert))
    pki.layout.service_key("poller").write_bytes(key_pem(key))


# ---------------------------------------------------------------- trust from anywhere


def pem_material(pki):
    chain, key = pki.client_identity()
    return dict(
        root=pki.root_pem,
        tenants={ACME: pki.tenant_ca_pem(ACME), XYZ: pki.tenant_ca_pem(XYZ)},
        client_cert=chain,
        client_key=key,
    )


async def test_a_store_made_from_pem_bytes_dials_and_rechecks_on_update(pki, serve):
    trust = TrustStore.from_pem(**pem_material(pki))
    assert trust.certs_dir is None and sorted(trust.tenants) == [ACME, XYZ]
    agent = await serve(pki.agent(ACME))
    conn = await dial_agent(agent.address, tenant=ACME, trust=trust)
    try:
        assert (await ping(conn)).context.tenant == ACME
        crl = tenant_crl(pki, ACME, [agent.certificate.serial_number], number=2)
        report = trust.update_pem(**pem_material(pki), crls={ACME: crl})
        assert report.changed == (ACME,) and not report.problems
        assert (await conn.wait_refused()).reason is Reason.REVOKED
    finally:
        await conn.close()


async def test_any_object_with_a_snapshot_is_a_trust_source(pki, serve):
    """A source that cannot notify: the connection notices a new snapshot at its next call."""
    store = TrustStore.from_pem(**pem_material(pki))

    class Source:
        snapshot = store.snapshot

    agent = await serve(pki.agent(ACME))
    conn = await dial_agent(agent.address, tenant=ACME, trust=Source())
    try:
        await ping(conn)
        store.update_pem(**pem_material(pki), crls={ACME: tenant_crl(pki, ACME, [agent.certificate.serial_number])})
        Source.snapshot = store.snapshot
        with pytest.raises(IdentityRefused) as caught:
            await ping(conn)
        assert caught.value.reason is Reason.REVOKED
    finally:
        await conn.close()


async def test_a_trust_snapshot_itself_is_a_source(pki, trust, serve):
    agent = await serve(pki.agent(ACME))
    async with await dial_agent(agent.address, tenant=ACME, trust=trust.snapshot) as conn:
        assert (await ping(conn)).context.tenant == ACME


def test_from_pem_refuses_what_a_directory_would(pki):
    from poller.trust.store import TrustStoreError

    material = pem_material(pki)
    material["tenants"] = {ACME: pki.tenant_ca_pem(XYZ)}  # xyz's CA filed under acme
    with pytest.raises(TrustStoreError) as caught:
        TrustStore.from_pem(**material)
    assert any("xyz-inc" in p for p in caught.value.problems)
    material = pem_material(pki)
    material["client_key"] = pki.layout.tenant_key(ACME).read_bytes()
    with pytest.raises(TrustStoreError) as caught:
        TrustStore.from_pem(**material)
    assert "does not match" in str(caught.value) and "PRIVATE KEY" not in str(caught.value)


async def test_a_tenant_ca_renewed_with_the_same_key_keeps_live_identities(pki, serve):
    """A new CA certificate (new serial and dates) for the same key and name:
    the agents' leaves still verify, so nothing is refused or redialed."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from poller.pki.build import cert_pem

    trust = TrustStore(pki.directory)
    agent = await serve(pki.agent(ACME))
    conn = await dial_agent(agent.address, tenant=ACME, trust=trust)
    try:
        old, root = pki.tenants[ACME].cert, pki.root
        renewed = (
            x509.CertificateBuilder()
            .subject_name(old.subject)
            .issuer_name(root.cert.subject)
            .public_key(old.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(utcnow() - timedelta(days=1))
            .not_valid_after(utcnow() + timedelta(days=700))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(root.key, hashes.SHA256())
        )
        pki.layout.tenant_ca(ACME).write_bytes(cert_pem(renewed))
        report = trust.reload()
        assert report.changed == (ACME,) and not report.problems
        channel = conn.current_channel
        assert (await ping(conn)).response.available
        assert conn.refusal is None and conn.current_channel is channel
    finally:
        await conn.close()
