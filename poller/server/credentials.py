"""Server credentials for a service that edge components and admins connect to.

The TLS layer only decides "is this a certificate of our PKI at all": it trusts
the platform root, the platform CA and every tenant CA (so a client that sends
its leaf alone still verifies). Which tenant the caller is, whether its CN
agrees with its issuer, whether it is revoked, and what it may call is decided
per call by TenantServerInterceptor, which can name the reason and audit it;
a handshake failure could do neither.

Those client roots follow the trust store: before each new connection's
handshake grpc asks TrustedClientRoots, which rebuilds them (and re-reads this
server's certificate and key, when given as files) once the store holds a new
snapshot, so a tenant CA added or rotated by a reload needs no restart, and a
removed one is no longer offered. A handshake of an unchanged snapshot costs one
identity comparison.

>>> trust = TrustStore("certs", require_client=False)  # doctest: +SKIP
>>> creds = server_credentials(trust, "certs/core.pem", "certs/core-key.pem")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from poller.identity import certinfo
from poller.identity.reasons import InvalidArgument
from poller.logs import get_logger
from poller.trust.platform import PlatformAuthority, load_platform_authority
from poller.trust.snapshot import TrustSnapshot
from poller.trust.store import TrustStore

PemSource = bytes | str | os.PathLike[str]

log = get_logger("poller.server")


def _pem(source: PemSource, what: str) -> bytes:
    if isinstance(source, bytes):
        return source
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"{what} {source}: {exc.strerror or 'unreadable'}") from None


def client_roots_pem(trust: TrustStore, platform: PlatformAuthority | None = None) -> bytes:
    """The CA certificates a client chain may end at: root, platform CA, tenant CAs
    of the store's current snapshot.

    The platform CA is `platform` when given, else the certs directory's
    platform/ca.pem (a store fed from PEM data has no directory).
    """
    return _roots_of(trust.snapshot, trust, platform)


def _roots_of(snapshot: TrustSnapshot, trust: TrustStore, platform: PlatformAuthority | None) -> bytes:
    return _assemble(snapshot, trust, _platform_pem(trust, platform))


def _platform_pem(trust: TrustStore, platform: PlatformAuthority | None) -> bytes | None:
    """The platform CA's PEM: `platform`'s, else the certs directory's platform/ca.pem
    (None when there is none; CertificateError or OSError when it cannot be read)."""
    layout = getattr(trust, "layout", None)
    if platform is None and layout is not None:
        platform = load_platform_authority(layout)
    return platform.pem if platform is not None else None


def _assemble(snapshot: TrustSnapshot, trust: TrustStore, platform_pem: bytes | None) -> bytes:
    parts: list[bytes] = []
    if snapshot.root is not None:
        parts.append(snapshot.root.public_bytes(serialization.Encoding.PEM))
    if platform_pem is not None:
        parts.append(platform_pem)
    parts.extend(authority.pem for authority in snapshot.tenants.values())
    if not parts:
        raise InvalidArgument(f"{trust.certs_dir}: no root, platform or tenant CA to verify clients with")
    return b"".join(parts)


def _key_pair(private_key: PemSource, certificate_chain: PemSource) -> tuple[bytes, bytes]:
    """(key, chain) PEM, read from files where given as paths; InvalidArgument if
    unreadable or if the key is not the chain's first certificate's."""
    key, chain = _pem(private_key, "private key"), _pem(certificate_chain, "certificate chain")
    try:
        leaf = x509.load_pem_x509_certificates(chain)[0]
        loaded = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        raise InvalidArgument("the server certificate chain or key is not PEM (an unencrypted key)") from None
    if not certinfo.key_matches(leaf, loaded):
        raise InvalidArgument("the server key does not match its certificate")
    return key, chain


class TrustedClientRoots:
    """grpc's certificate configuration fetcher for a server (called before each
    new connection's handshake, on grpc's threads): None (keep the one in force)
    while the trust store's snapshot is the one last served, else a configuration
    with exactly the new snapshot's CAs as client roots. The server's own chain
    and key, when given as paths, are re-read then too (a rotated certificate);
    unreadable or mismatched files keep the pair in force, logged.

    Nothing here admits a caller: the interceptor proves every call."""

    def __init__(
        self,
        trust: TrustStore,
        certificate_chain: PemSource,
        private_key: PemSource,
        platform: PlatformAuthority | None = None,
    ) -> None:
        self._trust = trust
        self._platform = platform
        self._sources = (private_key, certificate_chain)
        self._lock = threading.Lock()
        self._served = trust.snapshot
        self._pair = _key_pair(private_key, certificate_chain)
        self._platform_pem = _platform_pem(trust, platform)  # at start, an error is the caller's
        self._roots = _assemble(self._served, trust, self._platform_pem)
        self._tenants = frozenset(self._served.tenants)

    def initial(self) -> grpc.ServerCertificateConfiguration:
        """The configuration the server starts with (the snapshot of now)."""
        return grpc.ssl_server_certificate_configuration([self._pair], root_certificates=self._roots)

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        if self._trust.snapshot is self._served:  # every handshake: keep it cheap
            return None
        with self._lock:  # one rebuild per snapshot, whichever handshake comes first
            snapshot = self._trust.snapshot
            if snapshot is self._served:
                return None
            self._served = snapshot
            try:
                platform_pem = _platform_pem(self._trust, self._platform)
            except (OSError, ValueError) as exc:
                # As the trust store does: a broken platform CA file keeps the one in force,
                # and holds back no tenant CA added or removed beside it.
                log.error("server_platform_ca_kept", detail=str(exc)[:300])
                platform_pem = self._platform_pem
            try:
                roots = _assemble(snapshot, self._trust, platform_pem)
            except InvalidArgument as exc:
                # The roots in force stay; the interceptor still proves every call against this snapshot.
                log.error("server_client_roots_kept", detail=str(exc)[:300])
                return None
            self._platform_pem = platform_pem
            pair = self._pair
            if not all(isinstance(source, bytes) for source in self._sources):
                try:
                    pair = _key_pair(*self._sources)
                except InvalidArgument as exc:
                    log.error("server_certificate_kept", detail=str(exc)[:300])
            if roots == self._roots and pair == self._pair:
                return None
            tenants = frozenset(snapshot.tenants)
            log.info(
                "server_client_roots_updated",
                added=sorted(tenants - self._tenants),
                removed=sorted(self._tenants - tenants),
                tenants=len(tenants),
                certificate_changed=pair != self._pair,
            )
            self._roots, self._pair, self._tenants = roots, pair, tenants
            return grpc.ssl_server_certificate_configuration([pair], root_certificates=roots)


def server_credentials(
    trust: TrustStore | str | os.PathLike[str],
    certificate_chain: PemSource,
    private_key: PemSource,
    *,
    require_client_auth: bool = True,
    platform: PlatformAuthority | None = None,
) -> grpc.ServerCredentials:
    """mTLS server credentials: this server's chain and key (PEM bytes or file paths),
    clients verified against the trust source's CAs (a TrustStore or a certs directory),
    those of its snapshot in force at each new connection (TrustedClientRoots): a
    tenant CA added by a reload is trusted without a restart. Chain and key given as
    paths are re-read at each new snapshot. `platform`: the platform CA to admit
    admins with, for a store without a directory.

    Keep require_client_auth=True. grpcio has no "request but do not require":
    False means the server does not ask for a certificate at all, so no caller
    presents one and TenantServerInterceptor refuses every call
    (UNAUTHENTICATED bad_certificate, audited). With True a caller without a
    certificate fails the TLS handshake (it sees UNAVAILABLE; no call, no audit)."""
    store = trust if isinstance(trust, TrustStore) else TrustStore(trust, require_client=False)
    roots = TrustedClientRoots(store, certificate_chain, private_key, platform)
    return grpc.dynamic_ssl_server_credentials(roots.initial(), roots, require_client_authentication=require_client_auth)
