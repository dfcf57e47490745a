"""Certificates written by upstream ServiceRadar's generate-certs.sh at HEAD
(tests/fixtures/upstream-head-certs/, see its README): one self-signed root
per deployment, edge CNs `<component>.<partition>.serviceradar`, SPIFFE
`spiffe://serviceradar.local/<type>/<partition>/<component>`.

The script gives edge certificates 365 days. Checks that take a clock use
IN_VALIDITY; a real TLS handshake cannot, so `agent_001()` hands out the
stored certificate while it is valid for another 30 days and after that the
same certificate re-dated (same subject, key and extensions, byte for byte,
signed again by the stored root key), so that the suite does not break on a date.
"""

from __future__ import annotations

import json
import secrets
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "upstream-head-certs"
ROOT_PEM = (FIXTURES / "root.pem").read_bytes()
ROOT = x509.load_pem_x509_certificate(ROOT_PEM)
AGENT_PEM = (FIXTURES / "components" / "agent-001-default.pem").read_bytes()
AGENT = x509.load_pem_x509_certificate(AGENT_PEM)
AGENT_KEY_PEM = (FIXTURES / "components" / "agent-001-default-key.pem").read_bytes()
GATEWAY = x509.load_pem_x509_certificate((FIXTURES / "gateway.pem").read_bytes())
AGENT_CN = "agent-001.default.serviceradar"
AGENT_SPIFFE = "spiffe://serviceradar.local/agent/default/agent-001"
#: a moment inside the stored edge certificate's validity
IN_VALIDITY = AGENT.not_valid_before_utc + timedelta(days=1)


def root_key() -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key((FIXTURES / "root-key.pem").read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def agent_001() -> tuple[bytes, bytes]:
    """(chain PEM: leaf + root, as the script's -chain.pem; key PEM), valid now."""
    leaf = AGENT
    if datetime.now(UTC) + timedelta(days=30) > AGENT.not_valid_after_utc:
        leaf = re_sign(AGENT, not_before=datetime.now(UTC) - timedelta(days=1))
    return leaf.public_bytes(serialization.Encoding.PEM) + ROOT_PEM, AGENT_KEY_PEM


def re_sign(
    cert: x509.Certificate,
    *,
    not_before: datetime | None = None,
    subject_cn: str | None = None,
    san: x509.SubjectAlternativeName | None = None,
) -> x509.Certificate:
    """cert signed again by the upstream root, with new dates / CN / SAN if given,
    everything else (key, other subject attributes, extensions) as upstream made it."""
    start = not_before or cert.not_valid_before_utc
    subject = cert.subject
    if subject_cn is not None:
        subject = x509.Name(
            [x509.NameAttribute(a.oid, subject_cn) if a.oid == x509.NameOID.COMMON_NAME else a for a in cert.subject]
        )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(cert.issuer)
        .public_key(cert.public_key())  # type: ignore[arg-type]
        .serial_number(secrets.randbits(120) | 1)
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=365))
    )
    for ext in cert.extensions:
        value = san if san is not None and isinstance(ext.value, x509.SubjectAlternativeName) else ext.value
        builder = builder.add_extension(value, ext.critical)
    return builder.sign(root_key(), hashes.SHA256())


def spiffe_san(*uris: str, dns: str = AGENT_CN) -> x509.SubjectAlternativeName:
    return x509.SubjectAlternativeName([x509.DNSName(dns), *(x509.UniformResourceIdentifier(u) for u in uris)])


def bind(certs: Path, tenant: str, ca_pem: bytes = ROOT_PEM, cn_form: str | None = "deployment") -> Path:
    """tenants/<tenant>/ca.pem = ca_pem, and tenant.json binding it (none when cn_form is None)."""
    home = certs / "tenants" / tenant
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    (home / "ca.pem").write_bytes(ca_pem)
    if cn_form is not None:
        (home / "tenant.json").write_text(json.dumps({"cn_form": cn_form}))
    return home
