"""Facts read from one X.509 certificate (pure functions over parsed objects).

The formats here are the ones every output of this package uses: serials and
digests in lowercase hex without separators, times in RFC 3339 UTC.

>>> fingerprint_sha256(cert)  # doctest: +SKIP
'5d41402abc4b2a76b9719d911017c592...'
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

from poller.identity.reasons import PollerError


class CertificateError(PollerError, ValueError):
    """Bytes that are not the certificate(s) they were meant to be."""


def load_pem_chain(data: bytes, *, what: str = "certificate file") -> list[x509.Certificate]:
    """All certificates of a PEM bundle, in order; at least one, else CertificateError."""
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CertificateError(f"{what} holds no readable PEM certificate ({exc})") from None
    if not certs:
        raise CertificateError(f"{what} holds no PEM certificate")
    return certs


def load_der(data: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise CertificateError(f"peer sent a certificate that does not parse ({exc})") from None


def serial_hex(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


def fingerprint_sha256(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def key_matches(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    """True if `key` is the private half of `cert`'s public key (their SubjectPublicKeyInfo agree)."""
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)


def spki_sha256(cert: x509.Certificate) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo (the usual public-key pin)."""
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def common_names(cert: x509.Certificate) -> list[str]:
    """Every CN attribute of the subject, as text (non-string values become repr)."""
    return [
        a.value if isinstance(a.value, str) else repr(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ]


def subject_cn(cert: x509.Certificate) -> str | None:
    """The single CN of the subject; None when there is none or more than one."""
    names = common_names(cert)
    return names[0] if len(names) == 1 else None


def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def dns_names(cert: x509.Certificate) -> list[str]:
    san = _san(cert)
    return list(san.get_values_for_type(x509.DNSName)) if san else []


def ip_names(cert: x509.Certificate) -> list[str]:
    """The IP address SANs, as text."""
    san = _san(cert)
    return [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] if san else []


def issuer_key_id(cert: x509.Certificate) -> str | None:
    """The authority key identifier (hex) naming the key that signed `cert`, when it has one."""
    try:
        value = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        return None
    return value.hex() if value is not None else None


def uris(cert: x509.Certificate) -> list[str]:
    san = _san(cert)
    return list(san.get_values_for_type(x509.UniformResourceIdentifier)) if san else []


def spiffe_uris(cert: x509.Certificate) -> list[str]:
    return [u for u in uris(cert) if u.lower().startswith("spiffe:")]


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True if issuer's key signed cert and cert names issuer's subject as its issuer."""
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:  # wrong key, unsupported algorithm, malformed signature: not issued by it
        return False
    return True


def unverified_signature_algorithm(cert: x509.Certificate) -> str | None:
    """The name of cert's signature algorithm when no signature made with it is
    verified here, else None: SHA-1 and MD5 (which cryptography refuses to
    verify, ValueError "Unsupported signature algorithm"), or one it does not
    know. issued_by() is False for such a certificate whoever signed it, so a
    refusal should say this rather than that the issuer's key did not sign it."""
    try:
        digest = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        digest = None
    else:
        if not isinstance(digest, _UNVERIFIED_DIGESTS):
            return None
    oid = cert.signature_algorithm_oid
    return str(getattr(oid, "_name", None) or oid.dotted_string)


_UNVERIFIED_DIGESTS = (hashes.SHA1, hashes.MD5)


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def not_before(cert: x509.Certificate) -> datetime:
    return cert.not_valid_before_utc


def not_after(cert: x509.Certificate) -> datetime:
    return cert.not_valid_after_utc


def utcnow() -> datetime:
    return datetime.now(UTC)


def summary(cert: x509.Certificate) -> dict[str, str]:
    """Subject, issuer, serial and fingerprint: what an audit line says of a certificate."""
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": serial_hex(cert),
        "fingerprint": fingerprint_sha256(cert),
    }
