"""Server credentials for a service that edge components and admins connect to.

The TLS layer only decides "is this a certificate of our PKI at all": it trusts
the platform root, the platform CA and every tenant CA (so a client that sends
its leaf alone still verifies). Which tenant the caller is, whether its CN
agrees with its issuer, whether it is revoked, and what it may call is decided
per call by TenantServerInterceptor, which can name the reason and audit it;
a handshake failure could do neither.

Those client roots follow the trust store: before each new connection's
handshake grpc asks TrustedClientRoots, which rebuilds them once the store holds
a new snapshot, so a tenant CA added or rotated by a reload needs no restart, and
a removed one is no longer offered. A handshake of an unchanged snapshot costs one
identity comparison.

This server's certificate and key, when given as files, are re-read at every
reload of the store (TrustedClientRoots is its listener) and checked as before
serving (poller.trust.serving): a pair that passes is presented from the next new
connection on, one that does not (expired, not yet valid, clientAuth only, a key
that is not the certificate's, half written) is refused with an error line and the
pair in force stays.

>>> trust = TrustStore("certs", require_client=False)  # doctest: +SKIP
>>> creds = server_credentials(trust, "certs/core.pem", "certs/core-key.pem")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from poller.identity import certinfo
from poller.identity.reasons import InvalidArgument
from poller.logs import get_logger
from poller.trust.platform import PlatformAuthority, load_platform_authority
from poller.trust.serving import serving_problems
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
    """(key, chain) PEM, read from files where given as paths; InvalidArgument naming
    every problem (serving_problems) that keeps them from serving: grpc itself would
    serve a certificate made for clients, or an expired one, without a word, and
    every client's handshake would fail."""
    key, chain = _pem(private_key, "private key"), _pem(certificate_chain, "certificate chain")
    if problems := serving_problems(chain, key, where=_where(certificate_chain)):
        raise InvalidArgument("; ".join(problems))
    return key, chain


def _where(certificate_chain: PemSource) -> str:
    """How lines and errors name the server's certificate: its file, when it has one."""
    return "the server certificate chain" if isinstance(certificate_chain, bytes) else str(certificate_chain)


def _served_names(cert: x509.Certificate) -> list[str]:
    """The names a client may dial this certificate by: its DNS and IP SANs."""
    return [*certinfo.dns_names(cert), *certinfo.ip_names(cert)]


def _issuer(cert: x509.Certificate) -> tuple[str, str | None]:
    """Who signed it, as a client's trust would tell: the issuer's name and key."""
    return cert.issuer.rfc4514_string(), certinfo.issuer_key_id(cert)


