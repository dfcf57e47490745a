"""CRLs with chosen numbers, dates and signers, for the CRL policy tests."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from poller.identity.certinfo import utcnow


def make_crl(
    issuer_cert: x509.Certificate,
    issuer_key,
    serials: Iterable[int] = (),
    *,
    number: int | None = 1,
    this_update: datetime | None = None,
    next_update: datetime | None = None,
    extensions: Iterable[tuple[x509.ExtensionType, bool]] = (),
    entry_extensions: Iterable[tuple[x509.ExtensionType, bool]] = (),
) -> bytes:
    """extensions / entry_extensions: (extension, critical) pairs added to the
    CRL / to every revoked entry (delta indicators, distribution points, ...)."""
    now = utcnow()
    entry_extensions = list(entry_extensions)
    this_update = this_update or now - timedelta(minutes=1)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer_cert.subject)
        .last_update(this_update)
        .next_update(next_update or now + timedelta(days=7))
    )
    if number is not None:
        builder = builder.add_extension(x509.CRLNumber(number), critical=False)
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    for serial in serials:
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(this_update)
        for extension, critical in entry_extensions:
            entry = entry.add_extension(extension, critical=critical)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def tenant_crl(pki, slug: str, serials: Iterable[int] = (), **kw) -> bytes:
    authority = pki.tenants[slug]
    return make_crl(authority.cert, authority.key, serials, **kw)


def write_tenant_crl(pki, slug: str, serials: Iterable[int] = (), **kw) -> bytes:
    pem = tenant_crl(pki, slug, serials, **kw)
    pki.layout.tenant_crl(slug).write_bytes(pem)
    return pem


def revocation_reason(trust, cert, tenant: str = "acme-corp"):
    """The Reason verify_agent_chain refuses cert for under trust's snapshot, or None."""
    from poller.identity.reasons import IdentityRefused
    from poller.trust.verify import verify_agent_chain

    try:
        verify_agent_chain([cert.cert], tenant=tenant, trust=trust.snapshot)
    except IdentityRefused as err:
        return err.reason
    return None
