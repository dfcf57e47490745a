"""Decide whether an onboarding package is complete, consistent and issued right.

verify_package() runs the checks in order and stops at the first refusal:

1. the archive (poller.onboard.archive): only the expected plain files, safe
   names, bounded sizes;
2. no member but component-key.pem holds private key material, found by
   parsing (poller.onboard.material: PEM whatever its label, DER, base64 or
   hex of DER, anywhere in the file) rather than by label (forbidden_material);
   every PEM member holds what its name says and nothing else, the key file
   exactly one key;
3. the key belongs to the certificate (key_mismatch);
4. identity.json agrees with the certificate: tenant (tenant_mismatch),
   component, partition, CN, SPIFFE ID, type (identity_mismatch); it has
   exactly its keys;
5. config.json is exactly what `onboard` writes for that identity.json: no
   unknown key, none missing, every value equal (mTLS mode, cert_dir,
   server_name, role, trust domain, every TLS file, checkers_dir, listen_addr
   or the gateway); only host_ip may be an IP address instead of empty
   (bad_package, or identity_mismatch for agent_id, partition,
   server_name and role);
6. the certificate proves identity.json's tenant, by the same verify_agent_chain
   the poller uses when it dials: against the certs directory's tenant CA
   when a trust snapshot is given, else against the package's own CA files;
7. the CA files in the package are that tenant's CA and the platform root,
   never another tenant's, and component-chain.pem is the leaf and that CA;
8. the key is mode 0600 in the archive (checked last, so that a package
   repacked with default modes still shows what else was changed).

>>> found = verify_package(Path("agent.tar.gz"), trust=TrustStore("certs", require_client=False).snapshot)  # doctest: +SKIP
>>> found.context.tenant  # doctest: +SKIP
'acme-corp'
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from poller.address import show_value, split_host_port
from poller.identity import certinfo
from poller.identity.certinfo import CertificateError
from poller.identity.context import TenantContext
from poller.identity.names import CnForm, InvalidName, check_label, parse_tenant_ca_cn
from poller.identity.reasons import IdentityRefused, InvalidArgument, Reason
from poller.logs import get_logger
from poller.onboard.archive import MemberFile, PackageRefused, read_archive, read_archive_bytes
from poller.onboard.material import find_private_key
from poller.onboard.members import (
    COMPONENT_CERT,
    COMPONENT_CHAIN,
    COMPONENT_KEY,
    CONFIG,
    DETECT_HOST_IP,
    IDENTITY,
    LEGACY_HOST_IP_PLACEHOLDER,
    PACKAGE_MODES,
    PACKAGE_TYPES,
    ROOT_CA,
    TENANT_CA,
    TENANT_CHAIN,
    agent_config,
    check_host_ip,
    package_identity,
    push_agent_config,
)
from poller.pki.build import PrivateKey, key_matches, load_key_pem
from poller.trust.binding import BindingError, ca_problem, parse_binding
from poller.trust.store import TenantAuthority, TrustSnapshot
from poller.trust.verify import Purpose, verify_agent_chain

_PRIVATE = b"PRIVATE KEY"

audit = get_logger("poller.audit")


@dataclass(frozen=True, slots=True)
class VerifiedPackage:
    """A package that passed every check: the proven identity, its config, its files."""

    context: TenantContext
    config: dict[str, Any]
    identity: dict[str, Any]
    files: dict[str, MemberFile] = field(repr=False)

    @property
    def mode(self) -> str:
        """ "poll" (the agent listens for the poller) or "push" (it dials the gateway)."""
        return str(self.identity["mode"])

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
        """The proven identity, as `onboard verify` prints it (with the gateway of a push package)."""
        shown = {**self.context.as_dict(), "nats_subject_prefix": self.identity["nats_subject_prefix"], "mode": self.mode}
        for key in ("gateway_addr", "gateway_server_name"):
            if key in self.identity:
                shown[key] = self.identity[key]
        return shown


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
    """Checks 2-8 of the module docstring on already-read members."""
    for name, member in files.items():
        if name == COMPONENT_KEY:
            continue
        where = find_private_key(member.data)
        if where is not None or _PRIVATE in member.data:
            raise PackageRefused(
                Reason.FORBIDDEN_MATERIAL, f"{name} contains a private key ({where or 'labelled'}); only {COMPONENT_KEY} may"
            )

    tenant_ca = _one_cert(files, TENANT_CA)
    root = _one_cert(files, ROOT_CA)
    tenant_chain = _certs(files, TENANT_CHAIN)
    leaf = _one_cert(files, COMPONENT_CERT)
    served = _certs(files, COMPONENT_CHAIN)
    key = _key(files)

    if not key_matches(leaf, key):
        raise PackageRefused(Reason.KEY_MISMATCH, f"{COMPONENT_KEY} is not the private key of {COMPONENT_CERT}")

    identity = _identity(files)
    _check_identity_names(identity, leaf)
    config = _json_object(files, CONFIG)
    _check_config(config, identity)
    tenant = identity["tenant"]
    if trust is None:
        trust = _package_trust(tenant, tenant_ca, root, _cn_form(identity))
    elif tenant not in trust.tenants:
        raise IdentityRefused(Reason.UNTRUSTED_CHAIN, f"the certs directory has no CA for tenant {tenant!r}")
    # The leaf alone: the anchor is the tenant CA itself, so no intermediate is needed,
    # and what the chain files say is checked against the proven CA afterwards.
    # A push agent dials the gateway (a TLS client); any other component is dialled (a server).
    purpose: Purpose = "client" if identity.get("mode") == "push" else "server"
    context = verify_agent_chain(
        [leaf],
        tenant=tenant,
        trust=trust,
        component=identity["component_id"],
        partition=identity["partition_id"],
        purpose=purpose,
    )
    _check_spiffe(identity, context)
    _check_binding(identity, context, trust.tenants[tenant])
    _check_authorities(trust.tenants[tenant], trust, tenant_ca, tenant_chain, root)
    _check_served(served, leaf, trust.tenants[tenant], trust)
    # Last, so that a repacked package shows what was changed in it before this.
    key_mode = files[COMPONENT_KEY].mode
    if key_mode & 0o077:
        raise PackageRefused(
            Reason.UNSAFE_MEMBER, f"{COMPONENT_KEY} has mode {key_mode:04o} in the archive; a private key must be 0600"
        )
    return VerifiedPackage(context=context, config=config, identity=identity, files=files)


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


_ONE_PEM = re.compile(rb"\s*-----BEGIN [A-Z ]{1,40}-----\r?\n[A-Za-z0-9+/=\r\n]+-----END [A-Z ]{1,40}-----\s*")


def _key(files: dict[str, MemberFile]) -> PrivateKey:
    data = files[COMPONENT_KEY].data
    if data.count(b"-----BEGIN ") != 1:
        raise PackageRefused(Reason.KEY_MISMATCH, f"{COMPONENT_KEY} must hold exactly one private key")
    try:
        key = load_key_pem(data)
    except (ValueError, TypeError):
        raise PackageRefused(Reason.KEY_MISMATCH, f"{COMPONENT_KEY} is not an unencrypted EC or RSA PEM private key") from None
    if not _ONE_PEM.fullmatch(data):  # anything beside the one block could be a second key in another form
        raise PackageRefused(Reason.FORBIDDEN_MATERIAL, f"{COMPONENT_KEY} holds more than its one PEM block")
    return key


def _json_object(files: dict[str, MemberFile], name: str) -> dict[str, Any]:
    try:
        doc = json.loads(files[name].data)
    except (ValueError, UnicodeDecodeError):
        raise PackageRefused(Reason.BAD_PACKAGE, f"{name} is not JSON") from None
    if not isinstance(doc, dict):
        raise PackageRefused(Reason.BAD_PACKAGE, f"{name} is not a JSON object")
    return doc


# --- identity.json ----------------------------------------------------------------

_IDENTITY_KEYS = frozenset(
    {"mode", "tenant", "tenant_ca", "component_id", "partition_id", "component_type", "cn", "spiffe_id", "nats_subject_prefix"}
)
_GO_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ns|us|ms|s|m|h))+")  # Go's time.ParseDuration, unsigned
_POLL_IDENTITY_KEYS = _IDENTITY_KEYS | {"listen_addr"}
_PUSH_IDENTITY_KEYS = _IDENTITY_KEYS | {"gateway_addr", "gateway_server_name", "push_interval"}


def _identity(files: dict[str, MemberFile]) -> dict[str, Any]:
    """identity.json: exactly its keys, each a non-empty string of the right form."""
    identity = _json_object(files, IDENTITY)
    mode = identity.get("mode")
    if mode not in PACKAGE_MODES:
        raise PackageRefused(Reason.BAD_PACKAGE, f"{IDENTITY} mode {show_value(mode)} is not one of {', '.join(PACKAGE_MODES)}")
    keys = _PUSH_IDENTITY_KEYS if mode == "push" else _POLL_IDENTITY_KEYS
    unknown = sorted(set(identity) - keys - {"cn_form"})  # cn_form: only for a deployment CA's package
    if unknown:
        raise PackageRefused(Reason.BAD_PACKAGE, f"{IDENTITY} has unknown key(s) {', '.join(unknown)}")
    missing = sorted(k for k in keys if not isinstance(identity.get(k), str) or not identity[k])
    if missing:
        raise PackageRefused(Reason.BAD_PACKAGE, f"{IDENTITY} lacks {', '.join(missing)}")
    try:
        check_label(identity["tenant"], f"{IDENTITY} tenant")
    except InvalidName as exc:
        raise PackageRefused(Reason.BAD_PACKAGE, str(exc)) from None
    _cn_form(identity)
    if identity["component_type"] not in PACKAGE_TYPES:
        raise PackageRefused(
            Reason.BAD_PACKAGE, f"{IDENTITY} component_type {identity['component_type']!r} is not one of {PACKAGE_TYPES}"
        )
    if mode == "poll":
        try:
            split_host_port(identity["listen_addr"], listen=True)
        except InvalidArgument as exc:
            raise PackageRefused(Reason.BAD_PACKAGE, f"{IDENTITY} listen_addr: {exc}") from None
    else:
        interval = identity["push_interval"]
        if not _GO_DURATION.fullmatch(interval) or not any(c in "123456789" for c in interval):
            raise PackageRefused(Reason.BAD_PACKAGE, f"{IDENTITY} push_interval {show_value(interval)} is no positive duration")
        if identity["component_type"] != "agent":
            raise IdentityRefused(
                Reason.IDENTITY_MISMATCH, f"{IDENTITY}: a push package is an agent's, not a {identity['component_type']}'s"
            )
        try:
            split_host_port(identity["gateway_addr"])
            split_host_port(f"{_bracketed(identity['gateway_server_name'])}:1")
        except InvalidArgument as exc:
            raise PackageRefused(Reason.BAD_PACKAGE, f"{IDENTITY} gateway: {exc}") from None
    return identity


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _check_identity_names(identity: dict[str, Any], leaf: x509.Certificate) -> None:
    """identity.json against the certificate's CN, before any trust decision."""
    cn = certinfo.subject_cn(leaf) or ""
    labels = cn.split(".")
    cert_tenant = labels[2] if len(labels) == 4 else None
    tenant = identity["tenant"]
    if cert_tenant is not None and tenant != cert_tenant:
        raise IdentityRefused(
            Reason.TENANT_MISMATCH, f"{IDENTITY} says tenant {tenant!r} but the certificate is for {cert_tenant!r}"
        )
    expected = _expected_identity(identity)
    # A deployment CA's name is not derived from the tenant: _check_binding compares it with the proven CA's.
    for key, reason in (("nats_subject_prefix", Reason.TENANT_MISMATCH), ("tenant_ca", Reason.TENANT_MISMATCH)):
        if identity[key] != expected[key]:
            raise IdentityRefused(reason, f"{IDENTITY} {key} {identity[key]!r} is not tenant {tenant!r}'s {expected[key]!r}")
    if identity["cn"] != cn:
        raise IdentityRefused(Reason.IDENTITY_MISMATCH, f"{IDENTITY} cn {identity['cn']!r} is not the certificate's CN {cn!r}")


