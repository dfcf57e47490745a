"""Decide whether a presented certificate chain proves the expected tenant.

verify_agent_chain() is the single place where an agent's identity is
accepted. It works like go-spiffe's authorizers: a sequence of small checks,
each of which either passes or refuses with one reason code; only a chain that
passes all of them yields a TenantContext.

The anchor is the CA bound to the expected tenant, never a CA bound to another
tenant or to none (invariant 2 of docs/design.md): a tenant intermediate, or
the deployment CA that tenant.json explicitly binds to the tenant
(poller.trust.binding). With the platform root as anchor, tenant B's CA could
mint a certificate that says "acme-corp" and pass.

The CN is read in the form of the tenant's binding: a tenant intermediate's
CNs name the tenant (4 labels), which must be the expected one; a deployment
CA's CNs may omit it (3 labels: the tenant is the binding's) or name it, and
one naming another tenant is tenant_mismatch. A 3-segment SPIFFE ID is read in
the form that goes with the CN's (poller.identity.names.parse_spiffe_id).

Verify first, then read: the leaf's signature is checked against the expected
tenant CA before its CN, SAN or dates are looked at, so a certificate from a
rogue CA with the same name is always `untrusted_chain` and an attacker cannot
choose the reason the audit log records.

A tenant CA, a trust store holding it, and an agent certificate it signed
(in memory; the chain is what the agent presented, leaf first):

>>> from poller.pki.build import build_certificate, cert_pem, new_key
>>> from poller.trust.store import TrustStore
>>> ca_key = new_key()
>>> ca = build_certificate(subject_key=ca_key, subject_cn="tenant-acme-corp.ca.serviceradar", is_ca=True)
>>> store = TrustStore.from_pem(tenants={"acme-corp": cert_pem(ca)})
>>> cn = "agent-001.partition-1.acme-corp.serviceradar"
>>> leaf = build_certificate(subject_key=new_key(), subject_cn=cn, issuer_cert=ca, issuer_key=ca_key)
>>> ctx = verify_agent_chain([leaf, ca], tenant="acme-corp", trust=store.snapshot)
>>> ctx.tenant, ctx.component_id, ctx.partition_id
('acme-corp', 'agent-001', 'partition-1')

The same CN from a rogue CA of the same name is refused, and for that reason:

>>> rogue_key = new_key()
>>> rogue = build_certificate(subject_key=rogue_key, subject_cn="tenant-acme-corp.ca.serviceradar", is_ca=True)
>>> forged = build_certificate(subject_key=new_key(), subject_cn=cn, issuer_cert=rogue, issuer_key=rogue_key)
>>> verify_agent_chain([forged, rogue], tenant="acme-corp", trust=store.snapshot)  # doctest: +ELLIPSIS
Traceback (most recent call last):
poller.identity.reasons.IdentityRefused: untrusted_chain: names tenant-acme-corp.ca.serviceradar as issuer, but ...
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import ClientVerifier, Criticality, ExtensionPolicy, PolicyBuilder, Store, VerificationError

from poller.identity import certinfo
from poller.identity.certinfo import CertificateError
from poller.identity.context import _PROOF, TenantContext
from poller.identity.names import (
    COMPONENT_TYPES,
    CnForm,
    EdgeName,
    InvalidName,
    SpiffeId,
    parse_spiffe_id,
    read_edge_cn,
    spiffe_agrees_with,
)
from poller.identity.reasons import IdentityRefused, Reason
from poller.trust.snapshot import TenantAuthority, TrustSnapshot

_Refuse = Callable[[Reason, str], IdentityRefused]
_SERVER_EKUS = frozenset({ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE})
_CLIENT_EKUS = frozenset({ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE})

#: What the verified certificate is used for: an agent the poller dials is a
#: TLS server ("server"); a component calling a control-plane service is a
#: TLS client ("client"). An extendedKeyUsage, when present, must allow it.
Purpose = Literal["server", "client"]


def verify_agent_chain(
    chain: Sequence[bytes | x509.Certificate],
    *,
    tenant: str,
    trust: TrustSnapshot,
    component: str | None = None,
    partition: str | None = None,
    now: datetime | None = None,
    purpose: Purpose = "server",
) -> TenantContext:
    """Return the TenantContext the chain proves, or raise IdentityRefused.

    chain is what the agent presented, leaf first (DER bytes or parsed).
    component / partition, when given, must equal the CN's. purpose "client"
    is for a certificate presented by a TLS client (poller.server).
    """
    now = now or certinfo.utcnow()
    certs = parse_chain(chain)
    leaf = certs[0]

    def refuse(reason: Reason, detail: str) -> IdentityRefused:
        # The subject and issuer strings only for a refusal: an acceptance needs neither.
        return IdentityRefused(reason, detail, peer=certinfo.summary(leaf))

    expected = trust.tenants.get(tenant)
    if expected is None:
        raise refuse(Reason.UNTRUSTED_CHAIN, f"no CA for tenant {tenant!r} in the trust store")
    _check_signature(leaf, expected, trust, refuse)

    def refuse_signed(reason: Reason, detail: str) -> IdentityRefused:
        # The expected tenant's CA has signed the leaf: whatever fails now, that CA
        # issued it (issuer_tenant), though the names in it may prove nothing.
        return IdentityRefused(reason, detail, peer=certinfo.summary(leaf), issuer_tenant=expected.slug)

    refuse = refuse_signed
    if certinfo.is_ca(leaf):
        raise refuse(Reason.BAD_CERTIFICATE, "the presented leaf is a CA certificate")
    name = _check_cn(leaf, expected, refuse)
    spiffe = _check_spiffe(leaf, name, refuse)

    def refuse_named(reason: Reason, detail: str) -> IdentityRefused:
        # From here on the tenant's CA has signed the leaf and its names agree: what
        # fails now (the expected name, validity, revocation, path) leaves the name
        # authentic, so the refusal says whose it is.
        return IdentityRefused(reason, detail, peer=certinfo.summary(leaf), vouched=name, issuer_tenant=expected.slug)

    refuse = refuse_named
    if component is not None and name.component_id != component:
        raise refuse(Reason.IDENTITY_MISMATCH, f"component is {name.component_id!r}, expected {component!r}")
    if partition is not None and name.partition_id != partition:
        raise refuse(Reason.IDENTITY_MISMATCH, f"partition is {name.partition_id!r}, expected {partition!r}")
    _check_validity(leaf, now, refuse)
    check_revocation(leaf, expected, trust, now, refuse)
    check_anchor(leaf, expected, trust, now, refuse)
    _check_path(leaf, certs[1:], expected, now, refuse, purpose)

    component_type = spiffe.component_type if spiffe else None
    if spiffe is not None and component_type is None and spiffe.component_id in COMPONENT_TYPES:
        component_type = spiffe.component_id  # 3-segment form: first segment is the type
    return TenantContext(
        tenant=name.tenant,
        component_id=name.component_id,
        partition_id=name.partition_id,
        component_type=component_type,
        spiffe_id=spiffe.uri if spiffe else None,
        serial=certinfo.serial_hex(leaf),
        fingerprint_sha256=certinfo.fingerprint_sha256(leaf),
        issuer_spki_sha256=expected.spki_sha256,
        not_after=certinfo.not_after(leaf),
        verified_at=now,
        cn_form=name.form,
        _proof=_PROOF,
    )


def parse_chain(chain: Sequence[bytes | x509.Certificate]) -> list[x509.Certificate]:
    """Parsed certificates, leaf first; a bad or empty chain is a bad_certificate refusal."""
    if not chain:
        raise IdentityRefused(Reason.BAD_CERTIFICATE, "the agent presented no certificate")
    try:
        return [c if isinstance(c, x509.Certificate) else certinfo.load_der(c) for c in chain]
    except CertificateError as exc:
        raise IdentityRefused(Reason.BAD_CERTIFICATE, str(exc)) from None


def check_revocation(
    leaf: x509.Certificate, expected: TenantAuthority, trust: TrustSnapshot, now: datetime, refuse: _Refuse | None = None
) -> None:
    """The CRL part of the proof, also used alone by live re-checks: on the
    tenant's CRL -> revoked; CRL past nextUpdate (or absent under require_crl),
    or a partitioned CRL whose distribution points the leaf's
    cRLDistributionPoints do not name (CrlInForce.covers) -> crl_expired,
    since revocation cannot be decided (fail closed). A CRL without
    nextUpdate is never stale.
    `expected` is the CA whose key signed leaf (the proof checked that first)."""
    refuse = refuse or (
        lambda reason, detail: IdentityRefused(reason, detail, peer=certinfo.summary(leaf), issuer_tenant=expected.slug)
    )
    crl = expected.crl
    if crl is None:
        if trust.require_crl:
            raise refuse(Reason.CRL_EXPIRED, f"tenant {expected.slug} has no CRL loaded and require_crl is set")
        return
    if leaf.serial_number in crl.serials:
        raise refuse(Reason.REVOKED, f"serial {certinfo.serial_hex(leaf)} is on {expected.ca_cn}'s CRL")
    if crl.stale(now):
        assert crl.next_update is not None
        raise refuse(Reason.CRL_EXPIRED, f"{expected.ca_cn}'s CRL is past its nextUpdate ({crl.next_update:%Y-%m-%dT%H:%M:%SZ})")
    if not crl.covers(leaf):
        points = crl.scope_text()
        raise refuse(
            Reason.CRL_EXPIRED,
            f"{expected.ca_cn}'s CRL is only for distribution point {points} (issuingDistributionPoint), which the"
            f" certificate's cRLDistributionPoints do not name: its revocation cannot be decided",
        )


def ca_not_after(ca: x509.Certificate, root: x509.Certificate | None) -> datetime:
    """When a CA stops anchoring: its notAfter, or the root's when the root issued
    it and ends first (a TLS handshake validates up to the root). By issuer name:
    a cap can only end a proof sooner, and a CA that names the root without its
    signature fails the handshake anyway."""
    end = certinfo.not_after(ca)
    if root is not None and ca.issuer == root.subject and ca != root:
        end = min(end, certinfo.not_after(root))
    return end


def anchor_not_after(expected: TenantAuthority, trust: TrustSnapshot) -> datetime:
    """When the anchor of `expected`'s agents stops being valid (ca_not_after).
    A leaf's own notAfter may outlive it: an external or openssl-made CA need not cap it."""
    return ca_not_after(expected.cert, trust.root)


