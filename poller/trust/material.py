"""Build a TrustSnapshot from PEM bytes, wherever they were kept.

The same rules apply to a certs directory and to bytes from a database: a
tenant CA must be a CA named `tenant-<slug>.ca.serviceradar` (signed by the
root when it names the root as issuer); a CRL must be signed by its tenant's
CA, complete, and not older than the one in force (poller.trust.crl; the one
in force may come from a CrlMemory, across reloads and restarts); the
poller's key must match its certificate.

On a reload (`previous` given) each piece stands alone: a tenant whose new
files are refused keeps the material in force for it, so one broken file
never blocks another tenant's revocations, and never removes a revocation.

>>> snapshot, problems = build_snapshot(material, previous=None)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from poller.identity import certinfo
from poller.identity.certinfo import CertificateError
from poller.identity.names import CnForm
from poller.trust.binding import ca_problem, platform_bound_problems, same_key_problem
from poller.trust.crl import CrlRefused, read_crl, refuse_older, supersede
from poller.trust.crlstate import CrlMemory, CrlStateError
from poller.trust.snapshot import ClientIdentity, TenantAuthority, TrustSnapshot


@dataclass(frozen=True, slots=True)
class TenantMaterial:
    """One tenant's PEM bytes; `where` names them in messages (a path or a label)."""

    ca_pem: bytes
    crl_pem: bytes | None = None
    where: str = ""
    crl_where: str = ""
    #: the tenant's binding (poller.trust.binding); binding_problem: why it was refused.
    cn_form: CnForm = CnForm.TENANT
    binding_problem: str | None = None


@dataclass(frozen=True, slots=True)
class TrustMaterial:
    """The PEM bytes a snapshot is built from. `problems` / `warnings` carry what
    reading them already found (an unreadable file, a tenant dir without CA)."""

    tenants: Mapping[str, TenantMaterial]
    root_pem: bytes | None = None
    platform_ca_pem: bytes | None = None
    client_cert_pem: bytes | None = field(default=None, repr=False)
    client_key_pem: bytes | None = field(default=None, repr=False)
    client_where: str = "client certificate"
    client_key_where: str = "client key"
    require_client: bool = False
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BuildOutcome:
    """A snapshot and what was refused on the way (material in force kept)."""

    snapshot: TrustSnapshot
    problems: tuple[str, ...]


def build_snapshot(
    material: TrustMaterial,
    *,
    previous: TrustSnapshot | None,
    require_crl: bool = False,
    memory: CrlMemory | None = None,
) -> BuildOutcome:
    """Every piece that reads cleanly; on a reload a refused piece keeps the previous one.
    `memory`: the CRLs remembered per tenant and CA key (none: only `previous` counts).
    A CRL refused while a CRL in force stays is in snapshot.refused, not in problems."""
    problems: list[str] = list(material.problems)
    warnings: list[str] = list(material.warnings)
    refused: list[str] = []

    root = _root(material, previous, problems)
    tenants: dict[str, TenantAuthority] = {}
    for slug, tenant in sorted(material.tenants.items()):
        before = previous.tenants.get(slug) if previous else None
        found: list[str] = []
        authority = build_tenant(slug, tenant, root, before, found, warnings, memory=memory, refused=refused)
        if found:
            problems.extend(found if before is None else [f"{p}; kept the material in force for {slug}" for p in found])
            authority = before
        if authority is not None:
            tenants[slug] = authority
        if authority is not None and authority.crl is None:
            consequence = "its agents are refused (require_crl)" if require_crl else "revocation is not checked for it"
            warnings.append(f"tenant {slug}: no CRL ({tenant.crl_where or 'crl.pem'} is absent); {consequence}")
    if not tenants:
        warnings.append("no tenant CAs loaded")

    client = _client(material, previous, problems)
    by_spki: dict[str, TenantAuthority] = {}
    conflicts: list[str] = []
    for authority in tenants.values():
        other = by_spki.setdefault(authority.spki_sha256, authority)
        if other is not authority:  # one key for two tenants would blur who issued what
            conflicts.append(same_key_problem(other, authority))
    conflicts += platform_bound_problems(tenants.values(), material.platform_ca_pem)
    problems.extend(conflicts)
    if previous is not None and conflicts:
        # Rare enough not to untangle: refuse the whole reload, keep what is in force.
        return BuildOutcome(previous, tuple(problems))
    snapshot = TrustSnapshot(
        root=root,
        tenants=tenants,
        client=client,
        warnings=tuple(warnings),
        by_spki=by_spki,
        require_crl=require_crl,
        refused=tuple(refused),
    )
    return BuildOutcome(snapshot, tuple(problems))


def _root(material: TrustMaterial, previous: TrustSnapshot | None, problems: list[str]) -> x509.Certificate | None:
    if material.root_pem is None:
        return None
    try:
        return certinfo.load_pem_chain(material.root_pem, what="root.pem")[0]
    except CertificateError as exc:
        if previous is not None and previous.root is not None:
            problems.append(f"{exc}; kept the root in force")
            return previous.root
        problems.append(str(exc))
        return None


