"""Decide whether an onboarding package is complete, consistent and issued right.

verify_package() runs the checks in order and stops at the first refusal:

1. the archive (poller.onboard.archive): only the expected plain files, safe
   names, bounded sizes;
2. every PEM member holds what its name says and nothing else (a private key
   anywhere but component-key.pem is forbidden material);
3. the key belongs to the certificate (key_mismatch);
4. config.json agrees with the certificate: tenant (tenant_mismatch),
   component, partition, CN, SPIFFE ID, type (identity_mismatch);
5. the certificate proves the config's tenant, by the same verify_agent_chain
   the poller uses when it dials: against the certs directory's tenant CA
   when a trust snapshot is given, else against the package's own CA files;
6. the CA files in the package are that tenant's CA and the platform root,
   never another tenant's, and component-chain.pem is the leaf and that CA;
7. the key is mode 0600 in the archive (checked last, so that a package
   repacked with default modes still shows what else was changed).

>>> found = verify_package(Path("agent.tar.gz"), trust=TrustStore("certs", require_client=False).snapshot)  # doctest: +SKIP
>>> found.context.tenant  # doctest: +SKIP
'acme-corp'
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from poller.identity import certinfo
from poller.identity.certinfo import CertificateError
from poller.identity.context import TenantContext
from poller.identity.names import CnForm, InvalidName, check_label, parse_tenant_ca_cn
from poller.identity.reasons import IdentityRefused, Reason
from poller.logs import get_logger
from poller.onboard.archive import MemberFile, PackageRefused, read_archive, read_archive_bytes
from poller.onboard.members import (
    COMPONENT_CERT,
    COMPONENT_CHAIN,
    COMPONENT_KEY,
    CONFIG,
    PACKAGE_TYPES,
    ROOT_CA,
    TENANT_CA,
    TENANT_CHAIN,
    agent_config,
)
from poller.pki.build import PrivateKey, key_matches, load_key_pem
from poller.trust.binding import BindingError, ca_problem, parse_binding
from poller.trust.store import TenantAuthority, TrustSnapshot
from poller.trust.verify import verify_agent_chain

_PRIVATE = b"PRIVATE KEY"

audit = get_logger("poller.audit")


@dataclass(frozen=True, slots=True)
class VerifiedPackage:
    """A package that passed every check: the proven identity and its files."""

    context: TenantContext
    config: dict[str, Any]
    files: dict[str, MemberFile] = field(repr=False)

    @property
    def chain_pem(self) -> bytes:
        return self.files[COMPONENT_CHAIN].data

    @property
    def key_pem(self) -> bytes:
        return self.files[COMPONENT_KEY].data

    @property
    def root_pem(self) -> bytes:
        return self.files[ROOT_CA].data

    def as_dict(self) -> dict[str, Any]:
        """The proven identity, as `onboard verify` prints it."""
        return {**self.context.as_dict(), "nats_subject_prefix": self.config["nats_subject_prefix"]}


def verify_package(path: Path, *, trust: TrustSnapshot | None = None) -> VerifiedPackage:
    """Read and verify the package at path; PackageRefused / IdentityRefused otherwise.

    With `trust` (a certs directory's snapshot) the certificate must chain to
    that directory's CA of the config's tenant; without it, only to the
    package's own CA files (enough for a mock agent to serve it, not proof).
    """
    return _audited(str(path), lambda: verify_files(read_archive(path), trust=trust))


def verify_package_bytes(blob: bytes, *, trust: TrustSnapshot | None = None) -> VerifiedPackage:
    """verify_package for an archive in memory."""
    return _audited("(in memory)", lambda: verify_files(read_archive_bytes(blob), trust=trust))


def _audited(source: str, check: Callable[[], VerifiedPackage]) -> VerifiedPackage:
    """Run the checks and write the decision to the audit log (never key material)."""
    try:
        verified = check()
    except (PackageRefused, IdentityRefused) as err:
        audit.warning(
            "package_refused",
            audit=True,
            package=source,
            reason=err.reason.value,
            detail=err.detail,
            serial=getattr(err, "peer", {}).get("serial"),
        )
        raise
    ctx = verified.context
    audit.info(
        "package_verified",
        audit=True,
        package=source,
        **ctx.log_fields(),
    )
    return verified


def verify_files(files: dict[str, MemberFile], *, trust: TrustSnapshot | None = None) -> VerifiedPackage:
    """Checks 1-6 of the module docstring on already-read members."""
    for name, member in files.items():
        if name != COMPONENT_KEY and _PRIVATE in member.data:
            raise PackageRefused(Reason.FORBIDDEN_MATERIAL, f"{name} contains a private key; only {COMPONENT_KEY} may")

    tenant_ca = _one_cert(files, TENANT_CA)
    root = _one_cert(files, ROOT_CA)
    tenant_chain = _certs(files, TENANT_CHAIN)
    leaf = _one_cert(files, COMPONENT_CERT)
    served = _certs(files, COMPONENT_CHAIN)
    key = _key(files)

    if not key_matches(leaf, key):
        raise PackageRefused(Reason.KEY_MISMATCH, f"{COMPONENT_KEY} is not the private key of {COMPONENT_CERT}")

    config = _config(files)
    _check_config_names(config, leaf)
    tenant = config["tenant"]
    if trust is None:
        trust = _package_trust(tenant, tenant_ca, root, config.get("cn_form"))
    elif tenant not in trust.tenants:
        raise IdentityRefused(Reason.UNTRUSTED_CHAIN, f"the certs directory has no CA for tenant {tenant!r}")
    # The leaf alone: the anchor is the tenant CA itself, so no intermediate is needed,
    # and what the chain files say is checked against the proven CA afterwards.
    context = verify_agent_chain(
        [leaf], tenant=tenant, trust=trust, component=config["component_id"], partition=config["partition"]
    )
    _check_spiffe(config, context)
    _check_tenant_ca(config, trust.tenants[tenant].ca_cn)
    _check_authorities(trust.tenants[tenant], trust, tenant_ca, tenant_chain, root)
    _check_served(served, leaf, trust.tenants[tenant], trust)
    # Last, so that a repacked package shows what was changed in it before this.
    key_mode = files[COMPONENT_KEY].mode
    if key_mode & 0o077:
        raise PackageRefused(
            Reason.UNSAFE_MEMBER, f"{COMPONENT_KEY} has mode {key_mode:04o} in the archive; a private key must be 0600"
        )
    return VerifiedPackage(context=context, config=config, files=files)


# --- members -------------------------------------------------------------------


def _certs(files: dict[str, MemberFile], name: str) -> list[x509.Certificate]:
    data = files[name].data
    try:
        certs = certinfo.load_pem_chain(data, what=name)
    except CertificateError as exc:
        raise PackageRefused(Reason.BAD_PACKAGE, str(exc)) from None
    if data.count(b"-----BEGIN ") != len(certs):
        raise PackageRefused(Reason.BAD_PACKAGE, f"{name} holds PEM blocks that are not certificates")
    return certs


def _one_cert(files: dict[str, MemberFile], name: str) -> x509.Certificate:
    certs = _certs(files, name)
    if len(certs) != 1:
        raise PackageRefused(Reason.BAD_PACKAGE, f"{name} holds {len(certs)} certificates, expected 1")
    return certs[0]


def _key(files: dict[str, MemberFile]) -> PrivateKey:
    data = files[COMPONENT_KEY].data
    if data.count(b"-----BEGIN ") != 1:
        raise PackageRefused(Reason.KEY_MISMATCH, f"{COMPONENT_KEY} must hold exactly one private key")
    try:
        return load_key_pem(data)
    except (ValueError, TypeError):
        raise PackageRefused(Reason.KEY_MISMATCH, f"{COMPONENT_KEY} is not an unencrypted EC or RSA PEM private key") from None


# --- config.json -----------------------------------------------------------------

_REQUIRED = ("tenant", "component_id", "agent_id", "partition", "component_type", "spiffe_id", "nats_subject_prefix", "cn")


def _config(files: dict[str, MemberFile]) -> dict[str, Any]:
    try:
        config = json.loads(files[CONFIG].data)
    except (ValueError, UnicodeDecodeError):
        raise PackageRefused(Reason.BAD_PACKAGE, f"{CONFIG} is not JSON") from None
    if not isinstance(config, dict):
        raise PackageRefused(Reason.BAD_PACKAGE, f"{CONFIG} is not a JSON object")
    missing = [k for k in _REQUIRED if not isinstance(config.get(k), str) or not config[k]]
    if missing:
        raise PackageRefused(Reason.BAD_PACKAGE, f"{CONFIG} lacks {', '.join(missing)}")
    try:
        check_label(config["tenant"], f"{CONFIG} tenant")
    except InvalidName as exc:
        raise PackageRefused(Reason.BAD_PACKAGE, str(exc)) from None
    if config["component_type"] not in PACKAGE_TYPES:
        raise PackageRefused(
            Reason.BAD_PACKAGE, f"{CONFIG} component_type {config['component_type']!r} is not one of {PACKAGE_TYPES}"
        )
    return config


def _check_config_names(config: dict[str, Any], leaf: x509.Certificate) -> None:
    """config.json against the certificate's CN, before any trust decision."""
    cn = certinfo.subject_cn(leaf) or ""
    labels = cn.split(".")
    cert_tenant = labels[2] if len(labels) == 4 else None
    if cert_tenant is not None and config["tenant"] != cert_tenant:
        raise IdentityRefused(
            Reason.TENANT_MISMATCH, f"{CONFIG} says tenant {config['tenant']!r} but the certificate is for {cert_tenant!r}"
        )
    if config["nats_subject_prefix"] != config["tenant"]:
        raise IdentityRefused(
            Reason.TENANT_MISMATCH,
            f"{CONFIG} nats_subject_prefix {config['nats_subject_prefix']!r} is not tenant {config['tenant']!r}'s",
        )
    if config["agent_id"] != config["component_id"]:
        raise IdentityRefused(Reason.IDENTITY_MISMATCH, f"{CONFIG} agent_id and component_id differ")
    if config["cn"] != cn:
        raise IdentityRefused(Reason.IDENTITY_MISMATCH, f"{CONFIG} cn {config['cn']!r} is not the certificate's CN {cn!r}")
    server_name = (config.get("security") or {}).get("server_name") if isinstance(config.get("security"), dict) else None
    if server_name is not None and server_name != cn:
        raise IdentityRefused(Reason.IDENTITY_MISMATCH, f"{CONFIG} security.server_name {server_name!r} is not {cn!r}")
    if cert_tenant is not None:  # a deployment CA's name is checked once the CA is proven (_check_tenant_ca)
        _check_tenant_ca(config, f"tenant-{config['tenant']}.ca.serviceradar")


def _check_tenant_ca(config: dict[str, Any], expected_ca: str) -> None:
    if config.get("tenant_ca", expected_ca) != expected_ca:
        raise IdentityRefused(Reason.TENANT_MISMATCH, f"{CONFIG} tenant_ca {config.get('tenant_ca')!r} is not {expected_ca!r}")


def _check_spiffe(config: dict[str, Any], context: TenantContext) -> None:
    expected = agent_config(
        tenant=context.tenant,
        component_id=context.component_id,
        partition_id=context.partition_id,
        component_type=config["component_type"],
        cn_form=context.cn_form,
    )["spiffe_id"]
    if config["spiffe_id"] != expected or context.spiffe_id != expected:
        raise IdentityRefused(
            Reason.IDENTITY_MISMATCH,
            f"{CONFIG} spiffe_id {config['spiffe_id']!r}, certificate {context.spiffe_id!r}, expected {expected!r}",
        )


# --- authorities ---------------------------------------------------------------------


def _package_trust(tenant: str, tenant_ca: x509.Certificate, root: x509.Certificate, cn_form: object) -> TrustSnapshot:
    """A trust snapshot made of the package's own CA files (no outside proof);
    a package whose config.json says `cn_form` "deployment" binds its ca.pem
    to its tenant, as tenant.json would (poller.trust.binding)."""
    try:
        form = parse_binding(json.dumps({"cn_form": cn_form or CnForm.TENANT.value}).encode(), where=CONFIG)
    except BindingError as exc:
        raise PackageRefused(Reason.BAD_PACKAGE, str(exc)) from None
    if form is CnForm.TENANT:
        try:
            slug = parse_tenant_ca_cn(certinfo.subject_cn(tenant_ca) or "")
        except InvalidName as exc:
            raise IdentityRefused(Reason.UNTRUSTED_CHAIN, f"{TENANT_CA}: {exc}") from None
        if slug != tenant:
            raise IdentityRefused(Reason.TENANT_MISMATCH, f"{TENANT_CA} is tenant {slug!r}'s CA, not {tenant!r}'s")
    problem = ca_problem(tenant, tenant_ca, form, TENANT_CA)  # a deployment CA: only another tenant's CA name fails
    if problem is not None:
        raise IdentityRefused(Reason.TENANT_MISMATCH, problem)
    authority = _authority(tenant, tenant_ca, form)
    return TrustSnapshot(root=root, tenants={tenant: authority}, client=None, by_spki={authority.spki_sha256: authority})


def _authority(slug: str, cert: x509.Certificate, form: CnForm) -> TenantAuthority:
    return TenantAuthority(
        slug=slug,
        cert=cert,
        pem=cert.public_bytes(serialization.Encoding.PEM),
        spki_sha256=certinfo.spki_sha256(cert),
        cn_form=form,
    )


def _foreign(name: str, cert: x509.Certificate, expected: TenantAuthority, trust: TrustSnapshot) -> IdentityRefused:
    """A CA file that is not the expected tenant's: another tenant's (tenant_mismatch) or unknown."""
    other = trust.tenant_by_spki(certinfo.spki_sha256(cert))
    if other is not None and other.slug != expected.slug:
        return IdentityRefused(Reason.TENANT_MISMATCH, f"{name} carries tenant {other.slug!r}'s CA, not {expected.ca_cn}")
    what = certinfo.subject_cn(cert) or "an unknown certificate"
    return IdentityRefused(Reason.UNTRUSTED_CHAIN, f"{name} carries {what!r}, not {expected.ca_cn} of the certs directory")


def _check_served(
    served: list[x509.Certificate], leaf: x509.Certificate, expected: TenantAuthority, trust: TrustSnapshot
) -> None:
    """component-chain.pem, what the agent will present, is the proven leaf and its tenant CA."""
    if served[0] != leaf:
        raise IdentityRefused(Reason.IDENTITY_MISMATCH, f"{COMPONENT_CHAIN} does not start with {COMPONENT_CERT}")
    if served[1:] != [expected.cert]:
        odd = next((c for c in served[1:] if c != expected.cert), None)
        if odd is None:
            raise PackageRefused(Reason.BAD_PACKAGE, f"{COMPONENT_CHAIN} must be {COMPONENT_CERT} followed by {TENANT_CA}")
        raise _foreign(COMPONENT_CHAIN, odd, expected, trust)


def _check_authorities(
    expected: TenantAuthority,
    trust: TrustSnapshot,
    tenant_ca: x509.Certificate,
    tenant_chain: list[x509.Certificate],
    root: x509.Certificate,
) -> None:
    """The package's CA files are exactly the tenant's CA and the platform root."""
    if tenant_ca != expected.cert:
        raise _foreign(TENANT_CA, tenant_ca, expected, trust)
    if trust.root is not None and root != trust.root:
        raise _foreign(ROOT_CA, root, expected, trust)
    if tenant_chain != [expected.cert, root]:
        odd = next((c for c in tenant_chain if c not in (expected.cert, root)), None)
        if odd is None:
            raise PackageRefused(Reason.BAD_PACKAGE, f"{TENANT_CHAIN} must be {TENANT_CA} followed by {ROOT_CA}")
        raise _foreign(TENANT_CHAIN, odd, expected, trust)