def proof_deadline(not_after: datetime, expected: TenantAuthority | None, trust: TrustSnapshot) -> datetime:
    """When a tenant proof stops holding by the clock alone: the first of the leaf's
    `not_after`, its anchor's (anchor_not_after) and the tenant CRL's nextUpdate.
    One rule for a server's long-lived calls and cached proofs and for the dial side."""
    end = not_after
    if expected is not None:
        end = min(end, anchor_not_after(expected, trust))
        if expected.crl_next_update is not None:
            end = min(end, expected.crl_next_update)
    return end


def anchor_expired(leaf: x509.Certificate, expected: TenantAuthority, end: datetime, when: str = "") -> IdentityRefused:
    """The refusal of a leaf (signed by `expected`'s key) whose anchor ended at
    `end`: untrusted_chain, the reason path validation gives for an expired CA."""
    which = expected.ca_cn if end == certinfo.not_after(expected.cert) else f"the root that issued {expected.ca_cn}"
    return IdentityRefused(
        Reason.UNTRUSTED_CHAIN,
        f"{which} expired at {end:%Y-%m-%dT%H:%M:%SZ}{when}",
        peer=certinfo.summary(leaf),
        issuer_tenant=expected.slug,
    )


def check_anchor(
    leaf: x509.Certificate, expected: TenantAuthority, trust: TrustSnapshot, now: datetime, refuse: _Refuse | None = None
) -> None:
    """The anchor's validity part of the proof, also used alone by live
    re-checks: past anchor_not_after -> untrusted_chain."""
    end = anchor_not_after(expected, trust)
    if now > end:
        refusal = anchor_expired(leaf, expected, end)
        raise refuse(refusal.reason, refusal.detail) if refuse is not None else refusal