def _expected_identity(identity: dict[str, Any]) -> dict[str, Any]:
    try:
        return package_identity(
            tenant=identity["tenant"],
            component_id=identity["component_id"],
            partition_id=identity["partition_id"],
            component_type=identity["component_type"],
            gateway_addr=identity.get("gateway_addr"),
            server_name=identity.get("gateway_server_name"),
            cn_form=_cn_form(identity),
            tenant_ca=identity["tenant_ca"],
        )
    except InvalidName as exc:
        raise IdentityRefused(Reason.IDENTITY_MISMATCH, f"{IDENTITY}: {exc}") from None


def _cn_form(identity: dict[str, Any]) -> CnForm:
    """identity.json's cn_form ("tenant" when absent), read as tenant.json's is."""
    try:
        return parse_binding(json.dumps({"cn_form": identity.get("cn_form", "tenant")}).encode(), where=IDENTITY)
    except BindingError as exc:
        raise PackageRefused(Reason.BAD_PACKAGE, str(exc)) from None


def _check_binding(identity: dict[str, Any], context: TenantContext, authority: TenantAuthority) -> None:
    """identity.json's CN form is the one the certificate was proven in, and its tenant_ca the proven CA's name."""
    if context.cn_form is not _cn_form(identity):
        raise IdentityRefused(
            Reason.IDENTITY_MISMATCH, f"{IDENTITY} cn_form is {_cn_form(identity).value!r}; the certificate has the other form"
        )
    if identity["tenant_ca"] != authority.ca_cn:
        raise IdentityRefused(
            Reason.TENANT_MISMATCH, f"{IDENTITY} tenant_ca {identity['tenant_ca']!r} is not tenant's CA {authority.ca_cn!r}"
        )


