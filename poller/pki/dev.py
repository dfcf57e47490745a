"""create_dev_pki: the development certs directory of `make certs` / `make run`.

>>> dev = create_dev_pki("certs")  # doctest: +SKIP
>>> [c.cn for c in dev.components]  # doctest: +SKIP
['agent-001.partition-1.acme-corp.serviceradar', 'agent-002.partition-1.acme-corp.serviceradar',
 'agent-007.site-b.xyz-inc.serviceradar']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from poller.identity.names import format_edge_cn, format_spiffe_id
from poller.pki.authority import (
    PkiInit,
    StrPath,
    TenantCa,
    as_layout,
    create_tenant_ca,
    init_pki,
    issue_component,
    load_tenant_authority,
    sign_child,
    write_issued,
)
from poller.pki.build import (
    CLIENT_AUTH,
    SERVER_AUTH,
    issued_by,
    new_key,
    serial_hex,
)
from poller.pki.errors import PkiError
from poller.pki.files import read_certificate
from poller.trust.layout import CertsLayout

DEV_TENANTS: tuple[str, ...] = ("acme-corp", "xyz-inc")

#: Components per tenant as (component_id, partition_id); a tenant not listed
#: gets agent-001 in partition-1.
DEV_AGENTS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "acme-corp": (("agent-001", "partition-1"), ("agent-002", "partition-1")),
    "xyz-inc": (("agent-007", "site-b"),),
}
_DEFAULT_AGENTS: tuple[tuple[str, str], ...] = (("agent-001", "partition-1"),)

#: The impostor: minted by IMPOSTOR_ISSUER's CA, claiming to be an agent of
#: IMPOSTOR_VICTIM. Files: tenants/xyz-inc/components/impostor-agent-666-partition-1*.pem
IMPOSTOR_ISSUER = "xyz-inc"
IMPOSTOR_VICTIM = "acme-corp"
IMPOSTOR_COMPONENT = "agent-666"
IMPOSTOR_PARTITION = "partition-1"
IMPOSTOR_STEM = f"impostor-{IMPOSTOR_COMPONENT}"


@dataclass(frozen=True, slots=True)
class DevComponent:
    """One component certificate of the dev PKI (`created` False when kept)."""

    tenant: str
    cn: str
    cert_path: Path
    key_path: Path
    chain_path: Path
    serial: str
    created: bool


@dataclass(frozen=True, slots=True)
class DevPki:
    """Everything create_dev_pki left in the directory."""

    layout: CertsLayout
    init: PkiInit
    tenants: Mapping[str, TenantCa]
    components: tuple[DevComponent, ...]
    impostor: DevComponent | None


def _kept(layout: CertsLayout, tenant: str, stem: str, partition: str) -> DevComponent | None:
    """The existing files of a component, if complete and issued by the tenant's current CA."""
    cert_path, key_path, chain_path = layout.component_files(tenant, stem, partition)
    if not (cert_path.is_file() and key_path.is_file() and chain_path.is_file()):
        return None
    try:
        cert = read_certificate(cert_path)
    except PkiError:
        return None
    if not issued_by(cert, read_certificate(layout.tenant_ca(tenant))):
        return None  # the tenant CA was regenerated: this one no longer chains
    cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return DevComponent(
        tenant=tenant,
        cn=str(cns[0].value) if cns else "",
        cert_path=cert_path,
        key_path=key_path,
        chain_path=chain_path,
        serial=serial_hex(cert),
        created=False,
    )


