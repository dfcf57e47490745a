"""The ServiceRadar PKI on disk: root, platform CA, poller, tenant CAs, components.

All paths come from poller.trust.layout.CertsLayout. Keys are ECDSA P-256,
written 0600; certificates 0644; every write is atomic.

Existing CAs are never replaced silently: without `force` an existing, consistent
CA is kept (so re-running is idempotent) and an inconsistent one (key missing,
key not matching, not issued by the current root ...) is an error that names
the file and suggests `--force`.

>>> info = init_pki("certs")  # doctest: +SKIP
>>> create_tenant_ca("certs", "acme-corp").cn  # doctest: +SKIP
'tenant-acme-corp.ca.serviceradar'
>>> issue_component("certs", tenant="acme-corp", component_id="agent-001",
...                 partition_id="partition-1").serial  # doctest: +SKIP
'5f0c...'
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from poller.identity.names import (
    SPIFFE_TRUST_DOMAIN,
    SUFFIX,
    CnForm,
    check_label,
    format_deployment_cn,
    format_deployment_spiffe_id,
    format_edge_cn,
    format_spiffe_id,
    format_tenant_ca_cn,
    is_label,
)
from poller.pki import crl
from poller.pki.build import (
    CLIENT_AUTH,
    CLOCK_SKEW,
    SERVER_AUTH,
    IPLike,
    PrivateKey,
    build_certificate,
    cert_pem,
    chain_pem,
    issued_by,
    key_pem,
    new_key,
    serial_hex,
    utcnow,
)

# The loaders moved to poller.pki.ca (crl needs them, and this module needs crl);
# re-exported so that existing imports keep working.
from poller.pki.ca import Authority as Authority
from poller.pki.ca import StrPath as StrPath
from poller.pki.ca import as_layout as as_layout
from poller.pki.ca import load_authority as load_authority
from poller.pki.ca import load_root as load_root
from poller.pki.ca import load_tenant_authority as load_tenant_authority
from poller.pki.errors import AuthorityExists, NameNotPermitted, PkiError
from poller.pki.files import read_certificate, write_private, write_public
from poller.trust.binding import BindingError, parse_binding
from poller.trust.layout import CertsLayout

ROOT_CN = "ServiceRadar Root CA"
PLATFORM_CA_CN = "platform.ca.serviceradar"
ROOT_DAYS = 3650
CA_DAYS = 3650
POLLER_DAYS = 365

#: Component types an edge (tenant) certificate may be issued for. `poller`
#: is a platform service, not a tenant component.
EDGE_COMPONENT_TYPES: tuple[str, ...] = ("agent", "checker", "gateway", "sync")


def poller_cn(poller_id: str) -> str:
    """`1` -> `poller-1.serviceradar` (the poller's own CN)."""
    label = check_label(f"poller-{poller_id}", "poller name")
    return f"{label}.{SUFFIX}"


def poller_spiffe_id(poller_id: str) -> str:
    """`1` -> `spiffe://serviceradar.local/poller/poller-1`.

    The poller is a platform service, not a tenant component, so it has no
    tenant or partition segment; this 2-segment form is deliberately not one
    that poller.identity.names.parse_spiffe_id accepts as an edge identity.
    """
    label = check_label(f"poller-{poller_id}", "poller name")
    return f"spiffe://{SPIFFE_TRUST_DOMAIN}/poller/{label}"


def poller_chain_path(layout: CertsLayout) -> Path:
    """`<dir>/poller-chain.pem`: the poller's leaf + platform CA."""
    return layout.service_cert("poller-chain")


def tenant_cn_form(certs_dir: StrPath | CertsLayout, slug: str) -> CnForm:
    """The tenant's binding from tenants/<slug>/tenant.json (TENANT when absent); PkiError when it is invalid."""
    path = as_layout(certs_dir).tenant_binding(slug)
    try:
        return parse_binding(path.read_bytes(), where=str(path))
    except FileNotFoundError:
        return CnForm.TENANT
    except BindingError as exc:
        raise PkiError(str(exc)) from None
    except OSError as exc:
        raise PkiError(f"{path}: unreadable ({exc.strerror or exc})") from None


def deployment_ca_cn(slug: str) -> str:
    """The CN `pki tenant --deployment` gives a deployment CA: not a DNS name, so
    it can never read as an edge, platform or tenant-CA name."""
    return f"ServiceRadar Deployment CA {check_label(slug, 'tenant slug')}"


def _cap(end: datetime, issuer: x509.Certificate) -> datetime:
    """A child never outlives its issuer."""
    return min(end, issuer.not_valid_after_utc)


def sign_child(issuer: Authority, key: PrivateKey, *, days: int, **fields: Any) -> x509.Certificate:
    """A certificate for key issued by issuer, valid from now (less clock skew)
    for `days` but never past the issuer; other fields go to build_certificate."""
    start = utcnow() - CLOCK_SKEW
    return build_certificate(
        subject_key=key,
        issuer_cert=issuer.cert,
        issuer_key=issuer.key,
        not_before=start,
        not_after=_cap(start + timedelta(days=days), issuer.cert),
        **fields,
    )


def write_issued(
    cert_path: Path, key_path: Path, chain_path: Path | None, cert: x509.Certificate, key: PrivateKey, issuer: x509.Certificate
) -> None:
    """Key (0600), certificate, and chain (certificate + issuer) when chain_path is given."""
    write_private(key_path, key_pem(key))
    write_public(cert_path, cert_pem(cert))
    if chain_path is not None:
        write_public(chain_path, chain_pem([cert, issuer]))


def _write_if_changed(path: Path, data: bytes) -> bool:
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    write_public(path, data)
    return True


# --- init ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PkiInit:
    """What init_pki left in the directory.

    `written` lists files created or replaced by this call (empty when
    everything was kept); `stale_tenants` lists tenant CAs that the current
    root did not issue (after a forced re-init they need `pki tenant --force`).
    """

    layout: CertsLayout
    root_cert: Path
    platform_ca: Path
    poller_cert: Path
    poller_key: Path
    poller_chain: Path
    poller_cn: str
    root_fingerprint: str
    poller_serial: str
    written: tuple[Path, ...]
    stale_tenants: tuple[str, ...] = ()

    @property
    def created(self) -> bool:
        return bool(self.written)


def _existing(cert_path: Path, key_path: Path) -> bool:
    return cert_path.exists() or key_path.exists()


def init_pki(
    certs_dir: StrPath | CertsLayout,
    *,
    poller_id: str = "1",
    force: bool = False,
    exist_ok: bool = True,
) -> PkiInit:
    """Create the platform part of a certs directory (idempotent).

    Writes `root.pem`/`root-key.pem` (CN "ServiceRadar Root CA"),
    `platform/ca.pem`/`ca-key.pem` (CN platform.ca.serviceradar, pathlen 0) and
    the poller's client certificate `poller.pem` (leaf only), `poller-key.pem`
    and `poller-chain.pem` (leaf + platform CA): CN `poller-<id>.serviceradar`,
    SAN DNS of the CN and URI `spiffe://serviceradar.local/poller/poller-<id>`,
    EKU clientAuth+serverAuth, issued by the platform CA.

    Without `force`, whatever already exists and is consistent is kept and
    missing pieces are added; an existing piece that would have to be replaced
    (e.g. poller.pem for another poller id, a key that does not match) raises
    AuthorityExists/PkiError and nothing is written. `exist_ok=False` refuses
    outright when a root CA is already there. `force=True` regenerates root,
    platform CA and poller certificate (tenant CAs then become stale).

    >>> init_pki("certs", poller_id="1").poller_cn  # doctest: +SKIP
    'poller-1.serviceradar'
    """
    layout = as_layout(certs_dir)
    cn = poller_cn(poller_id)
    chain_path = poller_chain_path(layout)
    hint = "use --force (force=True) to regenerate the root, platform CA and poller certificate"

    if not force and not exist_ok and _existing(layout.root_ca, layout.root_key):
        raise AuthorityExists(f"a root CA already exists in {layout.root} ({layout.root_ca}); {hint}")

    # Plan first: every refusal happens before anything is written.
    root: Authority | None = None
    platform: Authority | None = None
    poller_cert: x509.Certificate | None = None
    if not force:
        if _existing(layout.root_ca, layout.root_key):
            root = load_authority(layout.root_ca, layout.root_key, "root CA")
        if _existing(layout.platform_ca, layout.platform_key):
            if root is None:
                raise AuthorityExists(f"{layout.platform_ca} exists but there is no root CA; refusing to replace it; {hint}")
            platform = load_authority(layout.platform_ca, layout.platform_key, "platform CA")
            if not issued_by(platform.cert, root.cert):
                raise AuthorityExists(f"{layout.platform_ca} was not issued by {layout.root_ca}; {hint}")
        poller_cert_path, poller_key_path = layout.service_cert("poller"), layout.service_key("poller")
        if _existing(poller_cert_path, poller_key_path):
            if platform is None:
                raise AuthorityExists(f"{poller_cert_path} exists but there is no platform CA; refusing to replace it; {hint}")
            pair = load_authority(poller_cert_path, poller_key_path, "poller certificate")
            if not issued_by(pair.cert, platform.cert):
                raise AuthorityExists(f"{poller_cert_path} was not issued by {layout.platform_ca}; {hint}")
            existing_cn = _cn(pair.cert)
            if existing_cn != cn:
                raise AuthorityExists(f"{poller_cert_path} is for {existing_cn!r}, not {cn!r}; {hint}")
            poller_cert = pair.cert

    written: list[Path] = []
    if root is None:
        key = new_key()
        cert = build_certificate(subject_key=key, subject_cn=ROOT_CN, is_ca=True, pathlen=None, days=ROOT_DAYS)
        write_private(layout.root_key, key_pem(key))
        write_public(layout.root_ca, cert_pem(cert))
        written += [layout.root_key, layout.root_ca]
        root = Authority(cert=cert, key=key, cert_path=layout.root_ca, key_path=layout.root_key)
    if platform is None:
        key = new_key()
        cert = sign_child(root, key, days=CA_DAYS, subject_cn=PLATFORM_CA_CN, is_ca=True, pathlen=0)
        write_issued(layout.platform_ca, layout.platform_key, None, cert, key, root.cert)
        written += [layout.platform_key, layout.platform_ca]
        platform = Authority(cert=cert, key=key, cert_path=layout.platform_ca, key_path=layout.platform_key)
    if poller_cert is None:
        key = new_key()
        poller_cert = sign_child(
            platform,
            key,
            days=POLLER_DAYS,
            subject_cn=cn,
            dns=[cn],
            uris=[poller_spiffe_id(poller_id)],
            eku=[CLIENT_AUTH, SERVER_AUTH],
        )
        write_issued(layout.service_cert("poller"), layout.service_key("poller"), None, poller_cert, key, platform.cert)
        written += [layout.service_key("poller"), layout.service_cert("poller")]
    if _write_if_changed(chain_path, chain_pem([poller_cert, platform.cert])):
        written.append(chain_path)

    return PkiInit(
        layout=layout,
        root_cert=layout.root_ca,
        platform_ca=layout.platform_ca,
        poller_cert=layout.service_cert("poller"),
        poller_key=layout.service_key("poller"),
        poller_chain=chain_path,
        poller_cn=cn,
        root_fingerprint=_fingerprint(root.cert),
        poller_serial=serial_hex(poller_cert),
        written=tuple(written),
        stale_tenants=tuple(_stale_tenants(layout, root.cert)),
    )


def _stale_tenants(layout: CertsLayout, root: x509.Certificate) -> list[str]:
    stale: list[str] = []
    if not layout.tenants_dir.is_dir():
        return stale
    for entry in sorted(layout.tenants_dir.iterdir()):
        ca = layout.tenant_ca(entry.name)
        if not ca.is_file():
            continue
        try:
            cert = read_certificate(ca)
        except PkiError:
            stale.append(entry.name)
            continue
        if not issued_by(cert, root):
            stale.append(entry.name)
    return stale


def _cn(cert: x509.Certificate) -> str | None:
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if len(values) == 1 else None


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


# --- tenant CA ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TenantCa:
    """A tenant intermediate CA on disk; `created` is False when it was kept."""

    slug: str
    cn: str
    cert_path: Path
    key_path: Path
    chain_path: Path
    serial: str
    fingerprint: str
    created: bool


def create_tenant_ca(
    certs_dir: StrPath | CertsLayout,
    slug: str,
    *,
    force: bool = False,
    exist_ok: bool = True,
    days: int = CA_DAYS,
    deployment: bool = False,
) -> TenantCa:
    """Create (or keep) the intermediate CA of tenant `slug`, signed by the root.

    Writes `tenants/<slug>/ca.pem`, `ca-key.pem` and `ca-chain.pem` (tenant CA +
    root). CN `tenant-<slug>.ca.serviceradar`; basicConstraints CA pathlen 0 and
    keyUsage keyCertSign+cRLSign, both critical; SKI/AKI; a critical
    NameConstraints extension permitting only the DNS subtree
    `<slug>.serviceradar` (a permitted DNS subtree does not constrain URI SANs,
    so the SPIFFE URI is unaffected).

    An existing tenant CA is kept unless `force=True` (with `exist_ok=False`
    AuthorityExists is raised instead). A forced regeneration resets the
    tenant's revocation state: the old CA's certificates no longer chain anyway.

    `deployment=True` makes a deployment CA instead (no root needed): a
    self-signed root, CN `ServiceRadar Deployment CA <slug>`, pathlen 0, no
    name constraints, with `ca-chain.pem` holding just it, and writes
    `tenants/<slug>/tenant.json` `{"cn_form": "deployment"}`, which binds it
    to the tenant (poller.trust.binding). Components it issues get CNs
    without a tenant label, `<component>.<partition>.serviceradar`.

    >>> create_tenant_ca("certs", "acme-corp").chain_path  # doctest: +SKIP
    PosixPath('certs/tenants/acme-corp/ca-chain.pem')
    """
    layout = as_layout(certs_dir)
    if deployment:
        return _create_deployment_ca(layout, slug, force=force, exist_ok=exist_ok, days=days)
    cn = format_tenant_ca_cn(slug)
    if days < 1:
        raise PkiError(f"days must be at least 1 (got {days})")
    root = load_root(layout)
    cert_path, key_path, chain_path = layout.tenant_ca(slug), layout.tenant_key(slug), layout.tenant_chain(slug)

    if _existing(cert_path, key_path) and not force and tenant_cn_form(layout, slug) is CnForm.DEPLOYMENT:
        raise AuthorityExists(
            f"tenant {slug!r} is bound to a deployment CA ({layout.tenant_binding(slug)}); "
            "use --force to replace it with a tenant intermediate"
        )
    if _existing(cert_path, key_path) and not force:
        if not exist_ok:
            raise AuthorityExists(f"tenant {slug!r} already has a CA ({cert_path}); use --force to regenerate it")
        existing = load_authority(cert_path, key_path, f"tenant {slug!r} CA")
        if not issued_by(existing.cert, root.cert):
            raise AuthorityExists(
                f"{cert_path} was not issued by {layout.root_ca} (was the root regenerated?); "
                "use --force to regenerate the tenant CA"
            )
        _write_if_changed(chain_path, chain_pem([existing.cert, root.cert]))
        return _tenant_ca(layout, slug, existing.cert, created=False)

    had_crl = layout.tenant_crl(slug).exists()
    key = new_key()
    cert = sign_child(root, key, days=days, subject_cn=cn, is_ca=True, pathlen=0, permitted_dns=[f"{slug}.{SUFFIX}"])
    write_issued(cert_path, key_path, chain_path, cert, key, root.cert)
    layout.tenant_binding(slug).unlink(missing_ok=True)  # a forced intermediate ends a deployment binding
    _reset_crl(layout, slug, had_crl)
    return _tenant_ca(layout, slug, cert, created=True)


def _tenant_ca(layout: CertsLayout, slug: str, cert: x509.Certificate, *, created: bool) -> TenantCa:
    return TenantCa(
        slug=slug,
        cn=_cn(cert) or "",
        cert_path=layout.tenant_ca(slug),
        key_path=layout.tenant_key(slug),
        chain_path=layout.tenant_chain(slug),
        serial=serial_hex(cert),
        fingerprint=_fingerprint(cert),
        created=created,
    )


def _reset_crl(layout: CertsLayout, slug: str, had_crl: bool) -> None:
    """A new CA key starts with no revocations (and a fresh CRL if there was one).

    The old crl.pem, signed by the replaced key, is replaced as it is: its
    serials are certificates of the old CA, which no longer verify."""
    crl.reset_revocations(layout, slug)
    if had_crl:
        crl.write_fresh_crl(layout, slug)


def _create_deployment_ca(layout: CertsLayout, slug: str, *, force: bool, exist_ok: bool, days: int) -> TenantCa:
    cn = deployment_ca_cn(slug)
    if days < 1:
        raise PkiError(f"days must be at least 1 (got {days})")
    cert_path, key_path, chain_path = layout.tenant_ca(slug), layout.tenant_key(slug), layout.tenant_chain(slug)
    binding = layout.tenant_binding(slug)
    binding_pem = b'{"cn_form": "deployment"}\n'
    if _existing(cert_path, key_path) and not force:
        if not exist_ok:
            raise AuthorityExists(f"tenant {slug!r} already has a CA ({cert_path}); use --force to regenerate it")
        if tenant_cn_form(layout, slug) is not CnForm.DEPLOYMENT:
            raise AuthorityExists(
                f"tenant {slug!r} has a tenant intermediate ({cert_path}), not a deployment CA; "
                "use --force to replace it with a deployment CA"
            )
        existing = load_authority(cert_path, key_path, f"tenant {slug!r} deployment CA")
        _write_if_changed(chain_path, chain_pem([existing.cert]))
        return _tenant_ca(layout, slug, existing.cert, created=False)
    had_crl = layout.tenant_crl(slug).exists()
    key = new_key()
    cert = build_certificate(subject_key=key, subject_cn=cn, is_ca=True, pathlen=0, days=days)
    write_private(key_path, key_pem(key))
    write_public(cert_path, cert_pem(cert))
    write_public(chain_path, chain_pem([cert]))
    write_public(binding, binding_pem)  # last: the binding names a CA that is already in place
    _reset_crl(layout, slug, had_crl)
    return _tenant_ca(layout, slug, cert, created=True)


# --- components ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A component certificate written by issue_component (serial: lowercase hex)."""

    cert_path: Path
    key_path: Path
    chain_path: Path
    serial: str
    cn: str
    spiffe_id: str
    not_after: datetime


def check_dns_name(name: str) -> str:
    """name if it is a lowercase DNS name (labels of a-z, 0-9 and '-'); PkiError otherwise."""
    if not isinstance(name, str) or len(name) > 253 or not all(is_label(part) for part in name.split(".")):
        raise PkiError(f"DNS name {name!r} is not a lowercase DNS name (labels of a-z, 0-9 and '-')")
    return name


def ip_addresses(ips: Iterable[IPLike]) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The IP SANs, parsed, each once; PkiError for one that is not an address."""
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for ip in ips:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            raise PkiError(f"{ip!r} is not an IP address") from None
        if address not in addresses:
            addresses.append(address)
    return addresses


def _dns_matches(name: str, base: str) -> bool:
    base = base.lower().rstrip(".")
    if not base:
        return True
    if base.startswith("."):
        return name.endswith(base)
    return name == base or name.endswith("." + base)


def _uri_matches(uri: str, base: str) -> bool:
    host = urlsplit(uri).hostname
    if not host:
        return False
    base = base.lower()
    if base.startswith("."):
        return host.endswith(base)
    return host == base


def check_names_permitted(
    ca: x509.Certificate,
    *,
    dns: Iterable[str] = (),
    ips: Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address] = (),
    uris: Iterable[str] = (),
) -> None:
    """Raise NameNotPermitted if a name falls outside ca's NameConstraints (RFC 5280 4.2.1.10).

    Constraints of one name type only apply to names of that type: with only a
    permitted DNS subtree, IP addresses and URIs are unconstrained.
    """
    try:
        constraints = ca.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return
    permitted = list(constraints.permitted_subtrees or [])
    excluded = list(constraints.excluded_subtrees or [])

    def allowed(kind: type[x509.GeneralName], match: Callable[[Any, Any], bool], value: object) -> bool:
        perm = [g.value for g in permitted if isinstance(g, kind)]
        excl = [g.value for g in excluded if isinstance(g, kind)]
        if perm and not any(match(value, base) for base in perm):
            return False
        return not any(match(value, base) for base in excl)

    def ip_in(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, net: object) -> bool:
        return isinstance(net, (ipaddress.IPv4Network, ipaddress.IPv6Network)) and ip.version == net.version and ip in net

    bad = [f"DNS:{d}" for d in dns if not allowed(x509.DNSName, _dns_matches, d)]
    bad += [f"IP:{ip}" for ip in ips if not allowed(x509.IPAddress, ip_in, ip)]
    bad += [f"URI:{u}" for u in uris if not allowed(x509.UniformResourceIdentifier, _uri_matches, u)]
    if bad:
        subtrees = ", ".join(f"{type(g).__name__}:{g.value}" for g in permitted) or "none"
        raise NameNotPermitted(
            f"{', '.join(bad)} not permitted by the name constraints of {_cn(ca) or 'the issuing CA'} "
            f"(permitted subtrees: {subtrees})"
        )


def edge_names(
    certs_dir: StrPath | CertsLayout, tenant: str, component_id: str, partition_id: str, component_type: str
) -> tuple[str, str]:
    """(CN, SPIFFE ID) of a component of `tenant`, in the form of the tenant's binding (validated)."""
    cn = format_edge_cn(component_id, partition_id, tenant)  # InvalidName before any file is read
    if tenant_cn_form(certs_dir, tenant) is CnForm.DEPLOYMENT:
        cn = format_deployment_cn(component_id, partition_id)
        return cn, format_deployment_spiffe_id(component_type, partition_id, component_id)
    return cn, format_spiffe_id(component_type, tenant, partition_id, component_id)


def issue_component(
    certs_dir: StrPath | CertsLayout,
    *,
    tenant: str,
    component_id: str,
    partition_id: str,
    component_type: str = "agent",
    days: int = 365,
    dns: Sequence[str] = (),
    ips: Sequence[IPLike] = (),
) -> IssuedCertificate:
    """Issue an edge component certificate from the tenant's CA and write it.

    CN `<component_id>.<partition_id>.<tenant>.serviceradar`; SAN DNS:<cn>, the
    extra `dns` names and `ips`, and URI
    `spiffe://serviceradar.local/<type>/<tenant>/<partition>/<component>`; EKU
    serverAuth+clientAuth; basicConstraints CA:FALSE and keyUsage
    digitalSignature, critical; SKI/AKI. Files:
    `tenants/<tenant>/components/<component>-<partition>.pem` (leaf), `-key.pem`,
    `-chain.pem` (leaf + tenant CA). Re-issuing replaces them (renewal).

    For a tenant bound to a deployment CA (tenant.json `cn_form` "deployment")
    the CN is `<component_id>.<partition_id>.serviceradar` and the URI
    `spiffe://serviceradar.local/<type>/<partition>/<component>`, as
    ServiceRadar's later generate-certs.sh writes them.

    Refused before anything is written: an unknown component type, a name that
    is not a label, extra DNS names outside the tenant CA's name constraints
    (`localhost` is not under `acme-corp.serviceradar`), a missing tenant CA.
    Validity is capped at the tenant CA's notAfter.

    >>> issue_component("certs", tenant="acme-corp", component_id="agent-001",
    ...                 partition_id="partition-1", dns=["a.acme-corp.serviceradar"])  # doctest: +SKIP
    IssuedCertificate(cert_path=PosixPath('certs/tenants/acme-corp/components/agent-001-partition-1.pem'), ...)
    """
    layout = as_layout(certs_dir)
    if component_type not in EDGE_COMPONENT_TYPES:
        raise PkiError(f"component type {component_type!r} is not one of {', '.join(EDGE_COMPONENT_TYPES)}")
    cn, spiffe = edge_names(layout, tenant, component_id, partition_id, component_type)
    if days < 1:
        raise PkiError(f"days must be at least 1 (got {days})")
    dns_names = [cn]
    for name in dns:
        if check_dns_name(name) not in dns_names:
            dns_names.append(name)
    addresses = ip_addresses(ips)

    ca = load_tenant_authority(layout, tenant)
    check_names_permitted(ca.cert, dns=dns_names, ips=addresses, uris=[spiffe])

    key = new_key()
    cert = sign_child(
        ca, key, days=days, subject_cn=cn, dns=dns_names, ips=addresses, uris=[spiffe], eku=[SERVER_AUTH, CLIENT_AUTH]
    )
    cert_path, key_path, chain_path = layout.component_files(tenant, component_id, partition_id)
    write_issued(cert_path, key_path, chain_path, cert, key, ca.cert)
    return IssuedCertificate(
        cert_path=cert_path,
        key_path=key_path,
        chain_path=chain_path,
        serial=serial_hex(cert),
        cn=cn,
        spiffe_id=spiffe,
        not_after=cert.not_valid_after_utc,
    )