def _check_spiffe(identity: dict[str, Any], context: TenantContext) -> None:
    expected = _expected_identity(identity)["spiffe_id"]
    if identity["spiffe_id"] != expected or context.spiffe_id != expected:
        raise IdentityRefused(
            Reason.IDENTITY_MISMATCH,
            f"{IDENTITY} spiffe_id {identity['spiffe_id']!r}, certificate {context.spiffe_id!r}, expected {expected!r}",
        )


# --- config.json -------------------------------------------------------------------

#: Values that name the agent: a difference there is an identity mismatch.
_IDENTITY_PATHS = frozenset({"agent_id", "partition", "security.server_name", "security.role", "gateway_security.role"})


def _check_config(config: dict[str, Any], identity: dict[str, Any]) -> None:
    """config.json must be exactly what `onboard` writes for identity.json; only host_ip is free
    (empty, or an IP address)."""
    host_ip = config.get("host_ip", DETECT_HOST_IP)
    try:
        if host_ip != LEGACY_HOST_IP_PLACEHOLDER:  # an earlier onboard's package: not refused for it
            check_host_ip(host_ip)
    except InvalidArgument as exc:
        raise PackageRefused(Reason.BAD_PACKAGE, f"{CONFIG} {exc}") from None
    names = {"component_id": identity["component_id"], "partition_id": identity["partition_id"], "host_ip": host_ip}
    if identity["mode"] == "push":
        expected = push_agent_config(
            gateway_addr=identity["gateway_addr"],
            server_name=identity["gateway_server_name"],
            push_interval=identity["push_interval"],
            **names,
        )
    else:
        expected = agent_config(
            tenant=identity["tenant"],
            component_type=identity["component_type"],
            listen_addr=identity["listen_addr"],
            cn_form=_cn_form(identity),
            **names,
        )
    _same(config, expected, "")