def write_impostor(certs_dir: StrPath | CertsLayout) -> DevComponent:
    """Mint the cross-tenant impostor with xyz-inc's CA and write it.

    This is an attacker's certificate, made on purpose: xyz-inc's CA signs a
    certificate whose CN and SPIFFE URI claim acme-corp
    (`agent-666.partition-1.acme-corp.serviceradar`). It has NO DNS SAN: a DNS
    SAN under acme-corp.serviceradar would violate xyz-inc's name constraint
    (TLS stacks that enforce it would refuse the chain for that reason alone),
    and the point of the impostor is to be refused for being the wrong tenant.
    It is made with build_certificate directly because issue_component refuses
    exactly this.
    """
    layout = as_layout(certs_dir)
    ca = load_tenant_authority(layout, IMPOSTOR_ISSUER)
    cn = format_edge_cn(IMPOSTOR_COMPONENT, IMPOSTOR_PARTITION, IMPOSTOR_VICTIM)
    key = new_key()
    # No DNS SAN: xyz-inc's name constraint would not allow the acme-corp name,
    # and the point of the impostor is to be refused for being the wrong tenant.
    cert = sign_child(
        ca,
        key,
        days=365,
        subject_cn=cn,
        uris=[format_spiffe_id("agent", IMPOSTOR_VICTIM, IMPOSTOR_PARTITION, IMPOSTOR_COMPONENT)],
        eku=[SERVER_AUTH, CLIENT_AUTH],
    )
    cert_path, key_path, chain_path = layout.component_files(IMPOSTOR_ISSUER, IMPOSTOR_STEM, IMPOSTOR_PARTITION)
    write_issued(cert_path, key_path, chain_path, cert, key, ca.cert)
    return DevComponent(
        tenant=IMPOSTOR_ISSUER,
        cn=cn,
        cert_path=cert_path,
        key_path=key_path,
        chain_path=chain_path,
        serial=serial_hex(cert),
        created=True,
    )


def create_dev_pki(
    certs_dir: StrPath | CertsLayout,
    *,
    tenants: Sequence[str] = DEV_TENANTS,
    agents: Mapping[str, Sequence[tuple[str, str]]] | None = None,
    poller_id: str = "1",
    impostor: bool = True,
) -> DevPki:
    """init_pki + a CA per tenant + agent certificates + the impostor; idempotent.

    Defaults: acme-corp agent-001 and agent-002 in partition-1, xyz-inc
    agent-007 in site-b, and (when both tenants are present) the impostor
    `tenants/xyz-inc/components/impostor-agent-666-partition-1.pem` (see
    write_impostor). Files that already exist are kept (a component whose
    files are incomplete, or that the tenant's current CA did not issue, is
    issued again).

    >>> create_dev_pki("certs").impostor.cn  # doctest: +SKIP
    'agent-666.partition-1.acme-corp.serviceradar'
    """
    layout = as_layout(certs_dir)
    plan = {t: tuple(DEV_AGENTS.get(t, _DEFAULT_AGENTS)) for t in tenants} if agents is None else dict(agents)
    unknown = set(plan) - set(tenants)
    if unknown:
        raise PkiError(f"agents given for tenant(s) not in tenants: {', '.join(sorted(unknown))}")
    init = init_pki(layout, poller_id=poller_id)
    cas = {slug: create_tenant_ca(layout, slug) for slug in tenants}
    components: list[DevComponent] = []
    for slug in tenants:
        for component_id, partition_id in plan.get(slug, ()):
            kept = _kept(layout, slug, component_id, partition_id)
            if kept is not None:
                components.append(kept)
                continue
            issued = issue_component(layout, tenant=slug, component_id=component_id, partition_id=partition_id)
            components.append(
                DevComponent(
                    tenant=slug,
                    cn=issued.cn,
                    cert_path=issued.cert_path,
                    key_path=issued.key_path,
                    chain_path=issued.chain_path,
                    serial=issued.serial,
                    created=True,
                )
            )
    forged: DevComponent | None = None
    if impostor and IMPOSTOR_ISSUER in cas and IMPOSTOR_VICTIM in cas:
        forged = _kept(layout, IMPOSTOR_ISSUER, IMPOSTOR_STEM, IMPOSTOR_PARTITION) or write_impostor(layout)
    return DevPki(layout=layout, init=init, tenants=cas, components=tuple(components), impostor=forged)