def _check_signature(leaf: x509.Certificate, expected: TenantAuthority, trust: TrustSnapshot, refuse: _Refuse) -> None:
    """The leaf must be signed by the expected tenant CA's key before anything
    in it is believed. Otherwise: another tenant's CA verifiably signed it
    (tenant_mismatch), or nobody we trust did (untrusted_chain, whatever the
    names in it claim). Only the first names an issuer_tenant: the tenant
    whose CA's key signed it."""
    if expected.issued(leaf):
        return
    other = trust.issuer_tenant(leaf)
    if other is not None:
        # A deployment CA's name may be anything (often the same for all of them): say whose it is.
        issuer = other.ca_cn if other.cn_form is CnForm.TENANT else f"{other.ca_cn} (tenant {other.slug}'s deployment CA)"
        refusal = refuse(Reason.TENANT_MISMATCH, f"issued by {issuer}, not by {expected.ca_cn}")
        refusal.issuer_tenant = other.slug
        raise refusal
    if trust.root is not None and certinfo.issued_by(leaf, trust.root):
        raise refuse(
            Reason.UNTRUSTED_CHAIN,
            f"issued by the platform root directly, not by {expected.ca_cn} (a root is an anchor only "
            f"where it is bound to the tenant as its deployment CA)",
        )
    if certinfo.issued_by(leaf, leaf):
        raise refuse(Reason.UNTRUSTED_CHAIN, "self-signed certificate")
    if leaf.issuer == expected.cert.subject:
        algorithm = certinfo.unverified_signature_algorithm(leaf)
        if algorithm is not None:
            # Not a forgery as far as anyone can tell: its signature cannot be checked at all.
            raise refuse(
                Reason.UNTRUSTED_CHAIN,
                f"names {expected.ca_cn} as issuer, but is signed with {algorithm}, which is not supported "
                f"(SHA-1 and MD5 signatures are refused), so that CA's signature cannot be checked",
            )
        raise refuse(Reason.UNTRUSTED_CHAIN, f"names {expected.ca_cn} as issuer, but that CA's key did not sign it")
    raise refuse(Reason.UNTRUSTED_CHAIN, f"not signed by {expected.ca_cn}")


