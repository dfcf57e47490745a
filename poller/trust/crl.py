"""The CRL policy: which CRLs a poller applies, and how a new one meets the one in force.

Verify first, then read: a CRL counts only when its tenant's CA signed it.
Then it must be a complete CRL for the leaves that CA issues (RFC 5280
§5.2, §6.3.3), or for a named part of them; one that is refused as a whole still has its revocations
applied, because a revocation signed by the tenant's CA is never ignored:

- a delta CRL (deltaCRLIndicator) is refused: it lists only the changes
  since a base CRL, so loading it as complete would lift every revocation
  it does not repeat;
- an issuingDistributionPoint that limits the scope is refused:
  onlyContainsCACerts, onlyContainsAttributeCerts, onlySomeReasons,
  indirectCRL. onlyContainsUserCerts is accepted, since the agents checked
  against a tenant CRL are all end-entity certificates;
- an issuingDistributionPoint that names distribution points (a partitioned
  CRL, or a CA that names the one it publishes at, as ADCS and EJBCA do) is
  applied as complete for the leaves whose cRLDistributionPoints name one of
  them (CrlInForce.scope, CrlInForce.covers, RFC 5280 §6.3.3); every other
  leaf of the tenant is refused with crl_expired, as revocation cannot be
  decided for it;
- any critical extension other than those (CRL or entry) is refused, and so
  is a certificateIssuer entry (indirect CRLs) or a removeFromCRL entry
  (only delta CRLs may carry one).

A CRL whose thisUpdate is later than now (more than CLOCK_SKEW) is refused
as not yet valid, as OpenSSL does. A CRL without nextUpdate is never stale.

A CRL that is not newer than the one in force is refused as older: by CRL
number when both have one, else by thisUpdate; one without a number never
replaces a numbered one. The CRL in force stays with its validity, and the
serials the refused CRL revokes are added to it (`learned`), so a CA that
backdates a CRL never has a revocation ignored.

>>> crl = read_crl(pem, ca_cert, "tenants/acme-corp/crl.pem")  # doctest: +SKIP
>>> kept, problem = supersede(crl, in_force, "tenants/acme-corp/crl.pem")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from poller.identity import certinfo
from poller.identity.reasons import PollerError
from poller.trust.serving import CLOCK_SKEW
from poller.trust.snapshot import CrlInForce, point_names

# Non-critical or understood CRL extensions; anything else that is critical is refused.
_UNDERSTOOD = (x509.CRLNumber, x509.AuthorityKeyIdentifier, x509.IssuerAlternativeName, x509.IssuingDistributionPoint)
_UNDERSTOOD_ENTRY = (x509.CRLReason, x509.InvalidityDate)


class CrlRefused(PollerError):
    """A CRL that is not applied as the tenant's CRL. `revoked` holds the
    serials it revokes when its signature verified (to be added to the CRL in
    force), else it is empty."""

    def __init__(self, message: str, revoked: frozenset[int] = frozenset(), *, signed: bool = False) -> None:
        super().__init__(message)
        self.revoked = revoked
        self.signed = signed  # the tenant's CA signed it: its revocations count


def read_crl(data: bytes, ca: x509.Certificate, where: str, *, now: datetime | None = None) -> CrlInForce:
    """The CRL in `data` (PEM, or DER), signed by `ca` and complete; CrlRefused otherwise.
    `now`: also refuse a CRL not yet valid then (thisUpdate later than now + CLOCK_SKEW)."""
    try:
        crl = x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----") else x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise CrlRefused(f"{where}: not a readable PEM CRL ({exc})") from None
    ca_cn = certinfo.subject_cn(ca) or ca.subject.rfc4514_string()
    if crl.issuer != ca.subject or not crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
        raise CrlRefused(f"{where}: not signed by {ca_cn} (bad signature or issuer)")
    try:
        extensions = list(crl.extensions)
        entries = [(entry.serial_number, list(entry.extensions)) for entry in crl]
    except ValueError as exc:  # a malformed or duplicated extension
        raise CrlRefused(f"{where}: unreadable CRL extensions ({exc})") from None
    revoked = frozenset(serial for serial, ext in entries if not _removes(ext))
    why = _incomplete(extensions, entries)
    if why is not None:
        raise CrlRefused(f"{where}: refused, {why}; only a complete CRL replaces the one in force", revoked, signed=True)
    if now is not None and crl.last_update_utc > now + CLOCK_SKEW:
        raise CrlRefused(
            f"{where}: refused, not yet valid: its thisUpdate {_when(crl.last_update_utc)} is after this host's clock"
            f" ({_when(now)}, allowing {CLOCK_SKEW.total_seconds() / 60:g} minutes of skew); check the CA's clock",
            revoked,
            signed=True,
        )
    number = next((e.value.crl_number for e in extensions if isinstance(e.value, x509.CRLNumber)), None)
    der = crl.public_bytes(serialization.Encoding.DER)
    idp = next((e.value for e in extensions if isinstance(e.value, x509.IssuingDistributionPoint)), None)
    scope = None
    if idp is not None and (idp.full_name is not None or idp.relative_name is not None):
        scope = point_names(idp.full_name, idp.relative_name, crl.issuer)
    return CrlInForce(
        serials=revoked,
        number=number,
        this_update=crl.last_update_utc,
        next_update=crl.next_update_utc,
        fingerprint=hashlib.sha256(der).hexdigest(),
        der=der,
        scope=scope,
    )


def _removes(extensions: list[x509.Extension[x509.ExtensionType]]) -> bool:
    return any(isinstance(e.value, x509.CRLReason) and e.value.reason is x509.ReasonFlags.remove_from_crl for e in extensions)


def _incomplete(
    extensions: list[x509.Extension[x509.ExtensionType]],
    entries: list[tuple[int, list[x509.Extension[x509.ExtensionType]]]],
) -> str | None:
    """Why this CRL is not a complete CRL for the CA's leaves (None: it is)."""
    for ext in extensions:
        value = ext.value
        if isinstance(value, x509.DeltaCRLIndicator):
            return f"a delta CRL (deltaCRLIndicator, base CRL number {value.crl_number})"
        if isinstance(value, x509.IssuingDistributionPoint):
            limits = _scope_limits(value)
            if limits:
                return f"its issuingDistributionPoint limits its scope ({', '.join(limits)})"
        elif ext.critical and not isinstance(value, _UNDERSTOOD):
            return f"unknown critical extension {ext.oid.dotted_string}"
    for serial, entry in entries:
        for ext in entry:
            if isinstance(ext.value, x509.CertificateIssuer):
                return f"entry {serial:x} names a certificateIssuer (an indirect CRL)"
            if ext.critical and not isinstance(ext.value, _UNDERSTOOD_ENTRY):
                return f"entry {serial:x} has unknown critical extension {ext.oid.dotted_string}"
        if _removes(entry):
            return f"entry {serial:x} has reason removeFromCRL, which only a delta CRL carries"
    return None


