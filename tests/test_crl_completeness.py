"""Only complete CRLs replace the one in force (issue 18 item 10, RFC 5280
§5.2, §6.3.3): a delta CRL, a CRL whose issuingDistributionPoint limits its
scope (a named distribution point aside: tests/test_crl_partition.py), and
a CRL with an unknown critical extension are refused with a
`trust_material_refused` line; the CRL in force stays, and the revocations
the refused CRL (signed by the tenant's CA) lists are added to it.

CRLs are made with cryptography's builder (tests/crls.py), signed by the
tenant CA of a ForgePki; agents are real TLS servers on loopback.
"""

from __future__ import annotations

import pytest
from crls import revocation_reason, tenant_crl, write_tenant_crl
from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier
from events import captured

from poller.daemon.watch import reload_trust
from poller.dial.dialer import dial_agent
from poller.identity.reasons import IdentityRefused, Reason
from poller.metrics import PollerMetrics
from poller.trust.store import TrustStore, TrustStoreError

ACME = "acme-corp"
PRIVATE_OID = ObjectIdentifier("1.3.6.1.4.1.55555.1.1")


def idp(**kw) -> x509.IssuingDistributionPoint:
    fields = dict(
        full_name=None,
        relative_name=None,
        only_contains_user_certs=False,
        only_contains_ca_certs=False,
        only_some_reasons=None,
        indirect_crl=False,
        only_contains_attribute_certs=False,
    )
    return x509.IssuingDistributionPoint(**{**fields, **kw})


def reload_logged(trust: TrustStore, log_events) -> list[dict]:
    with captured(log_events) as logs:
        reload_trust(trust, why="test", metrics=PollerMetrics())
    return [e for e in logs if e["event"] == "trust_material_refused"]


DELTA = (x509.DeltaCRLIndicator(10), True)
SCOPE_LIMITING = {
    "only-ca-certs": (idp(only_contains_ca_certs=True), True),
    "only-attribute-certs": (idp(only_contains_attribute_certs=True), True),
    "only-some-reasons": (idp(only_some_reasons=frozenset({x509.ReasonFlags.key_compromise})), True),
    "indirect": (idp(indirect_crl=True), True),
    "unknown-critical": (x509.UnrecognizedExtension(PRIVATE_OID, b"\x05\x00"), True),
}


async def test_a_delta_crl_does_not_lift_the_revocations_of_the_complete_one(pki, serve, log_events):
    """The review's case: complete #10 revokes the agent, delta #11 takes its place."""
    revoked, other = pki.agent(ACME, "agent-001"), pki.agent(ACME, "agent-002")
    complete = write_tenant_crl(pki, ACME, [revoked.cert.serial_number], number=10)
    trust = TrustStore(pki.directory)
    write_tenant_crl(pki, ACME, [other.cert.serial_number], number=11, extensions=[DELTA])
    [line] = reload_logged(trust, log_events)
    assert "delta CRL" in line["problem"] and line["level"] == "error"
    assert trust.tenant(ACME).crl.number == 10
    agent = await serve(revoked)
    with pytest.raises(IdentityRefused) as caught:
        await dial_agent(agent.address, tenant=ACME, trust=trust, timeout=3)
    assert caught.value.reason is Reason.REVOKED
    # What the delta CRL revokes is applied all the same (signed by the tenant's CA).
    assert revocation_reason(trust, other) is Reason.REVOKED
    # Putting #10 back is no "rollback": it is the CRL in force.
    pki.layout.tenant_crl(ACME).write_bytes(complete)
    assert reload_logged(trust, log_events) == []
    assert revocation_reason(trust, revoked) is revocation_reason(trust, other) is Reason.REVOKED


def test_a_delta_crl_entry_removed_from_crl_does_not_unrevoke(pki, log_events):
    revoked = pki.agent(ACME, "agent-001")
    write_tenant_crl(pki, ACME, [revoked.cert.serial_number], number=10)
    trust = TrustStore(pki.directory)
    unrevoke = [(x509.CRLReason(x509.ReasonFlags.remove_from_crl), False)]
    write_tenant_crl(pki, ACME, [revoked.cert.serial_number], number=11, extensions=[DELTA], entry_extensions=unrevoke)
    [line] = reload_logged(trust, log_events)
    assert "delta CRL" in line["problem"]
    assert revocation_reason(trust, revoked) is Reason.REVOKED


@pytest.mark.parametrize("extension", SCOPE_LIMITING.values(), ids=SCOPE_LIMITING.keys())
def test_a_scope_limited_crl_or_unknown_critical_extension_is_refused(pki, log_events, extension):
    revoked, other = pki.agent(ACME, "agent-001"), pki.agent(ACME, "agent-002")
    write_tenant_crl(pki, ACME, [revoked.cert.serial_number], number=10)
    trust = TrustStore(pki.directory)
    write_tenant_crl(pki, ACME, [other.cert.serial_number], number=11, extensions=[extension])
    [line] = reload_logged(trust, log_events)
    assert "only a complete CRL replaces the one in force" in line["problem"], line["problem"]
    assert trust.tenant(ACME).crl.number == 10
    assert revocation_reason(trust, revoked) is Reason.REVOKED  # the CRL in force stays
    assert revocation_reason(trust, other) is Reason.REVOKED  # and the refused one's revocation is applied


@pytest.mark.parametrize("extension", [DELTA, *SCOPE_LIMITING.values()], ids=["delta", *SCOPE_LIMITING])
def test_at_start_such_a_crl_refuses_the_store(pki, extension):
    write_tenant_crl(pki, ACME, [5], number=11, extensions=[extension])
    with pytest.raises(TrustStoreError) as caught:
        TrustStore(pki.directory)
    assert any("crl.pem" in p and "only a complete CRL" in p for p in caught.value.problems), caught.value.problems


def test_a_critical_unknown_entry_extension_or_certificate_issuer_is_refused(pki):
    for entry in (
        (x509.UnrecognizedExtension(PRIVATE_OID, b"\x05\x00"), True),
        (x509.CertificateIssuer([x509.DNSName("other-ca.example")]), True),
    ):
        pki.layout.tenant_crl(ACME).write_bytes(tenant_crl(pki, ACME, [5], number=3, entry_extensions=[entry]))
        with pytest.raises(TrustStoreError) as caught:
            TrustStore(pki.directory)
        assert any("entry 5" in p for p in caught.value.problems), caught.value.problems


@pytest.mark.parametrize(
    "extension",
    [
        (idp(only_contains_user_certs=True), True),  # every agent is an end-entity certificate
        (x509.UnrecognizedExtension(PRIVATE_OID, b"\x05\x00"), False),  # not critical: may be ignored
        (x509.FreshestCRL([x509.DistributionPoint([x509.UniformResourceIdentifier("http://d")], None, None, None)]), False),
    ],
    ids=["only-user-certs", "unknown-non-critical", "freshest-crl"],
)
def test_a_complete_crl_with_harmless_extensions_is_accepted(pki, extension):
    revoked = pki.agent(ACME, "agent-001")
    write_tenant_crl(pki, ACME, [revoked.cert.serial_number], number=4, extensions=[extension])
    trust = TrustStore(pki.directory)
    assert trust.tenant(ACME).crl.number == 4 and not trust.snapshot.refused
    assert revocation_reason(trust, revoked) is Reason.REVOKED
