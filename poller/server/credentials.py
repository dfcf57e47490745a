"""Server credentials for a service that edge components and admins connect to.

The TLS layer only decides "is this a certificate of our PKI at all": it trusts
the platform root, the platform CA and every tenant CA (so a client that sends
its leaf alone still verifies). Which tenant the caller is, whether its CN
agrees with its issuer, whether it is revoked, and what it may call is decided
per call by TenantServerInterceptor, which can name the reason and audit it;
a handshake failure could do neither.

>>> trust = TrustStore("certs", require_client=False)  # doctest: +SKIP
>>> creds = server_credentials(trust, "certs/core.pem", "certs/core-key.pem")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc
from cryptography.hazmat.primitives import serialization

from poller.identity.reasons import InvalidArgument
from poller.trust.platform import PlatformAuthority, load_platform_authority
from poller.trust.store import TrustStore

PemSource = bytes | str | os.PathLike[str]


def _pem(source: PemSource, what: str) -> bytes:
    if isinstance(source, bytes):
        return source
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"{what} {source}: {exc.strerror or 'unreadable'}") from None


def client_roots_pem(trust: TrustStore, platform: PlatformAuthority | None = None) -> bytes:
    """The CA certificates a client chain may end at: root, platform CA, tenant CAs.

    The platform CA is `platform` when given, else the certs directory's
    platform/ca.pem (a store fed from PEM data has no directory).
    """
    snapshot = trust.snapshot
    parts: list[bytes] = []
    if snapshot.root is not None:
        parts.append(snapshot.root.public_bytes(serialization.Encoding.PEM))
    layout = getattr(trust, "layout", None)
    if platform is None and layout is not None:
        platform = load_platform_authority(layout)
    if platform is not None:
        parts.append(platform.pem)
    parts.extend(authority.pem for authority in snapshot.tenants.values())
    if not parts:
        raise InvalidArgument(f"{trust.certs_dir}: no root, platform or tenant CA to verify clients with")
    return b"".join(parts)


def server_credentials(
    trust: TrustStore | str | os.PathLike[str],
    certificate_chain: PemSource,
    private_key: PemSource,
    *,
    require_client_auth: bool = True,
    platform: PlatformAuthority | None = None,
) -> grpc.ServerCredentials:
    """mTLS server credentials: this server's chain and key (PEM bytes or file paths),
    clients verified against the trust source's CAs (a TrustStore or a certs directory).
    `platform`: the platform CA to admit admins with, for a store without a directory.

    Keep require_client_auth=True. grpcio has no "request but do not require":
    False means the server does not ask for a certificate at all, so no caller
    presents one and TenantServerInterceptor refuses every call
    (UNAUTHENTICATED bad_certificate, audited). With True a caller without a
    certificate fails the TLS handshake (it sees UNAVAILABLE; no call, no audit)."""
    store = trust if isinstance(trust, TrustStore) else TrustStore(trust, require_client=False)
    return grpc.ssl_server_credentials(
        [(_pem(private_key, "private key"), _pem(certificate_chain, "certificate chain"))],
        root_certificates=client_roots_pem(store, platform),
        require_client_auth=require_client_auth,
    )
