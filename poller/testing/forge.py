"""Adversarial certificates for tests: a real certs directory plus a forge.

`ForgePki.create(dir)` makes a real certs directory with poller.pki (root,
platform CA, poller certificate, one CA per tenant) and keeps the CAs in
memory, so tests can mint any certificate they need: expired, not yet valid,
issued by the wrong tenant, signed by the root or by nobody, with a lying CN
or SPIFFE ID, a CA flag, an RSA key, a SAN outside the issuer's name
constraints (the builder does not enforce them). Forged certificates stay in
memory unless `write=True`.

`serviceradar_style_dir(path)` writes a directory the way ServiceRadar's own
generate-certs.sh does (RSA keys, platform certificates signed directly by the
root, tenant CAs without name constraints, 3-segment SPIFFE IDs).

>>> forge = ForgePki.create(tmp_path)                                   # doctest: +SKIP
>>> good = forge.agent("acme-corp")                                      # doctest: +SKIP
>>> impostor = forge.agent("acme-corp", issuer_tenant="xyz-inc")         # doctest: +SKIP
>>> expired = forge.agent("acme-corp", not_after=datetime(2020, 1, 1, tzinfo=timezone.utc))  # doctest: +SKIP
"""

from __future__ import annotations

import enum
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.x509.oid import NameOID

from poller.identity.names import format_edge_cn, format_spiffe_id, format_tenant_ca_cn
from poller.identity.reasons import InvalidArgument
from poller.pki.authority import (
    Authority,
    as_layout,
    create_tenant_ca,
    init_pki,
    load_authority,
    load_root,
    load_tenant_authority,
    poller_chain_path,
)
from poller.pki.build import (
    AUTO,
    CLIENT_AUTH,
    CLOCK_SKEW,
    SERVER_AUTH,
    IPLike,
    KeyKind,
    PrivateKey,
    build_certificate,
    cert_pem,
    chain_pem,
    key_pem,
    key_usage,
    new_key,
    serial_hex,
    utcnow,
)
from poller.pki.crl import Revocation, revoke
from poller.pki.files import write_private, write_public
from poller.trust.layout import CertsLayout

__all__ = ["DEFAULT", "ForgePki", "ForgedCert", "ServiceRadarStyleDir", "serviceradar_style_dir"]


class _Default(enum.Enum):
    TOKEN = "DEFAULT"

    def __repr__(self) -> str:
        return "DEFAULT"


#: "Use the natural value" for arguments where None means "leave it out".
DEFAULT = _Default.TOKEN

SignedBy = Literal["tenant", "root", "self", "platform"]


@dataclass(frozen=True)
class ForgedCert:
    """A forged (or honest) certificate and its key, in memory.

    `cert_pem` and `leaf_pem` are both the leaf alone; `chain_pem` is the leaf
    followed by the issuing intermediate(s) when there are any (nothing after
    the leaf for root-signed and self-signed certificates). The paths are set
    only when the certificate was written (`write=True`).
    """

    cert: x509.Certificate
    key: PrivateKey = field(repr=False)
    cert_pem: bytes = field(repr=False)
    leaf_pem: bytes = field(repr=False)
    chain_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)
    serial_hex: str
    cn: str | None
    spiffe: str | None
    issuer: str
    intermediates: tuple[x509.Certificate, ...] = field(default=(), repr=False)
    cert_path: Path | None = None
    key_path: Path | None = None
    chain_path: Path | None = None