def _check_cn(leaf: x509.Certificate, expected: TenantAuthority, refuse: _Refuse) -> EdgeName:
    names = certinfo.common_names(leaf)
    if len(names) != 1:
        raise refuse(Reason.INVALID_CN, f"subject has {len(names)} CNs, expected exactly 1")
    try:
        # A deployment CN's tenant is the binding's; a 4-label CN names its own.
        name = read_edge_cn(names[0], tenant=expected.slug, form=expected.cn_form)
    except InvalidName as exc:
        raise refuse(Reason.INVALID_CN, str(exc)) from None
    if name.tenant != expected.slug:
        # Issued by the expected CA but naming another tenant (invariant 4 of docs/design.md).
        raise refuse(Reason.TENANT_MISMATCH, f"CN names tenant {name.tenant!r} but was issued by {expected.ca_cn}")
    return name


def _check_spiffe(leaf: x509.Certificate, name: EdgeName, refuse: _Refuse) -> SpiffeId | None:
    found = certinfo.spiffe_uris(leaf)
    if not found:
        return None
    if len(found) > 1:
        raise refuse(Reason.IDENTITY_MISMATCH, f"{len(found)} SPIFFE IDs in the SAN, expected at most 1")
    try:
        spiffe = parse_spiffe_id(found[0], cn_form=name.form)
    except InvalidName as exc:
        raise refuse(Reason.IDENTITY_MISMATCH, f"SPIFFE SAN is not a ServiceRadar ID: {exc}") from None
    if not spiffe_agrees_with(spiffe, name):
        raise refuse(Reason.IDENTITY_MISMATCH, f"SPIFFE ID {found[0]} disagrees with CN {name.cn}")
    return spiffe


def _check_validity(leaf: x509.Certificate, now: datetime, refuse: _Refuse) -> None:
    if now < certinfo.not_before(leaf):
        raise refuse(Reason.NOT_YET_VALID, f"valid from {certinfo.not_before(leaf):%Y-%m-%dT%H:%M:%SZ}")
    if now > certinfo.not_after(leaf):
        raise refuse(Reason.EXPIRED, f"expired at {certinfo.not_after(leaf):%Y-%m-%dT%H:%M:%SZ}")


def _check_path(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    expected: TenantAuthority,
    now: datetime,
    refuse: _Refuse,
    purpose: Purpose,
) -> None:
    """Full RFC 5280 path validation to the tenant anchor (signatures, name
    constraints, CA extensions, algorithms) by cryptography's verifier."""
    try:
        path_verifier(expected.cert, now, purpose).verify(leaf, intermediates)
    except VerificationError as exc:
        raise refuse(Reason.UNTRUSTED_CHAIN, f"path validation to {expected.ca_cn} failed: {path_failure(exc)}") from None


