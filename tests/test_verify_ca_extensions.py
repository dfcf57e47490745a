"""The tenant CA's own extensions in the path validation (poller.trust.verify.path_verifier):
its extendedKeyUsage is read for the purpose being proven."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID as Eku

from poller.identity.reasons import IdentityRefused, Reason
from poller.pki.build import build_certificate, cert_pem, new_key
from poller.trust import TrustStore, verify_agent_chain

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