@dataclass
class ForgePki:
    """A real certs directory whose CAs stay in memory for forging.

    Make it with ForgePki.create(directory, tenants=...).
    """

    layout: CertsLayout
    root: Authority = field(repr=False)
    platform: Authority = field(repr=False)
    tenants: dict[str, Authority] = field(repr=False)
    poller_id: str = "1"

    @classmethod
    def create(
        cls,
        directory: str | os.PathLike[str],
        tenants: Sequence[str] = ("acme-corp", "xyz-inc"),
        *,
        poller_id: str = "1",
    ) -> ForgePki:
        """init_pki + create_tenant_ca for each tenant, then load every CA."""
        layout = as_layout(directory)
        init_pki(layout, poller_id=poller_id)
        for slug in tenants:
            create_tenant_ca(layout, slug)
        return cls(
            layout=layout,
            root=load_root(layout),
            platform=load_authority(layout.platform_ca, layout.platform_key, "platform CA"),
            tenants={slug: load_tenant_authority(layout, slug) for slug in tenants},
            poller_id=poller_id,
        )

    # --- what a test hands to the code under test ------------------------------

    @property
    def directory(self) -> Path:
        return self.layout.root

    @property
    def root_pem(self) -> bytes:
        return cert_pem(self.root.cert)

    @property
    def platform_ca_pem(self) -> bytes:
        return cert_pem(self.platform.cert)

    def tenant_ca(self, slug: str) -> x509.Certificate:
        return self._tenant(slug).cert

    def tenant_ca_pem(self, slug: str) -> bytes:
        return cert_pem(self._tenant(slug).cert)

    def client_identity(self) -> tuple[bytes, bytes]:
        """(chain_pem, key_pem) of the poller: poller-chain.pem and poller-key.pem."""
        return (
            poller_chain_path(self.layout).read_bytes(),
            self.layout.service_key("poller").read_bytes(),
        )

    def _tenant(self, slug: str) -> Authority:
        try:
            return self.tenants[slug]
        except KeyError:
            raise InvalidArgument(f"ForgePki has no tenant {slug!r} (has {sorted(self.tenants)})") from None

    # --- forging -----------------------------------------------------------------

    def agent(
        self,
        tenant: str,
        component_id: str = "agent-001",
        partition_id: str = "partition-1",
        *,
        issuer_tenant: str | None = None,
        signed_by: SignedBy | ForgedCert = "tenant",
        cn: str | _Default | None = DEFAULT,
        spiffe: str | _Default | None = DEFAULT,
        dns: Sequence[str] | _Default = DEFAULT,
        ips: Sequence[IPLike] = (),
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        days: int = 365,
        is_ca: bool = False,
        key_kind: KeyKind = "ec",
        eku: Sequence[x509.ObjectIdentifier] | _Default | None = DEFAULT,
        key_usage_names: Collection[str] | _Default | None = DEFAULT,
        extra_extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
        write: bool = False,
    ) -> ForgedCert:
        """Mint a component certificate with exactly the requested properties.

        - `tenant`, `component_id`, `partition_id`: what the certificate claims
          (they build the default CN and SPIFFE ID; they are not validated when
          `cn` and `spiffe` are given explicitly).
        - `signed_by`: "tenant" (the CA of `issuer_tenant`, default `tenant`),
          "root", "platform", "self", or a ForgedCert that is a CA (`is_ca=True`)
          to build longer chains (chain = leaf + that CA's chain).
        - `cn`: default the edge CN; any string; None for a subject without CN.
        - `spiffe`: default spiffe://serviceradar.local/agent/<tenant>/<partition>/<component>;
          any string; None for no URI SAN.
        - `dns`: default [cn] (empty when there is no CN or it is not ASCII).
        - validity: `not_before` default now - 5 min (or earlier, so that an
          explicit past `not_after` still gives a well-formed certificate);
          `not_after` default not_before + `days`.
        - `is_ca`: mark the certificate as a CA (no pathlen).
        - `eku`: default serverAuth+clientAuth; None for no EKU extension.
        - `key_usage_names`: default digitalSignature (+keyEncipherment for
          RSA); with `is_ca` digitalSignature+keyCertSign+cRLSign, so that the
          CA can still be served as a TLS leaf (TLS stacks refuse to load a
          leaf without digitalSignature) and can sign a longer chain; None for
          no keyUsage extension.
        - `write=True`: also write it to the components directory of the
          issuing tenant (of `tenant` when not signed by a tenant CA):
          `<component_id>-<partition_id>.pem`, `-key.pem`, `-chain.pem`.
        """
        subject_cn = format_edge_cn(component_id, partition_id, tenant) if cn is DEFAULT else cn
        uri = format_spiffe_id("agent", tenant, partition_id, component_id) if spiffe is DEFAULT else spiffe
        if isinstance(dns, _Default):
            dns_names: list[str] = [subject_cn] if subject_cn is not None and subject_cn.isascii() else []
        else:
            dns_names = list(dns)

        start = not_before
        if start is None:
            start = utcnow() - CLOCK_SKEW
            if not_after is not None and not_after <= start:
                start = not_after - timedelta(days=max(days, 1))
        end = not_after if not_after is not None else start + timedelta(days=days)

        issuer_cert: x509.Certificate | None
        issuer_key: PrivateKey | None
        intermediates: tuple[x509.Certificate, ...]
        home = issuer_tenant or tenant
        if isinstance(signed_by, ForgedCert):
            issuer_cert, issuer_key = signed_by.cert, signed_by.key
            intermediates = (signed_by.cert, *signed_by.intermediates)
            issuer_label = f"forged:{signed_by.cn}"
        elif signed_by == "tenant":
            authority = self._tenant(home)
            issuer_cert, issuer_key, intermediates = authority.cert, authority.key, (authority.cert,)
            issuer_label = f"tenant:{home}"
        elif signed_by == "root":
            issuer_cert, issuer_key, intermediates = self.root.cert, self.root.key, ()
            issuer_label = "root"
        elif signed_by == "platform":
            issuer_cert, issuer_key, intermediates = self.platform.cert, self.platform.key, (self.platform.cert,)
            issuer_label = "platform"
        elif signed_by == "self":
            issuer_cert, issuer_key, intermediates = None, None, ()
            issuer_label = "self"
        else:
            raise InvalidArgument(f"signed_by must be 'tenant', 'root', 'platform', 'self' or a ForgedCert, not {signed_by!r}")

        usages: Collection[str] | Literal["auto"] | None
        if isinstance(key_usage_names, _Default):
            usages = ("digital_signature", "key_cert_sign", "crl_sign") if is_ca else AUTO
        else:
            usages = key_usage_names
        key = new_key(key_kind)
        cert = build_certificate(
            subject_key=key,
            subject_cn=subject_cn,
            issuer_cert=issuer_cert,
            issuer_key=issuer_key,
            not_before=start,
            not_after=end,
            is_ca=is_ca,
            dns=dns_names,
            ips=ips,
            uris=[uri] if uri is not None else [],
            eku=[SERVER_AUTH, CLIENT_AUTH] if isinstance(eku, _Default) else eku,
            key_usage_names=usages,
            extra_extensions=extra_extensions,
        )
        leaf = cert_pem(cert)
        chain = leaf + chain_pem(intermediates)
        private = key_pem(key)
        paths: dict[str, Path] = {}
        if write:
            files = self.layout.component_files(home, component_id, partition_id)
            paths = {"cert_path": files.cert, "key_path": files.key, "chain_path": files.chain}
            write_private(paths["key_path"], private)
            write_public(paths["cert_path"], leaf)
            write_public(paths["chain_path"], chain)
        return ForgedCert(
            cert=cert,
            key=key,
            cert_pem=leaf,
            leaf_pem=leaf,
            chain_pem=chain,
            key_pem=private,
            serial_hex=serial_hex(cert),
            cn=subject_cn,
            spiffe=uri,
            issuer=issuer_label,
            intermediates=intermediates,
            **paths,
        )

    def revoke(self, tenant: str, cert: ForgedCert | x509.Certificate | int | str) -> Revocation:
        """Revoke via poller.pki.revoke; rewrites tenants/<tenant>/crl.pem in the directory.

        A certificate (ForgedCert or x509) must have been issued by the
        tenant's CA; an int or hex string is revoked as a bare serial.
        """
        target = cert.cert if isinstance(cert, ForgedCert) else cert
        return revoke(self.layout, tenant, target)

    def add_tenant(self, slug: str) -> Authority:
        """Create (or keep) tenant `slug`'s CA in the directory and hold it for forging.

        A TrustStore made earlier sees the new tenant after its reload().
        """
        if slug not in self.tenants:
            create_tenant_ca(self.layout, slug)
            self.tenants[slug] = load_tenant_authority(self.layout, slug)
        return self.tenants[slug]


