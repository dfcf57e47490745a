"""A CA on disk: a certificate and its private key, loaded and checked to match.

>>> root = load_root("certs")  # doctest: +SKIP
>>> root.cert.subject.rfc4514_string()  # doctest: +SKIP
'CN=ServiceRadar Root CA'
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from poller.identity.names import check_label
from poller.pki.build import PrivateKey, key_matches
from poller.pki.errors import PkiError
from poller.pki.files import read_certificate, read_private_key
from poller.trust.layout import CertsLayout

__all__ = ["Authority", "StrPath", "as_layout", "load_authority", "load_root", "load_tenant_authority"]

StrPath = str | os.PathLike[str]


def as_layout(certs_dir: StrPath | CertsLayout) -> CertsLayout:
    """A CertsLayout for a directory path (a CertsLayout is returned as is)."""
    return certs_dir if isinstance(certs_dir, CertsLayout) else CertsLayout(Path(certs_dir))


@dataclass(frozen=True, slots=True)
class Authority:
    """A CA certificate and its private key, loaded from disk (key never printed)."""

    cert: x509.Certificate
    key: PrivateKey = field(repr=False)
    cert_path: Path
    key_path: Path


def load_authority(cert_path: Path, key_path: Path, what: str) -> Authority:
    """Load a CA pair; PkiError if either file is missing/unreadable or they do not match."""
    if not cert_path.exists() and not key_path.exists():
        raise PkiError(f"{what} not found ({cert_path})")
    if not cert_path.exists():
        raise PkiError(f"{what}: {key_path} exists but {cert_path} is missing")
    if not key_path.exists():
        raise PkiError(f"{what}: {cert_path} exists but its key {key_path} is missing")
    cert = read_certificate(cert_path, what=f"{what} {cert_path}")
    key = read_private_key(key_path, what=f"{what} key {key_path}")
    if not key_matches(cert, key):
        raise PkiError(f"{what}: {key_path} is not the private key of {cert_path}")
    return Authority(cert=cert, key=key, cert_path=cert_path, key_path=key_path)


def load_root(certs_dir: StrPath | CertsLayout) -> Authority:
    """The platform root CA and key of a certs directory."""
    layout = as_layout(certs_dir)
    if not layout.root_ca.exists() and not layout.root_key.exists():
        raise PkiError(f"no root CA in {layout.root} (create one with `serviceradar-poller pki init {layout.root}`)")
    return load_authority(layout.root_ca, layout.root_key, "root CA")


def load_tenant_authority(certs_dir: StrPath | CertsLayout, slug: str) -> Authority:
    """A tenant's intermediate CA and key; a clear PkiError when the tenant has none."""
    layout = as_layout(certs_dir)
    check_label(slug, "tenant slug")
    if not layout.tenant_ca(slug).exists() and not layout.tenant_key(slug).exists():
        raise PkiError(
            f"tenant {slug!r} has no CA in {layout.root} (create it with `serviceradar-poller pki tenant {layout.root} {slug}`)"
        )
    return load_authority(layout.tenant_ca(slug), layout.tenant_key(slug), f"tenant {slug!r} CA")
