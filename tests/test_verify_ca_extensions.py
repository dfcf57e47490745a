"""The tenant CA's own extensions in the path validation (poller.trust.verify.path_verifier):
its extendedKeyUsage is read for the purpose being proven, and its
basicConstraints may be non-critical but must still say CA:TRUE (pathLen kept).
Each relaxation sits next to the attack that must still fail."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID as Eku
from cryptography.x509.verification import VerificationError

from poller.identity import certinfo
from poller.identity.reasons import IdentityRefused, Reason
from poller.pki.build import build_certificate, cert_pem, new_key
from poller.trust import TrustStore, verify_agent_chain
from poller.trust.verify import _require_ca_flag, path_verifier

CA_CN = "tenant-acme-corp.ca.serviceradar"
CN = "agent-001.partition-1.acme-corp.serviceradar"
BOTH = [Eku.SERVER_AUTH, Eku.CLIENT_AUTH]


def tenant_ca(*, eku=None, bc_critical=True, ca=True, pathlen=0):
    key = new_key()
    constraints = x509.BasicConstraints(ca=ca, path_length=pathlen if ca else None)
    extensions: list[tuple[x509.ExtensionType, bool]] = [(constraints, bc_critical)]
    if eku is not None:
        extensions.append((x509.ExtendedKeyUsage(eku), False))
    cert = build_certificate(
        subject_key=key,
        subject_cn=CA_CN,
        basic_constraints=False,
        key_usage_names=["key_cert_sign", "crl_sign"],
        extra_extensions=extensions,
    )
    return cert, key


def leaf_of(ca, key, *, eku=BOTH, cn=CN):
    return build_certificate(subject_key=new_key(), subject_cn=cn, issuer_cert=ca, issuer_key=key, eku=eku)


def prove(ca, leaf, purpose):
    store = TrustStore.from_pem(tenants={"acme-corp": cert_pem(ca)})
    return verify_agent_chain([leaf, ca], tenant="acme-corp", trust=store.snapshot, purpose=purpose)


def refusal(ca, leaf, purpose) -> IdentityRefused:
    with pytest.raises(IdentityRefused) as info:
        prove(ca, leaf, purpose)
    return info.value


# --- the CA's extendedKeyUsage follows the purpose --------------------------------------------


@pytest.mark.parametrize(
    ("ca_eku", "purpose", "accepted"),
    [
        (None, "server", True),  # no EKU on the CA: any purpose
        (None, "client", True),
        ([Eku.SERVER_AUTH], "server", True),  # a CA for agents' serving certificates, which the poller dials
        ([Eku.SERVER_AUTH], "client", False),
        ([Eku.CLIENT_AUTH], "client", True),
        ([Eku.CLIENT_AUTH], "server", False),  # clientAuth-only CA cannot vouch for a TLS server
        ([Eku.SERVER_AUTH, Eku.CLIENT_AUTH], "server", True),
        ([Eku.SERVER_AUTH, Eku.CLIENT_AUTH], "client", True),
        ([Eku.ANY_EXTENDED_KEY_USAGE], "server", True),
        ([Eku.ANY_EXTENDED_KEY_USAGE], "client", True),
        ([Eku.CODE_SIGNING], "server", False),
        ([Eku.CODE_SIGNING], "client", False),
    ],
)
@pytest.mark.parametrize("leaf_eku", [BOTH, None], ids=["leaf-both", "leaf-no-eku"])
def test_the_ca_extended_key_usage_must_allow_the_purpose_being_proven(ca_eku, purpose, accepted, leaf_eku):
    ca, key = tenant_ca(eku=ca_eku)
    leaf = leaf_of(ca, key, eku=leaf_eku)
    if accepted:
        assert prove(ca, leaf, purpose).tenant == "acme-corp"
    else:
        refused = refusal(ca, leaf, purpose)
        assert refused.reason is Reason.UNTRUSTED_CHAIN
        wanted = "serverAuth" if purpose == "server" else "clientAuth"
        assert f"the CA's extendedKeyUsage does not allow {wanted}" in refused.detail


def test_a_client_auth_ca_cannot_vouch_for_a_server_auth_only_leaf():
    # Go and OpenSSL refuse the combination: the CA's EKU limits what it may certify.
    ca, key = tenant_ca(eku=[Eku.CLIENT_AUTH])
    leaf = leaf_of(ca, key, eku=[Eku.SERVER_AUTH])
    assert "does not allow serverAuth" in refusal(ca, leaf, "server").detail
    # and as a client the leaf's own EKU refuses it
    assert refusal(ca, leaf, "client").reason is Reason.UNTRUSTED_CHAIN


# --- a non-critical basicConstraints CA:TRUE is a CA; CA:FALSE never is -----------------------


@pytest.mark.parametrize("purpose", ["server", "client"])
def test_a_tenant_ca_with_non_critical_basic_constraints_is_accepted(purpose):
    ca, key = tenant_ca(bc_critical=False)
    assert prove(ca, leaf_of(ca, key), purpose).component_id == "agent-001"


@pytest.mark.parametrize("purpose", ["server", "client"])
def test_a_deployment_root_with_non_critical_basic_constraints_is_accepted(purpose):
    key = new_key()
    root = build_certificate(
        subject_key=key,
        subject_cn="Example Deployment Root",
        basic_constraints=False,
        key_usage_names=None,
        extra_extensions=[(x509.BasicConstraints(ca=True, path_length=None), False)],
    )
    store = TrustStore.from_pem(tenants={"acme-corp": cert_pem(root)}, cn_forms={"acme-corp": "deployment"})
    leaf = leaf_of(root, key, cn="agent-001.partition-1.serviceradar")
    ctx = verify_agent_chain([leaf], tenant="acme-corp", trust=store.snapshot, purpose=purpose)
    assert (ctx.tenant, ctx.component_id) == ("acme-corp", "agent-001")


def test_a_leaf_signed_by_another_key_under_a_non_critical_basic_constraints_ca_is_refused():
    ca, _ = tenant_ca(bc_critical=False)
    rogue, rogue_key = tenant_ca(bc_critical=False)  # same name, another key
    forged = leaf_of(rogue, rogue_key)
    refused = refusal(ca, forged, "server")
    assert refused.reason is Reason.UNTRUSTED_CHAIN
    assert "did not sign it" in refused.detail


def intermediate_under(ca, ca_key, *, ca_flag: bool, critical: bool):
    """A certificate `ca` signed whose basicConstraints says CA:`ca_flag` (critical or not)."""
    inter_key = new_key()
    inter = build_certificate(
        subject_key=inter_key,
        subject_cn="intermediate",
        issuer_cert=ca,
        issuer_key=ca_key,
        basic_constraints=False,
        key_usage_names=["key_cert_sign"],
        extra_extensions=[(x509.BasicConstraints(ca=ca_flag, path_length=None), critical)],
    )
    return inter, inter_key


@pytest.mark.parametrize("critical", [True, False])
def test_a_certificate_without_ca_true_never_acts_as_a_ca(critical):
    # As the anchor itself (the trust store refuses such a tenant CA before this) ...
    not_ca, key = tenant_ca(ca=False, bc_critical=critical)
    with pytest.raises(VerificationError, match=r"cA must be asserted|CA:TRUE"):
        path_verifier(not_ca, certinfo.utcnow()).verify(leaf_of(not_ca, key), [])
    # ... and as an intermediate under a good CA.
    ca, ca_key = tenant_ca(pathlen=None)
    inter, inter_key = intermediate_under(ca, ca_key, ca_flag=False, critical=critical)
    with pytest.raises(VerificationError, match=r"cA must be asserted|CA:TRUE"):
        path_verifier(ca, certinfo.utcnow()).verify(leaf_of(inter, inter_key), [inter])


def test_a_ca_without_basic_constraints_is_no_ca():
    key = new_key()
    bare = build_certificate(subject_key=key, subject_cn=CA_CN, basic_constraints=False, key_usage_names=["key_cert_sign"])
    with pytest.raises(VerificationError, match="basicConstraints"):
        path_verifier(bare, certinfo.utcnow()).verify(leaf_of(bare, key), [])


@pytest.mark.parametrize("critical", [True, False])
def test_path_length_is_enforced_whatever_the_criticality(critical):
    ca, ca_key = tenant_ca(bc_critical=critical, pathlen=0)
    inter, inter_key = intermediate_under(ca, ca_key, ca_flag=True, critical=critical)
    with pytest.raises(VerificationError, match="path length"):
        path_verifier(ca, certinfo.utcnow()).verify(leaf_of(inter, inter_key), [inter])


def test_the_replaced_basic_constraints_rule_checks_the_ca_flag_itself():
    # cryptography also refuses CA:FALSE outside its extension policy (the tests above
    # see its message); the rule that replaces its default must not rely on that alone.
    not_ca, _ = tenant_ca(ca=False)
    with pytest.raises(ValueError, match="CA:TRUE"):
        _require_ca_flag(None, not_ca, x509.BasicConstraints(ca=False, path_length=None))
    ca, _ = tenant_ca()
    _require_ca_flag(None, ca, x509.BasicConstraints(ca=True, path_length=0))


# --- nameConstraints cryptography cannot evaluate are refused, and say so ----------------------

SPIFFE = "spiffe://serviceradar.local/agent/acme-corp/partition-1/agent-001"


@pytest.mark.parametrize(
    "subtree",
    [
        x509.UniformResourceIdentifier("serviceradar.local"),
        x509.DirectoryName(x509.Name([x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "Acme")])),
    ],
    ids=["uri", "directoryName"],
)
def test_uri_and_directory_name_constraints_are_refused_plainly(subtree):
    key = new_key()
    constraints = x509.NameConstraints(
        permitted_subtrees=[x509.DNSName("acme-corp.serviceradar"), subtree], excluded_subtrees=None
    )
    ca = build_certificate(subject_key=key, subject_cn=CA_CN, is_ca=True, pathlen=0, extra_extensions=[(constraints, True)])
    leaf = build_certificate(
        subject_key=new_key(), subject_cn=CN, issuer_cert=ca, issuer_key=key, eku=BOTH, dns=[CN], uris=[SPIFFE]
    )
    refused = refusal(ca, leaf, "server")
    assert refused.reason is Reason.UNTRUSTED_CHAIN
    assert "URI or directoryName subtree, which is not supported" in refused.detail
