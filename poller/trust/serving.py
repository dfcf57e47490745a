"""Check a server's own certificate and key before serving with them.

grpc reports a key that does not match its certificate as a failure to bind,
and serves a certificate made for clients without a word: agents then fail
their handshakes and nobody is told why. These checks say it first, naming
the file.

>>> serving_problems(chain_pem, key_pem, where="gateway.cert")  # doctest: +SKIP
['gateway.cert: certificate CN=agent-001... is not for serving: its extended key usage has no serverAuth']
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from poller.identity import certinfo
from poller.identity.certinfo import CertificateError

__all__ = ["CLOCK_SKEW", "serving_problems"]

#: A certificate issued moments ago by a host whose clock runs ahead is not refused:
#: only one valid from further in the future than this.
CLOCK_SKEW = timedelta(minutes=5)

# What grpc's TLS (BoringSSL, grpcio 1.85) serves with and its clients complete a
# handshake against (measured: docs/design.md). secp256k1, brainpool, Ed448 keys fail
# to load ("Failed to bind"); P-521 and Ed25519 load, then no grpc client completes
# the handshake. cryptography reads them all, so without this they pass every check.
_SERVABLE_CURVES = frozenset({"secp256r1", "secp384r1"})

_SERVING = frozenset({ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE})


def serving_problems(chain_pem: bytes, key_pem: bytes, *, where: str, now: datetime | None = None) -> list[str]:
    """What keeps `chain_pem` (leaf first) and `key_pem` from serving TLS: unreadable,
    a key that is not the leaf's, no serverAuth in the leaf's extended key usage, or
    outside its validity, a key type grpc's TLS cannot serve with. Empty when they can serve. `where` names the certificate."""
    try:
        leaf = certinfo.load_pem_chain(chain_pem, what=where)[0]
    except CertificateError as exc:
        return [str(exc)]
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        # A key parser's message never holds key bytes, but say only the kind of failure.
        return [f"the key of {where} is not an unencrypted PEM private key"]
    name = leaf.subject.rfc4514_string()
    problems: list[str] = []
    if not isinstance(key, rsa.RSAPrivateKey) and not (
        isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in _SERVABLE_CURVES
    ):
        kind = f"EC {key.curve.name}" if isinstance(key, ec.EllipticCurvePrivateKey) else type(key).__name__.removeprefix("_")
        problems.append(f"{where}: grpc's TLS cannot serve with its key ({kind}); use RSA, EC P-256 or P-384")
    if not certinfo.key_matches(leaf, key):
        problems.append(f"{where}: the key does not match certificate {name} (the first in the file)")
    try:
        usages = set(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        usages = set(_SERVING)  # no extended key usage: any purpose
    if not usages & _SERVING:
        problems.append(f"{where}: certificate {name} is not for serving: its extended key usage has no serverAuth")
    moment = now or datetime.now(UTC)
    if moment > leaf.not_valid_after_utc:
        problems.append(f"{where}: certificate {name} expired at {leaf.not_valid_after_utc.isoformat()}")
    elif moment + CLOCK_SKEW < leaf.not_valid_before_utc:
        problems.append(f"{where}: certificate {name} is not valid before {leaf.not_valid_before_utc.isoformat()}")
    return problems