def path_failure(exc: VerificationError) -> str:
    """What a path validation failure says, made plain where cryptography's
    words are not: it cannot evaluate nameConstraints subtrees of URI or
    directoryName type, and refuses the chain rather than ignore them (fail
    closed; docs/design.md)."""
    text = str(exc)
    if "unsupported name constraint" in text or "unsupported directoryName constraint" in text:
        return (
            "the CA's nameConstraints hold a URI or directoryName subtree, which is not supported "
            "(only DNS, IP address and email subtrees are evaluated), so the chain is refused "
            f"rather than the constraint ignored ({text})"
        )
    return text


def path_verifier(anchor: x509.Certificate, now: datetime, purpose: Purpose = "server") -> ClientVerifier:
    """cryptography's verifier with `anchor` as the only trust anchor, a leaf
    directly under it (depth 2), and the extension rules below; shared by the
    tenant and the platform (poller.trust.platform) proofs."""
    # What matters here is signatures, validity, CA constraints and name
    # constraints. Extensions that other tools leave out (a CA without
    # keyUsage, a leaf without AKI or SAN: the identity is in the CN and the
    # handshake pins it) may be absent, but when present they must fit.
    #
    # The verifier is a client verifier whatever the purpose (a server verifier
    # would match a DNS name, and the identity is the CN), so both its
    # purpose-bound defaults are replaced: the leaf's extendedKeyUsage and the
    # CA's (cryptography's own CA rule asks clientAuth of every CA) follow
    # `purpose`, as Go and OpenSSL chain them. A CA without the extension
    # allows any purpose.
    #
    # A CA's basicConstraints must be there and say CA:TRUE, but may be
    # non-critical: RFC 5280 asks issuers to mark it critical, yet OpenSSL's
    # `-addext`/`-extfile` recipes do not, and Go and OpenSSL accept such CAs.
    # The rule replaced here held cryptography's cA check; the verifier checks
    # cA and pathLenConstraint again outside the extension policy, and
    # _require_ca_flag keeps the rule itself whole.
    ee = (
        ExtensionPolicy.webpki_defaults_ee()
        .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
        .may_be_present(x509.AuthorityKeyIdentifier, Criticality.AGNOSTIC, None)
        .may_be_present(
            x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _require_server_eku if purpose == "server" else _require_client_eku
        )
    )
    ca = (
        ExtensionPolicy.webpki_defaults_ca()
        .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, _require_cert_sign)
        .may_be_present(x509.AuthorityKeyIdentifier, Criticality.AGNOSTIC, None)
        .require_present(x509.BasicConstraints, Criticality.AGNOSTIC, _require_ca_flag)
        .may_be_present(
            x509.ExtendedKeyUsage,
            Criticality.NON_CRITICAL,
            _require_ca_server_eku if purpose == "server" else _require_ca_client_eku,
        )
    )
    return (
        PolicyBuilder()
        .store(Store([anchor]))
        .time(now)
        .max_chain_depth(2)
        .extension_policies(ca_policy=ca, ee_policy=ee)
        .build_client_verifier()
    )


def _require_ca_flag(policy: object, cert: x509.Certificate, constraints: x509.BasicConstraints) -> None:
    if not constraints.ca:
        raise ValueError("basicConstraints does not say CA:TRUE, so this certificate cannot issue certificates")


def _require_cert_sign(policy: object, cert: x509.Certificate, usage: x509.KeyUsage | None) -> None:
    if usage is not None and not usage.key_cert_sign:
        raise ValueError("CA keyUsage does not allow keyCertSign")


def _eku_rule(allowed: frozenset[x509.ObjectIdentifier], refusal: str) -> Callable[[object, x509.Certificate, Any], None]:
    """An extension-policy validator: an extendedKeyUsage, when present, must hold one of `allowed`."""

    def rule(policy: object, cert: x509.Certificate, eku: x509.ExtendedKeyUsage | None) -> None:
        if eku is not None and not (allowed & set(eku)):
            raise ValueError(refusal)

    return rule


_require_server_eku = _eku_rule(_SERVER_EKUS, "extendedKeyUsage does not allow serverAuth")
_require_client_eku = _eku_rule(_CLIENT_EKUS, "extendedKeyUsage does not allow clientAuth")
_require_ca_server_eku = _eku_rule(
    _SERVER_EKUS, "the CA's extendedKeyUsage does not allow serverAuth, so it cannot vouch for a TLS server"
)
_require_ca_client_eku = _eku_rule(
    _CLIENT_EKUS, "the CA's extendedKeyUsage does not allow clientAuth, so it cannot vouch for a TLS client"
)