def _same(actual: Any, expected: Any, path: str) -> None:
    """actual is expected, key for key; the first difference is refused, named by its path."""
    where = path or CONFIG
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            raise PackageRefused(Reason.BAD_PACKAGE, f"{CONFIG} {where} is not an object")
        unknown = sorted(set(actual) - set(expected))
        if unknown:
            named = ", ".join(f"{path}.{k}" if path else k for k in unknown)
            raise PackageRefused(
                Reason.BAD_PACKAGE, f"{CONFIG} has unknown key(s) {named}: onboard never writes them and the agent refuses them"
            )
        missing = [k for k in expected if k not in actual]
        if missing:
            named = ", ".join(f"{path}.{k}" if path else k for k in missing)
            raise PackageRefused(Reason.BAD_PACKAGE, f"{CONFIG} lacks {named}")
        for key, value in expected.items():
            _same(actual[key], value, f"{path}.{key}" if path else key)
        return
    if type(actual) is not type(expected) or actual != expected:
        detail = f"{CONFIG} {where} is {show_value(actual)}; onboard writes {show_value(expected)}"
        if path in _IDENTITY_PATHS:
            raise IdentityRefused(Reason.IDENTITY_MISMATCH, detail)
        raise PackageRefused(Reason.BAD_PACKAGE, detail)


# --- authorities ---------------------------------------------------------------------


def _package_trust(tenant: str, tenant_ca: x509.Certificate, root: x509.Certificate, form: CnForm) -> TrustSnapshot:
    """A trust snapshot made of the package's own CA files (no outside proof); a
    package whose identity.json says cn_form "deployment" binds its ca.pem to
    its tenant, as tenant.json would (poller.trust.binding)."""
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
