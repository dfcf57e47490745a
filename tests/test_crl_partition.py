"""A CRL whose issuingDistributionPoint names its distribution point (a
partitioned CRL; ADCS "include in IDP", EJBCA) is complete for exactly the
leaves whose cRLDistributionPoints name that point (RFC 5280 §6.3.3 (b)(2)):
it is applied to them, and every other leaf of the tenant is refused with
`crl_expired` (revocation cannot be decided). Other tenants never notice.

CRLs are made with cryptography's builder (tests/crls.py), signed by the
tenant CA of a ForgePki.
"""

from __future__ import annotations

import pytest
from crls import revocation_reason, write_tenant_crl
from cryptography import x509
from cryptography.x509.oid import NameOID
from test_crl_completeness import idp, reload_logged

from poller.dial.dialer import dial_agent
from poller.identity.reasons import IdentityRefused, Reason
from poller.trust.store import TrustStore, TrustStoreError
from poller.trust.verify import verify_agent_chain

ACME, XYZ = "acme-corp", "xyz-inc"
URL = "http://crl.example/acme.crl"
RDN = x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, "CRL1")])


def point(*names: x509.GeneralName, relative=None, reasons=None, crl_issuer=None) -> x509.DistributionPoint:
    return x509.DistributionPoint(list(names) if names else None, relative, reasons, crl_issuer)


def crldp(*points: x509.DistributionPoint) -> list[tuple[x509.ExtensionType, bool]]:
    return [(x509.CRLDistributionPoints(list(points)), False)]


def at(url: str = URL) -> list[tuple[x509.ExtensionType, bool]]:
    return crldp(point(x509.UniformResourceIdentifier(url)))


def named_crl(pki, serials=(), *, name=URL, number=5, **kw) -> bytes:
    scope = idp(full_name=[x509.UniformResourceIdentifier(name)], **kw)
    return write_tenant_crl(pki, ACME, serials, number=number, extensions=[(scope, True)])


def test_a_crl_naming_the_leaves_distribution_point_is_applied_to_them(pki):
    """The review's case (openssl's crl_idp_dp): the store loads, the named leaves are checked."""
    good, revoked = pki.agent(ACME, "agent-001", extra_extensions=at()), pki.agent(ACME, "agent-002", extra_extensions=at())
    named_crl(pki, [revoked.cert.serial_number])
    trust = TrustStore(pki.directory)
    assert trust.tenant(ACME).crl.number == 5 and not trust.snapshot.refused
    assert revocation_reason(trust, good) is None
    assert revocation_reason(trust, revoked) is Reason.REVOKED
    # The other tenant was never at stake.
    assert revocation_reason(trust, pki.agent(XYZ, "agent-001"), tenant=XYZ) is None
    # It is said, as run logs it at start and at each reload.
    [warning] = [w for w in trust.snapshot.warnings if "issuingDistributionPoint" in w]
    assert URL in warning and "crl_expired" in warning


def test_the_onlycontainsusercerts_flag_beside_the_name_is_accepted_too(pki):
    good = pki.agent(ACME, "agent-001", extra_extensions=at())
    named_crl(pki, only_contains_user_certs=True)
    assert revocation_reason(TrustStore(pki.directory), good) is None


@pytest.mark.parametrize(
    "extensions",
    [
        [],  # no cRLDistributionPoints
        at("http://crl.example/acme-2.crl"),  # another partition
        at(URL.upper()),  # URIs are compared as they are written
        crldp(point(x509.UniformResourceIdentifier(URL), reasons=frozenset({x509.ReasonFlags.key_compromise}))),
        crldp(point(x509.UniformResourceIdentifier(URL), crl_issuer=[x509.DNSName("other-ca.example")])),
        crldp(point(x509.DNSName("crl.example"))),  # same host, another kind of name
    ],
    ids=["no-crldp", "other-point", "other-spelling", "some-reasons-only", "crl-issuer", "dns-name"],
)
def test_a_leaf_outside_the_crls_distribution_point_is_refused_crl_expired(pki, extensions):
    outside = pki.agent(ACME, "agent-003", extra_extensions=extensions)
    named_crl(pki)
    trust = TrustStore(pki.directory)
    with pytest.raises(IdentityRefused) as caught:
        verify_agent_chain([outside.cert], tenant=ACME, trust=trust.snapshot)
    assert caught.value.reason is Reason.CRL_EXPIRED
    assert URL in caught.value.detail and "cannot be decided" in caught.value.detail
    # A revocation on it is still a revocation.
    named_crl(pki, [outside.cert.serial_number], number=6)
    trust.reload()
    assert revocation_reason(trust, outside) is Reason.REVOKED


