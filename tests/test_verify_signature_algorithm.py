"""A leaf whose signature algorithm is not verified here (SHA-1, MD5) is refused
as today (untrusted_chain), with a detail that says so instead of reading like
a forgery; a leaf whose signature is simply wrong keeps the forgery wording.

cryptography no longer signs certificates with SHA-1, so the SHA-1 leaves here
are re-signed by hand: the same TBS with the algorithm swapped, signed by the
CA's key with ECDSA-SHA1 (as `openssl x509 -req -sha1` makes them)."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from poller.identity import certinfo
from poller.identity.reasons import IdentityRefused, Reason
from poller.pki.build import build_certificate, cert_pem, new_key
from poller.trust import TrustStore, verify_agent_chain

CA_CN = "tenant-acme-corp.ca.serviceradar"
CN = "agent-001.partition-1.acme-corp.serviceradar"
ECDSA_SHA1 = bytes.fromhex("2a8648ce3d0401")


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    length = (
        bytes([n]) if n < 0x80 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8, "big")
    )
    return bytes([tag]) + length + content


def _elements(der: bytes) -> list[bytes]:
    """The TLVs inside one DER SEQUENCE."""
    body_at = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    out, i = [], body_at
    while i < len(der):
        n, at = der[i + 1], i + 2
        if n >= 0x80:
            size = n & 0x7F
            n, at = int.from_bytes(der[i + 2 : i + 2 + size], "big"), i + 2 + size
        out.append(der[i : at + n])
        i = at + n
    return out


def resigned_sha1(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    algorithm = _tlv(0x30, _tlv(0x06, ECDSA_SHA1))
    parts = _elements(cert.tbs_certificate_bytes)
    parts[2] = algorithm  # version, serial, signature algorithm, ...
    tbs = _tlv(0x30, b"".join(parts))
    signature = key.sign(tbs, ec.ECDSA(hashes.SHA1()))
    return x509.load_der_x509_certificate(_tlv(0x30, tbs + algorithm + _tlv(0x03, b"\x00" + signature)))


def refusal(ca: x509.Certificate, leaf: x509.Certificate) -> IdentityRefused:
    store = TrustStore.from_pem(tenants={"acme-corp": cert_pem(ca)})
    with pytest.raises(IdentityRefused) as info:
        verify_agent_chain([leaf, ca], tenant="acme-corp", trust=store.snapshot)
    return info.value


@pytest.fixture
def tenant_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = new_key()
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return build_certificate(subject_key=key, subject_cn=CA_CN, is_ca=True, pathlen=0), key


def test_a_sha1_leaf_from_the_tenant_ca_is_refused_as_unsupported_not_as_forged(tenant_ca):
    ca, key = tenant_ca
    leaf = resigned_sha1(build_certificate(subject_key=new_key(), subject_cn=CN, issuer_cert=ca, issuer_key=key), key)
    # The CA's key really made this signature:
    ca_key = ca.public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)
    ca_key.verify(leaf.signature, leaf.tbs_certificate_bytes, ec.ECDSA(hashes.SHA1()))
    refused = refusal(ca, leaf)
    assert refused.reason is Reason.UNTRUSTED_CHAIN
    assert "ecdsa-with-SHA1, which is not supported" in refused.detail
    assert "did not sign it" not in refused.detail
    assert refused.issuer_tenant is None  # nothing vouched for: the signature was never checked


def test_a_sha1_leaf_from_another_key_is_refused_the_same_way(tenant_ca):
    ca, key = tenant_ca
    rogue_key = new_key()
    assert isinstance(rogue_key, ec.EllipticCurvePrivateKey)
    leaf = resigned_sha1(build_certificate(subject_key=new_key(), subject_cn=CN, issuer_cert=ca, issuer_key=key), rogue_key)
    refused = refusal(ca, leaf)
    assert refused.reason is Reason.UNTRUSTED_CHAIN
    assert "cannot be checked" in refused.detail


def test_a_wrong_signature_keeps_the_forgery_wording(tenant_ca):
    ca, _ = tenant_ca
    forged = build_certificate(subject_key=new_key(), subject_cn=CN, issuer_cert=ca, issuer_key=new_key())
    refused = refusal(ca, forged)
    assert refused.reason is Reason.UNTRUSTED_CHAIN
    assert refused.detail == f"names {CA_CN} as issuer, but that CA's key did not sign it"


def test_an_ecdsa_signature_naming_an_rsa_ca_keeps_the_forgery_wording():
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = build_certificate(subject_key=rsa_key, subject_cn=CA_CN, is_ca=True, pathlen=0)
    forged = build_certificate(subject_key=new_key(), subject_cn=CN, issuer_cert=ca, issuer_key=new_key())
    assert refusal(ca, forged).detail == f"names {CA_CN} as issuer, but that CA's key did not sign it"


def test_unverified_signature_algorithm_names_only_refused_algorithms(tenant_ca):
    ca, key = tenant_ca
    leaf = build_certificate(subject_key=new_key(), subject_cn=CN, issuer_cert=ca, issuer_key=key)
    assert certinfo.unverified_signature_algorithm(leaf) is None
    assert certinfo.unverified_signature_algorithm(resigned_sha1(leaf, key)) == "ecdsa-with-SHA1"
