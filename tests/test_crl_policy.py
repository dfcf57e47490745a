"""CRL policy (issue 6), fail closed as OpenSSL's CRL checking and nginx's
ssl_crl are: a stale CRL refuses its tenant's agents (crl_expired), a rolled
back or badly signed CRL is refused and the newer one stays, a missing CRL is
allowed with a warning and poller_tenant_crl_loaded 0 unless require_crl is set.

Also "verify first, then read": a certificate from a rogue CA with the same
name is untrusted_chain whatever its CN, dates or serial say.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from crls import make_crl, tenant_crl, write_tenant_crl
from events import captured
from spawn import spawn_cli

from poller.config import ConfigError, parse_config
from poller.daemon.watch import reload_trust, report_trust_state
from poller.dial.dialer import dial_agent
from poller.identity.certinfo import utcnow
from poller.identity.reasons import IdentityRefused, Reason
from poller.metrics import PollerMetrics
from poller.testing.forge import ForgePki
from poller.trust.store import TrustStore, TrustStoreError
from poller.trust.verify import verify_agent_chain

ACME, XYZ = "acme-corp", "xyz-inc"


async def refusal(agent, trust, tenant=ACME) -> Reason:
    with pytest.raises(IdentityRefused) as caught:
        await dial_agent(agent.address, tenant=tenant, trust=trust, timeout=3)
    return caught.value.reason


async def test_a_crl_past_its_next_update_refuses_the_tenant_with_crl_expired(pki, serve):
    write_tenant_crl(pki, ACME, next_update=utcnow() - timedelta(hours=1), this_update=utcnow() - timedelta(days=8))
    trust = TrustStore(pki.directory)
    assert any("nextUpdate" in w for w in trust.snapshot.warnings)
    assert await refusal(await serve(pki.agent(ACME)), trust) is Reason.CRL_EXPIRED
    # Another tenant is not affected, and a fresh CRL lifts the refusal.
    async with await dial_agent((await serve(pki.agent(XYZ, "agent-007", "site-b"))).address, tenant=XYZ, trust=trust):
        pass
    write_tenant_crl(pki, ACME, number=2)
    assert trust.reload().changed == (ACME,)
    async with await dial_agent((await serve(pki.agent(ACME, "agent-002"))).address, tenant=ACME, trust=trust) as conn:
        assert conn.context.tenant == ACME


async def test_a_revoked_serial_on_a_stale_crl_is_still_revoked(pki, serve):
    cert = pki.agent(ACME)
    write_tenant_crl(
        pki,
        ACME,
        [cert.cert.serial_number],
        next_update=utcnow() - timedelta(minutes=1),
        this_update=utcnow() - timedelta(days=8),
    )
    assert await refusal(await serve(cert), TrustStore(pki.directory)) is Reason.REVOKED


async def test_missing_crl_warns_and_reads_zero_and_require_crl_refuses(log_events, pki, serve):
    write_tenant_crl(pki, XYZ)  # acme has none
    trust = TrustStore(pki.directory)
    metrics = PollerMetrics()
    with captured(log_events) as logs:
        report_trust_state(trust, trust.snapshot.warnings, metrics=metrics)
    absent = [e for e in logs if e["event"] == "tenant_crl_absent"]
    assert [e["tenant"] for e in absent] == [ACME]  # one warning, for that tenant only
    assert metrics.registry.get_sample_value("poller_tenant_crl_loaded", {"tenant": ACME}) == 0
    assert metrics.registry.get_sample_value("poller_tenant_crl_loaded", {"tenant": XYZ}) == 1
    # ... and again at each reload.
    with captured(log_events) as logs:
        reload_trust(trust, why="test", metrics=metrics)
    assert [e["tenant"] for e in logs if e["event"] == "tenant_crl_absent"] == [ACME]

    agent = await serve(pki.agent(ACME))
    async with await dial_agent(agent.address, tenant=ACME, trust=trust):
        pass  # allowed by default (generate-certs.sh writes no CRLs)
    strict = TrustStore(pki.directory, require_crl=True)
    assert await refusal(agent, strict) is Reason.CRL_EXPIRED
    async with await dial_agent((await serve(pki.agent(XYZ, "agent-007", "site-b"))).address, tenant=XYZ, trust=strict):
        pass  # a tenant with a CRL is fine under require_crl


async def test_require_crl_switched_on_ends_live_identities_of_tenants_without_one(pki, serve):
    trust = TrustStore(pki.directory)
    agent = await serve(pki.agent(ACME))
    conn = await dial_agent(agent.address, tenant=ACME, trust=trust)
    try:
        trust.require_crl = True
        assert (await conn.wait_refused()).reason is Reason.CRL_EXPIRED
    finally:
        await conn.close()


async def test_a_crl_number_rollback_is_refused_and_the_newer_stays(pki, serve):
    cert = pki.agent(ACME)
    write_tenant_crl(pki, ACME, [cert.cert.serial_number], number=5)
    trust = TrustStore(pki.directory)
    write_tenant_crl(pki, ACME, [], number=3)  # an older list, without the revocation
    report = trust.reload()
    assert any("rollback" in p for p in report.problems), report.problems
    assert trust.tenant(ACME).crl.number == 5
    assert await refusal(await serve(cert), trust) is Reason.REVOKED
    write_tenant_crl(pki, ACME, [cert.cert.serial_number], number=6)
    assert not trust.reload().problems and trust.tenant(ACME).crl.number == 6


async def test_a_crl_without_a_number_cannot_replace_a_numbered_one(pki):
    write_tenant_crl(pki, ACME, [7], number=2)
    trust = TrustStore(pki.directory)
    write_tenant_crl(pki, ACME, [], number=None)
    assert any("rollback" in p for p in trust.reload().problems)
    assert 7 in trust.tenant(ACME).revoked_serials


def test_a_crl_with_a_bad_signature_is_refused_at_start_and_at_reload(log_events, pki, tmp_path):
    rogue = ForgePki.create(tmp_path / "rogue", tenants=(ACME,))  # same CA name, another key
    forged = tenant_crl(rogue, ACME, [], number=99)
    pki.layout.tenant_crl(ACME).write_bytes(forged)
    with pytest.raises(TrustStoreError) as caught:
        TrustStore(pki.directory)
    assert any("crl.pem" in p and "not signed" in p for p in caught.value.problems)

    write_tenant_crl(pki, ACME, [7], number=1)
    trust = TrustStore(pki.directory)
    pki.layout.tenant_crl(ACME).write_bytes(forged)
    with captured(log_events) as logs:
        report = reload_trust(trust, why="test", metrics=PollerMetrics())
    assert report is not None and 7 in trust.tenant(ACME).revoked_serials
    [line] = [e for e in logs if e["event"] == "trust_material_refused"]
    assert "not signed" in line["problem"] and "kept the material in force" in line["problem"]


def test_unparsable_files_are_refused_and_the_material_in_force_stays(pki):
    write_tenant_crl(pki, ACME, [7], number=1)
    trust = TrustStore(pki.directory)
    before = trust.tenant(ACME)
    pki.layout.tenant_crl(ACME).write_text("-----BEGIN X509 CRL-----\ngarbage\n-----END X509 CRL-----\n")
    report = trust.reload()
    assert any("not a readable PEM CRL" in p for p in report.problems)
    assert trust.tenant(ACME) is before
    pki.layout.service_cert("poller").write_text("garbage")
    report = trust.reload()
    assert any("client certificate" in p and "kept the client identity in force" in p for p in report.problems)
    assert trust.client.cn == "poller-1.serviceradar"


def test_an_unreadable_file_keeps_the_material_in_force(pki):
    write_tenant_crl(pki, ACME, [7], number=1)
    trust = TrustStore(pki.directory)
    pki.layout.tenant_crl(ACME).unlink()
    pki.layout.tenant_crl(ACME).mkdir()  # reading it fails (as root, permissions would not)
    report = trust.reload()
    assert any("unreadable" in p for p in report.problems), report.problems
    assert 7 in trust.tenant(ACME).revoked_serials


def test_removing_crl_pem_does_not_lift_revocations(pki):
    write_tenant_crl(pki, ACME, [7], number=1)
    trust = TrustStore(pki.directory)
    pki.layout.tenant_crl(ACME).unlink()
    report = trust.reload()
    assert 7 in trust.tenant(ACME).revoked_serials
    assert any("was removed" in w for w in report.warnings)


async def test_probe_says_whether_a_crl_is_loaded(pki, serve):
    import asyncio

    agent = await serve(pki.agent(ACME))

    async def probe() -> dict:
        proc = await spawn_cli("probe", agent.address, "--certs", str(pki.directory), "--tenant", ACME,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await proc.communicate()
        assert proc.returncode == 0, out
        return json.loads(out)

    assert (await probe())["crl"] == "absent"
    write_tenant_crl(pki, ACME)
    assert (await probe())["crl"] == "loaded"


def test_config_key_require_crl():
    base = {"poller_id": "p"}
    assert parse_config(base).require_crl is False
    assert parse_config({**base, "require_crl": True}).require_crl is True
    with pytest.raises(ConfigError) as caught:
        parse_config({**base, "require_crl": "yes"})
    assert "require_crl" in str(caught.value)


# ---------------------------------------------------------------- verify first, then read


@pytest.mark.parametrize(
    "forge",
    [
        dict(not_after=utcnow() - timedelta(days=1)),
        dict(not_before=utcnow() + timedelta(days=1), not_after=utcnow() + timedelta(days=9)),
        dict(cn="not-an-identity", spiffe=None, dns=[]),
        dict(spiffe="spiffe://serviceradar.local/agent/xyz-inc/partition-1/agent-001"),
        dict(is_ca=True),
        dict(component_id="agent-002"),
    ],
    ids=["expired", "not-yet-valid", "invalid-cn", "lying-spiffe", "leaf-is-ca", "other-component"],
)
def test_a_rogue_ca_with_the_tenant_ca_name_cannot_choose_the_reason(pki, tmp_path, forge):
    rogue = ForgePki.create(tmp_path / "rogue", tenants=(ACME,))
    cert = rogue.agent(ACME, **forge)
    with pytest.raises(IdentityRefused) as caught:
        verify_agent_chain([cert.cert], tenant=ACME, trust=TrustStore(pki.directory).snapshot, component="agent-001")
    assert caught.value.reason is Reason.UNTRUSTED_CHAIN, caught.value.detail


def test_a_revoked_serial_minted_by_a_rogue_ca_is_untrusted_not_revoked(pki, tmp_path):
    rogue = ForgePki.create(tmp_path / "rogue", tenants=(ACME,))
    cert = rogue.agent(ACME)
    write_tenant_crl(pki, ACME, [cert.cert.serial_number])
    with pytest.raises(IdentityRefused) as caught:
        verify_agent_chain([cert.cert], tenant=ACME, trust=TrustStore(pki.directory).snapshot)
    assert caught.value.reason is Reason.UNTRUSTED_CHAIN


def test_make_crl_helper_signs_with_the_given_key(pki):
    """The helper itself: its CRLs verify against the issuing CA (else the tests above prove nothing)."""
    from cryptography import x509

    authority = pki.tenants[ACME]
    crl = x509.load_pem_x509_crl(make_crl(authority.cert, authority.key, [5], number=4))
    assert crl.is_signature_valid(authority.cert.public_key())
    assert crl.get_revoked_certificate_by_serial_number(5) is not None
