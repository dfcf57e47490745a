"""The TLS material of a NATS layout, issued from the platform PKI (for `nats-config`).

Under OUTDIR/tls/:

    ca.pem                     the platform root: clients verify the servers with it
    clients-ca.pem             the issuing CA (platform CA, else the root): the servers
                               verify clients and routes against it (mTLS, `verify: true`)
    <server>.pem, -key.pem     one server certificate per server, for its host (IP or DNS
                               SAN), serverAuth + clientAuth (routes are mutual TLS)
    <user>.pem, -key.pem       one client certificate per NATS user (poller, tenant-<slug>)

Certificates are chains (leaf + issuer when the issuer is not the root), keys
0600. An existing certificate is kept when the current issuer issued it, it
is not about to expire and (servers) it names the same hosts, so re-running
nats-config does not force every client to be redeployed.

>>> tls = issue_tls(Path("certs"), Path("nats"), servers={"nats-1": ["127.0.0.1"]}, users=["poller"])  # doctest: +SKIP
>>> tls.server_cert("nats-1")                                                                       # doctest: +SKIP
PosixPath('nats/tls/nats-1.pem')
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cryptography import x509

from poller.pki.authority import Authority, load_authority, load_root, sign_child
from poller.pki.build import CLIENT_AUTH, SERVER_AUTH, cert_pem, chain_pem, issued_by, key_pem, new_key, utcnow
from poller.pki.errors import PkiError
from poller.pki.files import read_certificates, write_private, write_public
from poller.trust.layout import CertsLayout

__all__ = ["NatsTls", "issue_tls"]

DAYS = 365
_RENEW_BEFORE = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class NatsTls:
    """Where the TLS files of a layout are."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def clients_ca(self) -> Path:
        return self.directory / "clients-ca.pem"

    def server_cert(self, name: str) -> Path:
        return self.directory / f"{name}.pem"

    def server_key(self, name: str) -> Path:
        return self.directory / f"{name}-key.pem"

    def user_cert(self, user: str) -> Path:
        return self.directory / f"{user}.pem"

    def user_key(self, user: str) -> Path:
        return self.directory / f"{user}-key.pem"


def _issuer(certs: CertsLayout) -> Authority:
    if certs.platform_ca.exists() and certs.platform_key.exists():
        return load_authority(certs.platform_ca, certs.platform_key, "platform CA")
    return load_root(certs)


def _names(hosts: Iterable[str]) -> tuple[list[str], list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    dns: list[str] = []
    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for host in hosts:
        try:
            ips.append(ipaddress.ip_address(host.strip("[]")))
        except ValueError:
            dns.append(host)
    if any(ip.is_loopback for ip in ips) and "localhost" not in dns:
        dns.append("localhost")
    return dns, ips


def _kept(cert_path: Path, key_path: Path, issuer: Authority, hosts: Iterable[str] | None) -> bool:
    if not (cert_path.is_file() and key_path.is_file()):
        return False
    try:
        cert = read_certificates(cert_path)[0]
    except PkiError:
        return False
    if not issued_by(cert, issuer.cert) or cert.not_valid_after_utc - _RENEW_BEFORE < utcnow():
        return False
    if hosts is None:
        return True
    dns, ips = _names(hosts)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return set(san.get_values_for_type(x509.DNSName)) == set(dns) and set(san.get_values_for_type(x509.IPAddress)) == set(ips)


def _write(cert_path: Path, key_path: Path, issuer: Authority, root: x509.Certificate, **fields: object) -> None:
    key = new_key()
    cert = sign_child(issuer, key, days=DAYS, **fields)
    chain = [cert] if issuer.cert == root else [cert, issuer.cert]
    write_private(key_path, key_pem(key))
    write_public(cert_path, chain_pem(chain))


def issue_tls(certs_dir: Path, out_dir: Path, *, servers: Mapping[str, Iterable[str]], users: Iterable[str]) -> NatsTls:
    """Issue (or keep) the certificates of `servers` (name -> its hosts) and `users`; PkiError
    when the certs directory has neither a platform CA nor a root with its key."""
    certs = CertsLayout(Path(certs_dir))
    tls = NatsTls(Path(out_dir) / "tls")
    issuer = _issuer(certs)
    root = load_root(certs).cert
    write_public(tls.ca, cert_pem(root))
    write_public(tls.clients_ca, cert_pem(issuer.cert))
    for name, hosts in servers.items():
        hosts = list(hosts)
        cert, key = tls.server_cert(name), tls.server_key(name)
        if not _kept(cert, key, issuer, hosts):
            dns, ips = _names(hosts)
            _write(cert, key, issuer, root, subject_cn=name, dns=dns, ips=ips, eku=[SERVER_AUTH, CLIENT_AUTH])
    for user in users:
        cert, key = tls.user_cert(user), tls.user_key(user)
        if not _kept(cert, key, issuer, None):
            _write(cert, key, issuer, root, subject_cn=f"nats-{user}", eku=[CLIENT_AUTH])
    return tls