def _scope_limits(idp: x509.IssuingDistributionPoint) -> list[str]:
    # A distribution point name limits the scope too, but to leaves that can be
    # told apart (CrlInForce.covers): such a CRL is applied, only to them.
    limits = []
    if idp.only_contains_ca_certs:
        limits.append("onlyContainsCACerts")
    if idp.only_contains_attribute_certs:
        limits.append("onlyContainsAttributeCerts")
    if idp.only_some_reasons is not None:
        limits.append("onlySomeReasons")
    if idp.indirect_crl:
        limits.append("indirectCRL")
    return limits


def supersede(new: CrlInForce, in_force: CrlInForce | None, where: str) -> tuple[CrlInForce, str | None]:
    """The CRL to keep when `new` arrives, and why `new` was refused (None: it
    replaced the one in force). Serials learned from refused CRLs stay."""
    if in_force is None:
        return new, None
    if new.fingerprint == in_force.fingerprint:
        return learn(new, in_force.learned), None
    older = _older(new, in_force)
    if older is None:
        return learn(new, in_force.learned), None
    return refuse_older(in_force, new.serials, f"{where}: refused as a rollback ({older})")


def refuse_older(in_force: CrlInForce, revoked: frozenset[int], problem: str) -> tuple[CrlInForce, str]:
    """Keep the CRL in force (its validity) and add the serials a refused CRL revokes."""
    added = revoked - in_force.serials
    kept = learn(in_force, added)
    if added:
        return kept, f"{problem}; its {len(added)} revoked serial(s) missing from the CRL in force were added to it"
    return kept, f"{problem}; the CRL in force stays (it already revokes every serial this one does)"


def learn(crl: CrlInForce, serials: frozenset[int]) -> CrlInForce:
    """crl with serials learned from refused CRLs added (kept across newer CRLs)."""
    learned = crl.learned | serials
    if learned == crl.learned and learned <= crl.serials:
        return crl
    return dataclasses.replace(crl, serials=crl.serials | learned, learned=learned)


def _older(new: CrlInForce, in_force: CrlInForce) -> str | None:
    """What shows that `new` is older than the CRL in force (None: it is not)."""
    if new.number is not None and in_force.number is not None:
        if new.number < in_force.number:
            return f"CRL number {new.number} is below the CRL in force's number {in_force.number}"
        if new.number == in_force.number and new.this_update < in_force.this_update:
            return (
                f"CRL number {new.number} equals the CRL in force's, and its thisUpdate {_when(new.this_update)}"
                f" is before {_when(in_force.this_update)}"
            )
        return None
    if in_force.number is not None:
        return f"it has no CRL number and the CRL in force has number {in_force.number}: it cannot show it is newer"
    if new.this_update < in_force.this_update:
        missing = "neither has a CRL number" if new.number is None else f"the CRL in force has no number, this one {new.number}"
        before = _when(in_force.this_update)
        return f"thisUpdate {_when(new.this_update)} is before the CRL in force's thisUpdate {before}; {missing}"
    return None


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%dT%H:%M:%SZ}"
