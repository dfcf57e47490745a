"""Tenant CAs made by hand: one that ends at a chosen notAfter while the leaves
it issues outlive it, as a CA that does not cap its leaves (an external or
openssl-made one) may; and a twin, another tenant's CA on one tenant's key."""

from __future__ import annotations

from datetime import datetime, timedelta

from poller.identity.certinfo import utcnow
from poller.pki.authority import write_issued
from poller.pki.build import build_certificate, cert_pem, new_key
from poller.pki.ca import load_root, load_tenant_authority
from poller.testing.forge import ForgePki


def tenant_ca_until(pki: ForgePki, slug: str, not_after: datetime) -> None:
    """Write tenant `slug`'s CA (signed by the root, ending at `not_after`) into
    the directory and hold it for forging: pki.agent(slug, ...) then issues
    leaves of the usual year, which outlive it."""
    root = load_root(pki.layout)
    key = new_key()
    cert = build_certificate(
        subject_key=key,
        subject_cn=f"tenant-{slug}.ca.serviceradar",
        issuer_cert=root.cert,
        issuer_key=root.key,
        not_before=utcnow() - timedelta(minutes=5),
        not_after=not_after,
        is_ca=True,
        pathlen=0,
        permitted_dns=[f"{slug}.serviceradar"],
    )
    layout = pki.layout
    layout.tenant_ca(slug).parent.mkdir(parents=True, exist_ok=True)
    write_issued(layout.tenant_ca(slug), layout.tenant_key(slug), layout.tenant_chain(slug), cert, key, root.cert)
    pki.tenants[slug] = load_tenant_authority(layout, slug)


def write_twin_tenant_ca(pki: ForgePki, *, key_of: str = "acme-corp", slug: str = "twin") -> None:
    """Write tenant `slug`'s CA, signed by the root, on tenant `key_of`'s key: a
    certs directory the trust store refuses as a whole (two tenants, one CA key)."""
    root = load_root(pki.layout)
    twin = build_certificate(
        subject_key=load_tenant_authority(pki.layout, key_of).key,
        subject_cn=f"tenant-{slug}.ca.serviceradar",
        issuer_cert=root.cert,
        issuer_key=root.key,
        is_ca=True,
        pathlen=0,
    )
    pki.layout.tenant_dir(slug).mkdir()
    pki.layout.tenant_ca(slug).write_bytes(cert_pem(twin))
