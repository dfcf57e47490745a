"""The trust material in force, as immutable values (no I/O).

A TrustSnapshot holds what a poller trusts at one moment: the platform root,
each tenant's intermediate CA with the CRL in force for it, and the poller's
own client identity. Sources (a certs directory, PEM bytes from a database)
build snapshots; dialers and re-checks only read them.

>>> snapshot.tenants["acme-corp"].crl_loaded  # doctest: +SKIP
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509

from poller.identity import certinfo
from poller.identity.names import CnForm


@dataclass(frozen=True, slots=True)
class CrlInForce:
    """The CRL applied to one tenant's agents (its signature was verified).

    `serials` are the revoked serials applied: the CRL's own and `learned`
    ones, which CRLs signed by the same CA but refused (older, delta,
    scope-limited) revoked; see poller.trust.crl. `der` is the CRL itself.

    `scope`: None for a CRL complete for every leaf of its CA; else the
    distribution point names its issuingDistributionPoint names (a
    partitioned CRL, RFC 5280 §5.2.5), and it is complete only for the
    leaves whose cRLDistributionPoints name one of them (`covers`)."""

    serials: frozenset[int]
    number: int | None
    this_update: datetime
    next_update: datetime | None
    fingerprint: str
    learned: frozenset[int] = frozenset()
    der: bytes = field(default=b"", repr=False, compare=False)
    scope: frozenset[x509.GeneralName] | None = None

    def covers(self, leaf: x509.Certificate) -> bool:
        """True if this CRL decides the revocation of `leaf` (RFC 5280 §6.3.3 (b)(2)):
        a CRL without a distribution point name covers every leaf of its CA; a
        partitioned one only a leaf with a cRLDistributionPoints entry that names
        one of its points (GeneralNames compared exactly, URIs as strings). An
        entry with a cRLIssuer (another CRL's issuer) or with reasons (a CRL for
        some reasons only) never matches; a leaf with no (readable)
        cRLDistributionPoints is not covered."""
        if self.scope is None:
            return True
        try:
            points = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        except (x509.ExtensionNotFound, ValueError):
            return False
        for point in points:
            if point.crl_issuer is not None or point.reasons is not None:
                continue
            if not self.scope.isdisjoint(point_names(point.full_name, point.relative_name, leaf.issuer)):
                return True
        return False

    def scope_text(self) -> str:
        """The distribution point names of `scope`, for messages ('' when complete)."""
        texts = (n.value.rfc4514_string() if isinstance(n.value, x509.Name) else str(n.value) for n in self.scope or ())
        return ", ".join(sorted(texts))

    def stale(self, now: datetime) -> bool:
        """True once nextUpdate has passed: the list may miss revocations."""
        return self.next_update is not None and now > self.next_update


def point_names(
    full_name: list[x509.GeneralName] | None, relative_name: x509.RelativeDistinguishedName | None, issuer: x509.Name
) -> frozenset[x509.GeneralName]:
    """The names of a distribution point: its fullName, or its nameRelativeToCRLIssuer
    appended to the issuer's name as a directoryName (RFC 5280 §4.2.1.13, §5.2.5)."""
    if full_name is not None:
        return frozenset(full_name)
    if relative_name is not None:
        return frozenset({x509.DirectoryName(x509.Name([*issuer.rdns, relative_name]))})
    return frozenset()


@dataclass(frozen=True, slots=True)
class TenantAuthority:
    """One tenant's CA: the only anchor for that tenant's agents. Its
    `cn_form` is the tenant's binding (poller.trust.binding): TENANT for a
    tenant intermediate, DEPLOYMENT for a CA explicitly bound as the tenant's
    deployment CA (edge CNs without a tenant label)."""

    slug: str
    cert: x509.Certificate
    pem: bytes
    spki_sha256: str
    crl: CrlInForce | None = None
    cn_form: CnForm = CnForm.TENANT

    @property
    def ca_cn(self) -> str:
        return certinfo.subject_cn(self.cert) or ""

    @property
    def revoked_serials(self) -> frozenset[int]:
        return self.crl.serials if self.crl is not None else frozenset()

    @property
    def crl_next_update(self) -> datetime | None:
        return self.crl.next_update if self.crl is not None else None

    @property
    def crl_loaded(self) -> bool:
        return self.crl is not None

    def issued(self, cert: x509.Certificate) -> bool:
        """True if this CA's key signed cert (names and signature both match)."""
        return certinfo.issued_by(cert, self.cert)

    def same_anchor(self, other: TenantAuthority | None) -> bool:
        """True if other is the same CA bound the same way (only its CRL may differ)."""
        return other is not None and other.cert == self.cert and other.cn_form is self.cn_form


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """The poller's own certificate chain and key (the key is never logged)."""

    cert: x509.Certificate
    chain_pem: bytes
    key_pem: bytes = field(repr=False)

    @property
    def cn(self) -> str:
        return certinfo.subject_cn(self.cert) or ""

    @property
    def fingerprint(self) -> str:
        return certinfo.fingerprint_sha256(self.cert)


@dataclass(frozen=True, slots=True)
class TrustSnapshot:
    """Everything trusted at one moment. It is also a (frozen) TrustSource:
    `snapshot` returns itself, so a snapshot can be passed to dial_agent."""

    root: x509.Certificate | None
    tenants: Mapping[str, TenantAuthority]
    client: ClientIdentity | None
    warnings: tuple[str, ...] = ()
    by_spki: Mapping[str, TenantAuthority] = field(default_factory=dict)
    require_crl: bool = False
    refused: tuple[str, ...] = ()  # CRLs refused while building it (the CRL in force kept, revocations added)

    @property
    def snapshot(self) -> TrustSnapshot:
        return self

    def tenant_by_spki(self, spki_sha256: str) -> TenantAuthority | None:
        """The tenant whose intermediate has this public key (SHA-256 of its SPKI)."""
        return self.by_spki.get(spki_sha256)

    def issuer_tenant(self, cert: x509.Certificate) -> TenantAuthority | None:
        """The tenant whose intermediate signed cert, if any (signature checked)."""
        for authority in self.tenants.values():
            if authority.issued(cert):
                return authority
        return None
