"""The gateway's serving certificate: what push agents check when they dial in.

ServiceRadar's push agent verifies the gateway's certificate against its
`ca_file` (the platform root, `root.pem` in every onboarding package) for its
`server_name`. So the gateway's certificate is a platform certificate, issued
by the platform CA (the default) or by the root itself, never by a tenant CA
(a tenant CA's name constraints permit only `<slug>.serviceradar`, and no
tenant owns the gateway). Its only purpose is serverAuth: it cannot pass as a
client anywhere the poller proves clients.

`<certs>/gateway.pem` holds what the gateway presents: the leaf, then the
platform CA when that issued it (an agent that trusts only the root needs the
intermediate); `gateway-key.pem` its key (0600). These are the defaults of
the daemon's `gateway.cert` / `gateway.key`.

>>> issued = issue_gateway_cert("certs", dns=["gw.example.net"], ips=["10.0.0.5"])  # doctest: +SKIP
>>> issued.sans                                                                    # doctest: +SKIP
('DNS:gw.example.net', 'IP:10.0.0.5')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from cryptography import x509

from poller.identity.names import check_label
from poller.pki.authority import (
    Authority,
    StrPath,
    as_layout,
    check_dns_name,
    ip_addresses,
    load_authority,
    load_root,
    sign_child,
)
from poller.pki.build import SERVER_AUTH, IPLike, chain_pem, key_pem, new_key, serial_hex
from poller.pki.errors import PkiError
from poller.pki.files import read_certificates, write_private, write_public
from poller.trust.layout import CertsLayout

__all__ = ["GATEWAY_ISSUERS", "IssuedGateway", "gateway_sans", "issue_gateway_cert"]

#: Who may issue the gateway's certificate.
GATEWAY_ISSUERS: tuple[str, ...] = ("platform", "root")
GatewayIssuer = Literal["platform", "root"]
DEFAULT_NAME = "gateway"


@dataclass(frozen=True, slots=True)
class IssuedGateway:
    """A serving certificate written by issue_gateway_cert."""

    cert_path: Path
    key_path: Path
    cn: str
    sans: tuple[str, ...]
    issuer: str
    serial: str
    not_after: datetime


def issue_gateway_cert(
    certs_dir: StrPath | CertsLayout,
    *,
    dns: Sequence[str] = (),
    ips: Sequence[IPLike] = (),
    issuer: GatewayIssuer = "platform",
    days: int = 365,
    name: str = DEFAULT_NAME,
) -> IssuedGateway:
    """Issue the gateway's serving certificate for the given SANs and write `<name>.pem` / `<name>-key.pem`.

    At least one SAN is required (the agents' `server_name` must be one of
    them); the CN is the first of them. EKU serverAuth only, CA:FALSE. Validity
    is capped at the issuer's. Re-issuing replaces the files (renewal).
    Refused before anything is written: no SAN, a malformed name, an unknown
    issuer, a missing or inconsistent issuing CA.

    >>> issue_gateway_cert("certs", dns=["gw.example.net"]).cert_path  # doctest: +SKIP
    PosixPath('certs/gateway.pem')
    """
    layout = as_layout(certs_dir)
    check_label(name, "certificate name")
    if issuer not in GATEWAY_ISSUERS:
        raise PkiError(f"issuer {issuer!r} is not one of {', '.join(GATEWAY_ISSUERS)}")
    if days < 1:
        raise PkiError(f"days must be at least 1 (got {days})")
    dns_names = list(dict.fromkeys(check_dns_name(d.lower().rstrip(".")) for d in dns))
    addresses = ip_addresses(ips)
    if not dns_names and not addresses:
        raise PkiError("the gateway's certificate needs at least one SAN (--dns NAME or --ip ADDRESS): agents check it")
    ca = _issuer(layout, issuer)
    cn = dns_names[0] if dns_names else str(addresses[0])
    key = new_key()
    cert = sign_child(ca, key, days=days, subject_cn=cn, dns=dns_names, ips=addresses, eku=[SERVER_AUTH])
    served = [cert] if issuer == "root" else [cert, ca.cert]
    cert_path, key_path = layout.service_cert(name), layout.service_key(name)
    write_private(key_path, key_pem(key))
    write_public(cert_path, chain_pem(served))
    return IssuedGateway(
        cert_path=cert_path,
        key_path=key_path,
        cn=cn,
        sans=tuple(_sans(cert)),
        issuer=issuer,
        serial=serial_hex(cert),
        not_after=cert.not_valid_after_utc,
    )


def gateway_sans(path: Path) -> tuple[str, ...]:
    """The SANs of the serving certificate at path ("DNS:..." / "IP:..."), the names agents may check.

    >>> gateway_sans(Path("certs/gateway.pem"))  # doctest: +SKIP
    ('DNS:gw.example.net',)
    """
    return tuple(_sans(read_certificates(path, what="gateway certificate")[0]))


def _issuer(layout: CertsLayout, issuer: str) -> Authority:
    if issuer == "root":
        return load_root(layout)
    if not layout.platform_ca.exists() and not layout.platform_key.exists():
        raise PkiError(
            f"no platform CA in {layout.root} (create it with `serviceradar-poller pki init {layout.root}`, "
            "or issue from the root with --issuer root)"
        )
    return load_authority(layout.platform_ca, layout.platform_key, "platform CA")


def _sans(cert: x509.Certificate) -> list[str]:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [f"DNS:{n}" for n in names.get_values_for_type(x509.DNSName)] + [
        f"IP:{ip}" for ip in names.get_values_for_type(x509.IPAddress)
    ]