def build_tenant(
    slug: str,
    material: TenantMaterial,
    root: x509.Certificate | None,
    before: TenantAuthority | None,
    problems: list[str],
    warnings: list[str],
    *,
    memory: CrlMemory | None = None,
    refused: list[str] | None = None,
) -> TenantAuthority | None:
    """One tenant's authority, or None with the reasons appended to problems.
    A CRL refused while a CRL in force stays is appended to `refused` instead
    (the authority then carries the CRL in force, with the refused CRL's revocations)."""
    where = material.where or f"tenant {slug} CA"
    if material.binding_problem is not None:
        problems.append(material.binding_problem)
        return None
    try:
        cert = certinfo.load_pem_chain(material.ca_pem, what=where)[0]
    except CertificateError as exc:
        problems.append(str(exc))
        return None
    named = ca_problem(slug, cert, material.cn_form, where)
    if named is not None:
        problems.append(named)
        return None
    if not certinfo.is_ca(cert):
        problems.append(f"{where}: not a CA certificate (basicConstraints CA:FALSE or missing)")
        return None
    if root is not None and cert.issuer == root.subject:
        try:
            cert.verify_directly_issued_by(root)
        except Exception:
            problems.append(f"{where}: names the root as issuer but the root did not sign it")
            return None
    spki = certinfo.spki_sha256(cert)
    # A CRL in force stays comparable only while the CA key is the same; one
    # remembered for this tenant and key counts as in force (reloads, restarts).
    in_force = before.crl if before is not None and before.spki_sha256 == spki else None
    if in_force is None and memory is not None:
        try:
            in_force = memory.recall(slug, cert, spki)
        except CrlStateError as exc:
            problems.append(str(exc))
            return None
    crl_where = material.crl_where or f"tenant {slug} CRL"
    if material.crl_pem is None:
        crl = in_force
        if in_force is not None:
            # Removing the file must not silently lift revocations (fail closed).
            warnings.append(f"{crl_where} was removed; the CRL in force for {slug} (number {in_force.number}) stays")
    else:
        try:
            crl, problem = supersede(read_crl(material.crl_pem, cert, crl_where, now=certinfo.utcnow()), in_force, crl_where)
        except CrlRefused as exc:
            if in_force is None or not exc.signed:
                problems.append(str(exc))
                return None
            crl, problem = refuse_older(in_force, exc.revoked, str(exc))
        if problem is not None:
            (refused if refused is not None else problems).append(problem)
        if crl.stale(certinfo.utcnow()):
            warnings.append(
                f"{crl_where}: past its nextUpdate ({crl.next_update:%Y-%m-%dT%H:%M:%SZ}); agents of {slug} are refused"
            )
        if crl.scope is not None:
            warnings.append(
                f"{crl_where}: its issuingDistributionPoint names {crl.scope_text()}: agents of {slug} whose"
                f" certificates' cRLDistributionPoints name none of these are refused (crl_expired)"
            )
    return TenantAuthority(
        slug=slug,
        cert=cert,
        pem=cert.public_bytes(serialization.Encoding.PEM),
        spki_sha256=spki,
        crl=crl,
        cn_form=material.cn_form,
    )


def _client(material: TrustMaterial, previous: TrustSnapshot | None, problems: list[str]) -> ClientIdentity | None:
    if material.client_cert_pem is None and not material.require_client:
        return None
    found: list[str] = []
    client = build_client(material, found)
    if found and previous is not None and previous.client is not None:
        problems.extend(f"{p}; kept the client identity in force" for p in found)
        return previous.client
    problems.extend(found)
    return client


def build_client(material: TrustMaterial, problems: list[str]) -> ClientIdentity | None:
    """The poller's identity: key matching the leaf, platform CA appended to a leaf-only chain."""
    if material.client_cert_pem is None:
        problems.append(f"client certificate {material.client_where} is missing")
        return None
    try:
        chain = certinfo.load_pem_chain(material.client_cert_pem, what=material.client_where)
    except CertificateError as exc:
        problems.append(f"client certificate: {exc}")
        return None
    if material.client_key_pem is None:
        problems.append(f"client key {material.client_key_where} is missing")
        return None
    try:
        key = serialization.load_pem_private_key(material.client_key_pem, password=None)
    except (ValueError, TypeError):
        # The exception text of a key parser never includes key bytes, but
        # say only where and the kind of failure to be sure.
        problems.append(f"client key {material.client_key_where}: not an unencrypted PEM private key")
        return None
    leaf = chain[0]
    if _public_der(key.public_key()) != _public_der(leaf.public_key()):
        problems.append(f"client key {material.client_key_where} does not match certificate {material.client_where}")
        return None
    # A leaf-only poller certificate issued by the platform services CA gets
    # that CA appended, so agents that trust only the root can build the chain.
    if len(chain) == 1 and material.platform_ca_pem is not None:
        try:
            platform = certinfo.load_pem_chain(material.platform_ca_pem, what="platform CA")[0]
        except CertificateError as exc:
            problems.append(f"platform CA: {exc}")
            return None
        if leaf.issuer == platform.subject and leaf.subject != platform.subject:
            chain = [leaf, platform]
    chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    return ClientIdentity(cert=leaf, chain_pem=chain_pem, key_pem=material.client_key_pem)


def _public_der(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
