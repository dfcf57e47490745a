"""How a tenant's CA is bound to it: `tenants/<slug>/tenant.json` (no I/O).

Without the file (or with `{"cn_form": "tenant"}`) a tenant's CA is a tenant
intermediate: its CN must be `tenant-<slug>.ca.serviceradar` and the CNs it
issues name the tenant (`<component>.<partition>.<slug>.serviceradar`).

`{"cn_form": "deployment"}` binds the CA in `ca.pem` to the tenant
explicitly: ServiceRadar's later releases run one deployment per tenant, with
one CA (often a self-signed root, any CN) issuing CNs without a tenant label
(`<component>.<partition>.serviceradar`). For that tenant only, such a CN
proves the tenant of the binding. Nothing else makes a CA an anchor: a root
elsewhere in the layout never is, unless it is itself bound like this.

A file that is not exactly that (unknown keys, other values, not a JSON
object) is refused, like any other unreadable piece of trust material.

>>> parse_binding(b'{"cn_form": "deployment"}', where="tenants/acme-corp/tenant.json")
<CnForm.DEPLOYMENT: 'deployment'>
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from cryptography import x509

from poller.identity import certinfo
from poller.identity.certinfo import CertificateError
from poller.identity.names import CnForm, InvalidName, parse_tenant_ca_cn
from poller.identity.reasons import PollerError
from poller.trust.snapshot import TenantAuthority

#: tenant.json is a few bytes; anything much larger is not one.
MAX_BINDING_BYTES = 4096
_KEYS = frozenset({"cn_form"})


class BindingError(PollerError, ValueError):
    """A tenant.json that is not a valid binding."""


def parse_binding(data: bytes, *, where: str) -> CnForm:
    """The CN form a tenant.json declares; BindingError naming `where` otherwise."""
    if len(data) > MAX_BINDING_BYTES:
        raise BindingError(f"{where}: {len(data)} bytes, more than a tenant binding ({MAX_BINDING_BYTES})")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BindingError(f"{where}: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise BindingError(f'{where}: must be a JSON object such as {{"cn_form": "deployment"}}')
    unknown = sorted(set(doc) - _KEYS)
    if unknown:
        raise BindingError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))} (allowed: cn_form)")
    value = doc.get("cn_form", CnForm.TENANT.value)
    try:
        return CnForm(value) if isinstance(value, str) else CnForm("")
    except ValueError:
        allowed = ", ".join(repr(f.value) for f in CnForm)
        raise BindingError(f"{where}: cn_form {value!r} is not one of {allowed}") from None


def ca_problem(slug: str, cert: x509.Certificate, form: CnForm, where: str) -> str | None:
    """Why `cert` cannot be tenant `slug`'s CA under `form`, or None.

    A tenant-form CA must be named `tenant-<slug>.ca.serviceradar`. A
    deployment CA may have any name, except another tenant's CA name: that
    would bind tenant B's intermediate to tenant A.
    """
    cn = certinfo.subject_cn(cert) or ""
    try:
        named: str | None = parse_tenant_ca_cn(cn)
    except InvalidName as exc:
        if form is CnForm.DEPLOYMENT:
            return None
        return (
            f"{where}: {exc}; a deployment CA (e.g. a self-signed root) needs "
            f'tenants/{slug}/tenant.json with {{"cn_form": "deployment"}}'
        )
    if named != slug:
        return f"{where}: CA is for tenant {named!r} but lives in tenants/{slug}/"
    return None


def same_key_problem(first: TenantAuthority, second: TenantAuthority) -> str:
    """The message for one CA key found under two tenants (the certs directory is unusable)."""
    if CnForm.DEPLOYMENT in (first.cn_form, second.cn_form):
        return (
            f"one CA (the same key) is bound to two tenants, {first.slug!r} and {second.slug!r}: "
            "a deployment CA proves exactly one tenant"
        )
    return f"tenants {first.slug!r} and {second.slug!r} have CAs with the same public key"


def platform_bound_problems(tenants: Iterable[TenantAuthority], platform_ca_pem: bytes | None) -> list[str]:
    """A deployment CA must not be the platform services CA: the platform
    names it issues (`<name>.platform.serviceradar`) would read as edge CNs."""
    bound = [t for t in tenants if t.cn_form is CnForm.DEPLOYMENT]
    if not bound or platform_ca_pem is None:
        return []
    try:
        platform = certinfo.load_pem_chain(platform_ca_pem, what="platform CA")[0]
    except CertificateError:
        return []  # reported where the platform CA is used
    spki = certinfo.spki_sha256(platform)
    return [
        f"tenant {t.slug!r}: its deployment CA is the platform services CA (platform/ca.pem); bind a CA of its own"
        for t in bound
        if t.spki_sha256 == spki
    ]