def test_a_leaf_naming_one_of_several_points_is_covered(pki):
    leaf = pki.agent(
        ACME,
        extra_extensions=crldp(
            point(x509.UniformResourceIdentifier("ldap://ldap.example/cn=acme")),
            point(x509.UniformResourceIdentifier("http://mirror.example/x.crl"), x509.UniformResourceIdentifier(URL)),
        ),
    )
    named_crl(pki)
    assert revocation_reason(TrustStore(pki.directory), leaf) is None


def test_a_relative_name_is_the_issuers_name_plus_that_rdn(pki):
    """nameRelativeToCRLIssuer on either side meets a fullName directoryName of the same name."""
    ca = pki.tenant_ca(ACME)
    absolute = x509.DirectoryName(x509.Name([*ca.subject.rdns, RDN]))
    relative, spelled_out = (
        pki.agent(ACME, "agent-001", extra_extensions=crldp(point(relative=RDN))),
        pki.agent(ACME, "agent-002", extra_extensions=crldp(point(absolute))),
    )
    other = pki.agent(
        ACME,
        "agent-003",
        extra_extensions=crldp(point(relative=x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, "CRL2")]))),
    )
    write_tenant_crl(pki, ACME, number=5, extensions=[(idp(relative_name=RDN), True)])
    trust = TrustStore(pki.directory)
    assert revocation_reason(trust, relative) is revocation_reason(trust, spelled_out) is None
    assert revocation_reason(trust, other) is Reason.CRL_EXPIRED


@pytest.mark.parametrize(
    "flags",
    [
        dict(only_contains_ca_certs=True),
        dict(only_some_reasons=frozenset({x509.ReasonFlags.key_compromise})),
        dict(indirect_crl=True),
    ],
    ids=["only-ca-certs", "only-some-reasons", "indirect"],
)
def test_a_named_point_does_not_excuse_the_other_scope_limits(pki, flags):
    named_crl(pki, **flags)
    with pytest.raises(TrustStoreError) as caught:
        TrustStore(pki.directory)
    assert any("only a complete CRL" in p for p in caught.value.problems), caught.value.problems


async def test_a_reload_to_a_partitioned_crl_refuses_the_live_agents_outside_it(pki, serve, log_events):
    inside, outside = pki.agent(ACME, "agent-001", extra_extensions=at()), pki.agent(ACME, "agent-002")
    write_tenant_crl(pki, ACME, number=4)
    trust = TrustStore(pki.directory)
    agents = [await serve(inside), await serve(outside)]
    kept, lost = [await dial_agent(a.address, tenant=ACME, trust=trust, timeout=3) for a in agents]
    named_crl(pki, number=5)
    assert reload_logged(trust, log_events) == []  # a newer CRL, accepted
    assert trust.tenant(ACME).crl.number == 5
    assert kept.refusal is None
    assert lost.refusal is not None and lost.refusal.reason is Reason.CRL_EXPIRED
    with pytest.raises(IdentityRefused) as caught:
        await dial_agent(agents[1].address, tenant=ACME, trust=trust, timeout=3)
    assert caught.value.reason is Reason.CRL_EXPIRED
    await kept.close()
    await lost.close()


def test_a_remembered_partitioned_crl_keeps_its_scope_across_a_restart(pki, tmp_path):
    outside = pki.agent(ACME, "agent-002")
    named_crl(pki)
    state = tmp_path / "crl-state.json"
    TrustStore(pki.directory, crl_state=state)
    pki.layout.tenant_crl(ACME).unlink()  # the CRL in force now comes from the state file
    trust = TrustStore(pki.directory, crl_state=state)
    assert trust.tenant(ACME).crl.number == 5
    assert revocation_reason(trust, outside) is Reason.CRL_EXPIRED