# --- a directory as ServiceRadar's generate-certs.sh writes it ----------------------

_SUBJECT = (("US", NameOID.COUNTRY_NAME), ("CA", NameOID.STATE_OR_PROVINCE_NAME), ("San Francisco", NameOID.LOCALITY_NAME))


def _script_subject(org_unit: str) -> list[x509.NameAttribute[str]]:
    attrs = [x509.NameAttribute(oid, value) for value, oid in _SUBJECT]
    attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ServiceRadar"))
    attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, org_unit))
    return attrs


#: keyUsage of generate-certs.sh's leaf certificates (not critical there).
_SCRIPT_LEAF_USAGE = (key_usage(["key_encipherment", "data_encipherment", "digital_signature"]), False)


@dataclass(frozen=True)
class ServiceRadarStyleDir:
    """What serviceradar_style_dir wrote: the layout and the main file paths."""

    layout: CertsLayout
    tenants: tuple[str, ...]
    services: Mapping[str, Path]
    components: Mapping[str, tuple[Path, ...]]

    @property
    def root(self) -> Path:
        return self.layout.root


def serviceradar_style_dir(
    path: str | os.PathLike[str],
    tenants: Sequence[str] = ("acme-corp",),
    *,
    services: Sequence[str] = ("poller",),
    components: Sequence[tuple[str, str]] = (("agent-001", "default"),),
    bits: int = 2048,
) -> ServiceRadarStyleDir:
    """Write a certs directory the way generate-certs.sh does (with tenants).

    - RSA keys (`bits`, 2048 by default for speed; the script's root uses 4096).
    - `root.pem`/`root-key.pem`: CN "ServiceRadar Root CA", C/ST/L/O/OU =
      US/CA/San Francisco/ServiceRadar/Docker, basicConstraints CA (like
      `openssl req -x509` with the default config), no keyUsage.
    - platform service certificates `<name>.pem`/`<name>-key.pem` for each of
      `services`, signed by the ROOT directly: CN `<name>.serviceradar`, SAN
      DNS:<name>, DNS:<name>.serviceradar, DNS:localhost, IP:127.0.0.1;
      keyUsage keyEncipherment+dataEncipherment+digitalSignature; EKU
      serverAuth+clientAuth; NO basicConstraints.
    - tenant CAs `tenants/<slug>/ca.pem` (+ ca-key.pem, ca-chain.pem = CA + root):
      CN tenant-<slug>.ca.serviceradar, OU Tenant-<slug>, basicConstraints
      CA:TRUE pathlen 0 and keyUsage keyCertSign+cRLSign (critical), no name
      constraints.
    - components `tenants/<slug>/components/<id>-<partition>.pem` (+ -key.pem,
      -chain.pem = leaf + tenant CA + root): CN <id>.<partition>.<slug>.serviceradar,
      SAN DNS:<cn>, DNS:<id>.serviceradar, DNS:localhost, IP:127.0.0.1 and URI
      spiffe://serviceradar.local/agent/<slug>/<partition> (the 3-segment form;
      the script itself puts the component id where this puts `agent`; both
      are accepted), basicConstraints CA:FALSE and keyUsage not critical, EKU
      serverAuth+clientAuth.

    SKI and AKI are present everywhere, as OpenSSL 3 adds them by default.
    """
    layout = as_layout(path)
    root_key = new_key("rsa", bits)
    root_cert = build_certificate(
        subject_key=root_key,
        subject_cn="ServiceRadar Root CA",
        subject_attrs=_script_subject("Docker"),
        is_ca=True,
        key_usage_names=None,
        days=3650,
    )
    write_private(layout.root_key, key_pem(root_key))
    write_public(layout.root_ca, cert_pem(root_cert))

    service_paths: dict[str, Path] = {}
    for name in services:
        key = new_key("rsa", bits)
        cert = build_certificate(
            subject_key=key,
            subject_cn=f"{name}.serviceradar",
            subject_attrs=_script_subject("Docker"),
            issuer_cert=root_cert,
            issuer_key=root_key,
            days=3650,
            basic_constraints=False,
            key_usage_names=None,
            dns=[name, f"{name}.serviceradar", "localhost"],
            ips=["127.0.0.1"],
            eku=[SERVER_AUTH, CLIENT_AUTH],
            extra_extensions=[_SCRIPT_LEAF_USAGE],
        )
        write_private(layout.service_key(name), key_pem(key))
        write_public(layout.service_cert(name), cert_pem(cert))
        service_paths[name] = layout.service_cert(name)

    component_paths: dict[str, tuple[Path, ...]] = {}
    for slug in tenants:
        ca_key = new_key("rsa", bits)
        ca_cert = build_certificate(
            subject_key=ca_key,
            subject_cn=format_tenant_ca_cn(slug),
            subject_attrs=_script_subject(f"Tenant-{slug}"),
            issuer_cert=root_cert,
            issuer_key=root_key,
            is_ca=True,
            pathlen=0,
            days=3650,
        )
        write_private(layout.tenant_key(slug), key_pem(ca_key))
        write_public(layout.tenant_ca(slug), cert_pem(ca_cert))
        write_public(layout.tenant_chain(slug), chain_pem([ca_cert, root_cert]))
        written: list[Path] = []
        for component_id, partition_id in components:
            cn = format_edge_cn(component_id, partition_id, slug)
            key = new_key("rsa", bits)
            cert = build_certificate(
                subject_key=key,
                subject_cn=cn,
                subject_attrs=_script_subject(f"Tenant-{slug}"),
                issuer_cert=ca_cert,
                issuer_key=ca_key,
                days=365,
                basic_constraints=False,
                key_usage_names=None,
                dns=[cn, f"{component_id}.serviceradar", "localhost"],
                ips=["127.0.0.1"],
                uris=[f"spiffe://serviceradar.local/agent/{slug}/{partition_id}"],
                eku=[SERVER_AUTH, CLIENT_AUTH],
                extra_extensions=[(x509.BasicConstraints(ca=False, path_length=None), False), _SCRIPT_LEAF_USAGE],
            )
            write_private(layout.component_key(slug, component_id, partition_id), key_pem(key))
            write_public(layout.component_cert(slug, component_id, partition_id), cert_pem(cert))
            write_public(layout.component_chain(slug, component_id, partition_id), chain_pem([cert, ca_cert, root_cert]))
            written.append(layout.component_cert(slug, component_id, partition_id))
        component_paths[slug] = tuple(written)
    return ServiceRadarStyleDir(layout=layout, tenants=tuple(tenants), services=service_paths, components=component_paths)