class TrustedClientRoots:
    """grpc's certificate configuration fetcher for a server (called before each
    new connection's handshake, on grpc's threads): None (keep the one in force)
    while the trust store's snapshot is the one last served and no new pair of
    this server's is waiting, else a configuration with exactly the snapshot's CAs
    as client roots and the pair to serve.

    The server's own chain and key, when given as paths, are re-read at each
    reload of the store (trust_changed, on the reloading thread, so what a reload
    refuses is said at the reload): a changed pair that can serve
    (serving_problems) waits for the next handshake, logged
    `server_certificate_changed`; one that cannot is refused, logged
    `server_certificate_kept`, and the pair in force stays.

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
        self._waiting: tuple[bytes, bytes] | None = None  # a re-read pair not yet handed to grpc
        self._platform_pem = _platform_pem(trust, platform)  # at start, an error is the caller's
        self._roots = _assemble(self._served, trust, self._platform_pem)
        self._tenants = frozenset(self._served.tenants)
        if not all(isinstance(source, bytes) for source in self._sources):
            # Held weakly by the store; grpc holds the fetcher as long as the server may call it.
            trust.subscribe(self)

    def initial(self) -> grpc.ServerCertificateConfiguration:
        """The configuration the server starts with (the snapshot of now)."""
        return grpc.ssl_server_certificate_configuration([self._pair], root_certificates=self._roots)

    def trust_changed(self, snapshot: TrustSnapshot) -> None:
        """The store reloaded (whatever it changed): re-read the files, and keep
        a pair that passes for the next handshake, or refuse it, logged.

        Under the lock all through: a handshake's __call__ hands the waiting pair to
        grpc under it, so what is compared with the files is the pair grpc will
        present (a rotation back to the pair in force during a handshake is not lost)."""
        with self._lock:
            self._reread()

    def _reread(self) -> None:
        private_key, certificate_chain = self._sources
        try:
            key, chain = _pem(private_key, "private key"), _pem(certificate_chain, "certificate chain")
        except InvalidArgument as exc:
            self._keep([str(exc)])
            return
        if (key, chain) == self._next_pair:  # most reloads: the files as they were
            return
        where = _where(certificate_chain)
        if problems := serving_problems(chain, key, where=where):
            self._keep(problems)
            return
        leaf = certinfo.load_pem_chain(chain, what=where)[0]
        previous = x509.load_pem_x509_certificates(self._next_pair[1])[0]
        # The pair in force put back before a waiting one was served: nothing waits.
        self._waiting = (key, chain) if (key, chain) != self._pair else None
        fields: dict[str, Any] = {
            "certificate": where,
            "subject": leaf.subject.rfc4514_string(),
            "serial": certinfo.serial_hex(leaf),
            "not_after": leaf.not_valid_after_utc.isoformat(),
            "previous_serial": certinfo.serial_hex(previous),
        }
        # Taken all the same (a rotation is the operator's act), but said loudly: agents
        # dial one of the names and trust one issuer, and a handshake failure tells them
        # (and nobody here) only that it failed.
        dropped = sorted(set(_served_names(previous)) - set(_served_names(leaf)))
        issuer, previous_issuer = _issuer(leaf), _issuer(previous)
        if dropped:
            fields["dropped_names"] = dropped
        if issuer != previous_issuer:  # by name or key: a CA re-keyed under its name is another issuer to a client
            fields["issuer"], fields["issuer_key_id"] = issuer
            fields["previous_issuer"], fields["previous_issuer_key_id"] = previous_issuer
        if dropped or issuer != previous_issuer:
            log.warning(
                "server_certificate_changed",
                **fields,
                detail="presented from the next new connection on; an agent that dials a dropped name, "
                "or trusts only the previous issuer, will fail its handshake",
            )
        else:
            log.info(
                "server_certificate_changed",
                **fields,
                detail="presented from the next new connection on; open connections keep theirs",
            )

    def _keep(self, problems: list[str]) -> None:
        private_key, certificate_chain = self._sources
        log.error(
            "server_certificate_kept",
            certificate=None if isinstance(certificate_chain, bytes) else str(certificate_chain),
            key=None if isinstance(private_key, bytes) else str(private_key),
            problems=[problem[:300] for problem in problems],
            serving_serial=self._serial(self._next_pair),
            detail="the certificate in force stays",
        )

    @property
    def _next_pair(self) -> tuple[bytes, bytes]:
        """The pair the next new connection is served with: a waiting one, else the one in force."""
        return self._waiting or self._pair

    @staticmethod
    def _serial(pair: tuple[bytes, bytes]) -> str:
        return certinfo.serial_hex(x509.load_pem_x509_certificates(pair[1])[0])

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        if self._trust.snapshot is self._served and self._waiting is None:  # every handshake: keep it cheap
            return None
        with self._lock:  # one rebuild per snapshot, whichever handshake comes first
            snapshot = self._trust.snapshot
            if snapshot is self._served and self._waiting is None:
                return None
            pair, self._waiting = self._next_pair, None
            roots, tenants = self._roots, self._tenants
            if snapshot is not self._served:
                self._served = snapshot
                try:
                    platform_pem = _platform_pem(self._trust, self._platform)
                except (OSError, ValueError) as exc:
                    # As the trust store does: a broken platform CA file keeps the one in force,
                    # and holds back no tenant CA added or removed beside it.
                    log.error("server_platform_ca_kept", detail=str(exc)[:300])
                    platform_pem = self._platform_pem
                try:
                    roots, tenants = _assemble(snapshot, self._trust, platform_pem), frozenset(snapshot.tenants)
                    self._platform_pem = platform_pem
                except InvalidArgument as exc:
                    # The roots in force stay; the interceptor still proves every call against this snapshot.
                    log.error("server_client_roots_kept", detail=str(exc)[:300])
            if roots == self._roots and pair == self._pair:
                return None
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
    paths are re-read at each reload of the store, and a pair that cannot serve is
    refused (the one in force stays). `platform`: the platform CA to admit admins
    with, for a store without a directory.

    Keep require_client_auth=True. grpcio has no "request but do not require":
    False means the server does not ask for a certificate at all, so no caller
    presents one and TenantServerInterceptor refuses every call
    (UNAUTHENTICATED bad_certificate, audited). With True a caller without a
    certificate fails the TLS handshake (it sees UNAVAILABLE; no call, no audit)."""
    store = trust if isinstance(trust, TrustStore) else TrustStore(trust, require_client=False)
    roots = TrustedClientRoots(store, certificate_chain, private_key, platform)
    return grpc.dynamic_ssl_server_credentials(roots.initial(), roots, require_client_authentication=require_client_auth)
