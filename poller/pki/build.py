"""Low-level certificate primitives shared by poller.pki and poller.testing.forge.

Nothing here touches the file system and nothing here enforces ServiceRadar's
naming rules: `build_certificate` signs exactly what it is asked to sign,
including certificates that violate the issuer's name constraints (which is
what the adversarial test helpers need). The policy lives in
`poller.pki.authority`.

>>> root_key = new_key()
>>> root = build_certificate(subject_key=root_key, subject_cn="Example Root", is_ca=True)
>>> leaf_key = new_key()
>>> leaf = build_certificate(
...     subject_key=leaf_key, subject_cn="a.example", issuer_cert=root, issuer_key=root_key,
...     dns=["a.example"], eku=[SERVER_AUTH],
... )
>>> leaf.issuer == root.subject
True
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from poller.identity import certinfo
from poller.identity.reasons import InvalidArgument

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey: TypeAlias = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
KeyKind: TypeAlias = Literal["ec", "rsa"]
IPLike: TypeAlias = str | ipaddress.IPv4Address | ipaddress.IPv6Address

SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH
CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH

#: Backdating of notBefore, so that a certificate made now is valid on a peer
#: whose clock is slightly behind.
CLOCK_SKEW = timedelta(minutes=5)

#: Names accepted in `key_usage=` (the keyword arguments of x509.KeyUsage).
KEY_USAGES = frozenset(
    {
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    }
)

#: `key_usage="auto"`: CA -> keyCertSign+cRLSign; EC leaf -> digitalSignature;
#: RSA leaf -> digitalSignature+keyEncipherment.
AUTO: Literal["auto"] = "auto"


def new_key(kind: KeyKind = "ec", bits: int = 2048) -> PrivateKey:
    """A fresh private key: ECDSA P-256 (`"ec"`, the default) or RSA of `bits` bits.

    >>> new_key().curve.name
    'secp256r1'
    """
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    raise InvalidArgument(f"unknown key kind {kind!r} (expected 'ec' or 'rsa')")


def utcnow() -> datetime:
    """Now, in UTC, truncated to whole seconds (X.509 times have no fractions)."""
    return datetime.now(UTC).replace(microsecond=0)


def key_usage(names: Iterable[str]) -> x509.KeyUsage:
    """An x509.KeyUsage with exactly the named bits set (see KEY_USAGES)."""
    wanted = set(names)
    unknown = wanted - KEY_USAGES
    if unknown:
        raise InvalidArgument(f"unknown key usage(s) {sorted(unknown)}; expected some of {sorted(KEY_USAGES)}")
    return x509.KeyUsage(**{name: name in wanted for name in KEY_USAGES})


def _public(key: PrivateKey | PublicKey) -> PublicKey:
    if isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        return key.public_key()
    return key


def _name(cn: str | None, attrs: Sequence[x509.NameAttribute[str]]) -> x509.Name:
    attributes = list(attrs)
    if cn is not None:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attributes)


def _ski_of(cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(_public(cert.public_key()))  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def build_certificate(
    *,
    subject_key: PrivateKey | PublicKey,
    subject_cn: str | None,
    subject_attrs: Sequence[x509.NameAttribute[str]] = (),
    issuer_cert: x509.Certificate | None = None,
    issuer_key: PrivateKey | None = None,
    serial: int | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    days: int = 365,
    is_ca: bool = False,
    pathlen: int | None = None,
    basic_constraints: bool = True,
    dns: Iterable[str] = (),
    ips: Iterable[IPLike] = (),
    uris: Iterable[str] = (),
    eku: Sequence[x509.ObjectIdentifier] | None = None,
    key_usage_names: Collection[str] | Literal["auto"] | None = AUTO,
    permitted_dns: Sequence[str] = (),
    excluded_dns: Sequence[str] = (),
    key_identifiers: bool = True,
    extra_extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
) -> x509.Certificate:
    """Sign one X.509 v3 certificate, SHA-256, exactly as described.

    - `subject_key`: the subject's key (private or public). For a self-signed
      certificate (no `issuer_cert`) it must be the private key, which signs.
    - `subject_cn`: the CN, or None for a subject without CN; `subject_attrs`
      are placed before it (C, ST, L, O, OU ...).
    - `issuer_cert` + `issuer_key`: the signing CA; both or neither.
    - validity: `not_before` (default now - CLOCK_SKEW) and `not_after`
      (default not_before + `days`). Nothing is clamped to the issuer's validity.
    - `basic_constraints`: False omits the extension altogether (as
      generate-certs.sh does for platform service certs); otherwise it is
      critical with `is_ca` and `pathlen`.
    - SAN: `dns`, `ips`, `uris` (omitted when all are empty; critical when the
      subject is empty, RFC 5280 4.2.1.6).
    - `eku`: list of OIDs, None for no extension.
    - `key_usage_names`: names from KEY_USAGES, "auto" (see AUTO), None for none.
    - `permitted_dns` / `excluded_dns`: a critical NameConstraints extension
      with those DNS subtrees (omitted when both are empty).
    - `key_identifiers`: SubjectKeyIdentifier and, when issued,
      AuthorityKeyIdentifier (from the issuer's SKI).
    - `extra_extensions`: anything else, as (extension, critical) pairs.
    """
    if (issuer_cert is None) != (issuer_key is None):
        raise InvalidArgument("issuer_cert and issuer_key go together (give both, or neither for self-signed)")
    public_key = _public(subject_key)
    subject = _name(subject_cn, subject_attrs)
    if issuer_cert is None:
        if not isinstance(subject_key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
            raise InvalidArgument("a self-signed certificate needs the subject's private key")
        signing_key: PrivateKey = subject_key
        issuer_name = subject
    else:
        assert issuer_key is not None
        signing_key = issuer_key
        issuer_name = issuer_cert.subject

    start = not_before if not_before is not None else utcnow() - CLOCK_SKEW
    end = not_after if not_after is not None else start + timedelta(days=days)

    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )
    if basic_constraints:
        builder = builder.add_extension(x509.BasicConstraints(ca=is_ca, path_length=pathlen if is_ca else None), critical=True)
    if key_usage_names == AUTO:
        if is_ca:
            names: Collection[str] = ("key_cert_sign", "crl_sign")
        elif isinstance(public_key, rsa.RSAPublicKey):
            names = ("digital_signature", "key_encipherment")
        else:
            names = ("digital_signature",)
        builder = builder.add_extension(key_usage(names), critical=True)
    elif key_usage_names is not None:
        builder = builder.add_extension(key_usage(key_usage_names), critical=True)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)

    general_names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    general_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    general_names += [x509.UniformResourceIdentifier(u) for u in uris]
    if general_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(general_names), critical=len(subject) == 0)

    if permitted_dns or excluded_dns:
        builder = builder.add_extension(
            x509.NameConstraints(
                permitted_subtrees=[x509.DNSName(d) for d in permitted_dns] or None,
                excluded_subtrees=[x509.DNSName(d) for d in excluded_dns] or None,
            ),
            critical=True,
        )
    if key_identifiers:
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        if issuer_cert is not None:
            builder = builder.add_extension(_ski_of(issuer_cert), critical=False)
    for extension, critical in extra_extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signing_key, hashes.SHA256())


# --- serialization ----------------------------------------------------------


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def chain_pem(certs: Iterable[x509.Certificate]) -> bytes:
    """Concatenated PEM, in the given order (leaf first)."""
    return b"".join(cert_pem(c) for c in certs)


def key_pem(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM. Handle with care: this is the secret."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def load_key_pem(data: bytes) -> PrivateKey:
    """Parse an unencrypted PEM private key (EC or RSA); InvalidArgument otherwise."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise InvalidArgument("not an unencrypted PEM private key") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise InvalidArgument("unsupported private key type (expected EC or RSA)")
    return key


def key_matches(cert: x509.Certificate, key: PrivateKey) -> bool:
    """True if key is the private half of cert's public key (poller.identity.certinfo's check)."""
    return certinfo.key_matches(cert, key)


def serial_hex(serial: int | x509.Certificate) -> str:
    """Lowercase hex without separators or 0x (the package's serial format)."""
    number = serial.serial_number if isinstance(serial, x509.Certificate) else serial
    return format(number, "x")


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True if issuer's key signed cert and the names chain."""
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:
        return False
    return True
