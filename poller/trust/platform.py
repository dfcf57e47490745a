"""Prove a platform identity: a certificate issued by the platform services CA.

A platform (administrator) certificate is issued by certs/platform/ca.pem and
names `<name>.platform.serviceradar`. verify_platform_chain() is the one place
such an identity is accepted; local_platform_identity() gives the poller
process's own identity (the client certificate whose key it loaded).

The anchor is the platform CA alone, never the root: a tenant CA (also under
the root) must not be able to mint a platform name.

>>> platform = load_platform_authority(CertsLayout(Path("certs")))  # doctest: +SKIP
>>> verify_platform_chain(chain_der, platform).name  # doctest: +SKIP
'ops-admin'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import VerificationError

from poller.identity import certinfo
from poller.identity.certinfo import CertificateError
from poller.identity.context import _PROOF
from poller.identity.names import InvalidName
from poller.identity.platform import PlatformIdentity, parse_platform_cn
from poller.identity.reasons import IdentityRefused, Reason
from poller.trust.layout import CertsLayout
from poller.trust.store import ClientIdentity
from poller.trust.verify import ca_not_after, parse_chain, path_failure, path_verifier


@dataclass(frozen=True, slots=True)
class PlatformAuthority:
    """The platform services CA: the only anchor for platform identities."""

    cert: x509.Certificate
    pem: bytes
    spki_sha256: str

    @classmethod
    def from_certificate(cls, cert: x509.Certificate) -> PlatformAuthority:
        return cls(cert=cert, pem=cert.public_bytes(serialization.Encoding.PEM), spki_sha256=certinfo.spki_sha256(cert))

    def issued(self, cert: x509.Certificate) -> bool:
        """True if this CA's key signed cert (names and signature both match)."""
        return certinfo.issued_by(cert, self.cert)


def load_platform_authority(layout: CertsLayout) -> PlatformAuthority | None:
    """certs/platform/ca.pem, or None when the directory has no platform CA.

    Raises CertificateError (a ValueError) when the file exists but is not a CA certificate.
    """
    path = layout.platform_ca
    if not path.exists():
        return None
    cert = certinfo.load_pem_chain(path.read_bytes(), what=str(path))[0]
    if not certinfo.is_ca(cert):
        raise CertificateError(f"{path}: not a CA certificate")
    return PlatformAuthority.from_certificate(cert)


def platform_not_after(platform: PlatformAuthority, root: x509.Certificate | None) -> datetime:
    """When the platform CA stops anchoring identities: ca_not_after, the rule of a tenant CA."""
    return ca_not_after(platform.cert, root)


def verify_platform_chain(
    chain: Sequence[bytes | x509.Certificate],
    platform: PlatformAuthority | None,
    *,
    now: datetime | None = None,
    root: x509.Certificate | None = None,
) -> PlatformIdentity:
    """Return the PlatformIdentity the chain proves, or raise IdentityRefused.

    Checks, in order: issued by the platform CA (name and key), not a CA, CN
    `<name>.platform.serviceradar`, within validity, a full path validation
    to the platform CA (signature, EKU clientAuth when present), and, given
    the `root` that issued the platform CA, that root's validity.
    """
    now = now or certinfo.utcnow()
    certs = parse_chain(chain)
    leaf = certs[0]
    peer = certinfo.summary(leaf)

    def refuse(reason: Reason, detail: str) -> IdentityRefused:
        return IdentityRefused(reason, detail, peer=peer)

    if platform is None:
        raise refuse(Reason.UNTRUSTED_CHAIN, "no platform CA (platform/ca.pem) in the trust store")
    if not platform.issued(leaf):
        raise refuse(Reason.UNTRUSTED_CHAIN, "not issued by the platform CA")
    if certinfo.is_ca(leaf):
        raise refuse(Reason.BAD_CERTIFICATE, "the presented leaf is a CA certificate")
    names = certinfo.common_names(leaf)
    if len(names) != 1:
        raise refuse(Reason.INVALID_CN, f"subject has {len(names)} CNs, expected exactly 1")
    try:
        name = parse_platform_cn(names[0])
    except InvalidName as exc:
        raise refuse(Reason.INVALID_CN, str(exc)) from None
    if now < certinfo.not_before(leaf):
        raise refuse(Reason.NOT_YET_VALID, f"valid from {certinfo.not_before(leaf):%Y-%m-%dT%H:%M:%SZ}")
    if now > certinfo.not_after(leaf):
        raise refuse(Reason.EXPIRED, f"expired at {certinfo.not_after(leaf):%Y-%m-%dT%H:%M:%SZ}")
    try:
        path_verifier(platform.cert, now, "client").verify(leaf, certs[1:])
    except VerificationError as exc:
        raise refuse(Reason.UNTRUSTED_CHAIN, f"path validation to the platform CA failed: {path_failure(exc)}") from None
    end = platform_not_after(platform, root)
    if now > end:
        raise refuse(Reason.UNTRUSTED_CHAIN, f"the root that issued the platform CA expired at {end:%Y-%m-%dT%H:%M:%SZ}")
    return PlatformIdentity(
        name=name,
        cn=names[0],
        serial=peer["serial"],
        fingerprint_sha256=peer["fingerprint"],
        issuer_spki_sha256=platform.spki_sha256,
        not_after=certinfo.not_after(leaf),
        verified_at=now,
        local=False,
        _proof=_PROOF,
    )


def local_platform_identity(client: ClientIdentity) -> PlatformIdentity:
    """The poller process's own identity: the client certificate loaded with its key.

    Trusted because TrustStore loaded the matching private key; `local=True`
    so that its deliveries are not audited as an administrator's.
    """
    cn = client.cn
    now = certinfo.utcnow()
    return PlatformIdentity(
        name=cn.split(".", 1)[0] or "poller",
        cn=cn,
        serial=certinfo.serial_hex(client.cert),
        fingerprint_sha256=certinfo.fingerprint_sha256(client.cert),
        issuer_spki_sha256="",
        not_after=certinfo.not_after(client.cert),
        verified_at=now,
        local=True,
        _proof=_PROOF,
    )
