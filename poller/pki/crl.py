"""Revocation: a per-tenant list of revoked serials and the CRL signed from it.

State lives in `tenants/<slug>/revoked.json` (serials and revocation times,
plus the last CRL number); `tenants/<slug>/crl.pem` is rewritten from it,
signed by the tenant CA.

A revocation is never lost and the CRL number never goes back, also when
crl.pem was written by another tool (`openssl ca -gencrl`): before a write the
existing crl.pem is read. Signed by the tenant CA, every entry it lists that
revoked.json lacks is carried over (serial, revocation date, reason) and
recorded in revoked.json, and the new CRL's number is above both its number and
revoked.json's. A crl.pem that does not read, that another key signed, or that
is not a complete CRL (a delta CRL, an issuingDistributionPoint, an unknown
critical extension) is refused and left as it is: nothing is written.

>>> revoke("certs", "acme-corp", "0x5f0c1a")  # doctest: +SKIP
Revocation(serial='5f0c1a', crl_path=PosixPath('certs/tenants/acme-corp/crl.pem'), already_revoked=False)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from poller.identity.names import check_label
from poller.pki.build import issued_by, serial_hex, utcnow
from poller.pki.ca import Authority, StrPath, as_layout, load_tenant_authority
from poller.pki.errors import PkiError
from poller.pki.files import read_certificate, write_public
from poller.trust.layout import CertsLayout

CRL_DAYS = 7
_HEX = re.compile(r"[0-9a-f]+")


def revocation_state_path(layout: CertsLayout, slug: str) -> Path:
    """`tenants/<slug>/revoked.json`."""
    return layout.tenant_dir(slug) / "revoked.json"


def parse_serial(text: str) -> int:
    """A serial in hex: `5f0c1a`, `0x5F0C1A`, `5f:0c:1a` -> int; PkiError otherwise."""
    cleaned = text.strip().lower()
    if cleaned.startswith("0x"):
        cleaned = cleaned[2:]
    cleaned = cleaned.replace(":", "")
    if not _HEX.fullmatch(cleaned):
        raise PkiError(f"{text!r} is neither a hex serial number nor a certificate file")
    value = int(cleaned, 16)
    if value <= 0:
        raise PkiError(f"serial {text!r} must be positive")
    return value


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_rfc3339(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _load_state(layout: CertsLayout, slug: str) -> dict[str, Any]:
    path = revocation_state_path(layout, slug)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"version": 1, "crl_number": 0, "revoked": []}
    except (OSError, ValueError) as exc:
        raise PkiError(f"{path}: unreadable revocation state ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("revoked"), list):
        raise PkiError(f"{path}: not a revocation state file")
    data.setdefault("crl_number", 0)
    return data


def _save_state(layout: CertsLayout, slug: str, state: dict[str, Any]) -> None:
    text = json.dumps(state, indent=2, sort_keys=True) + "\n"
    write_public(revocation_state_path(layout, slug), text.encode("utf-8"))


def reset_revocations(certs_dir: StrPath | CertsLayout, slug: str) -> None:
    """Forget a tenant's revocations (used when its CA is regenerated)."""
    layout = as_layout(certs_dir)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(revocation_state_path(layout, slug))


@dataclass(frozen=True, slots=True)
class Revocation:
    """The outcome of revoke(): the serial (lowercase hex) and the CRL rewritten."""

    serial: str
    crl_path: Path
    already_revoked: bool
    carried: tuple[str, ...] = ()  # serials kept from the previous crl.pem that revoked.json lacked


@dataclass(frozen=True, slots=True)
class CrlInfo:
    """A CRL written by write_crl."""

    path: Path
    number: int
    revoked: tuple[str, ...]
    next_update: datetime
    carried: tuple[str, ...] = ()  # serials kept from the previous crl.pem that revoked.json lacked


def _resolve_serial(
    slug: str, target: str | os.PathLike[str] | int | x509.Certificate, ca: x509.Certificate
) -> tuple[int, str | None]:
    """(serial, subject CN or None). A certificate must have been issued by the tenant's CA."""
    cert: x509.Certificate | None = None
    if isinstance(target, x509.Certificate):
        cert = target
    elif isinstance(target, int):
        if target <= 0:
            raise PkiError(f"serial {target} must be positive")
        return target, None
    else:
        path = Path(target)
        if isinstance(target, os.PathLike) or path.is_file():
            cert = read_certificate(path)
        else:
            return parse_serial(str(target)), None
    if not issued_by(cert, ca):
        raise PkiError(f"that certificate (serial {serial_hex(cert)}) was not issued by tenant {slug!r}'s CA")
    cns = [str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    return cert.serial_number, (cns[0] if cns else None)


def revoke(
    certs_dir: StrPath | CertsLayout,
    tenant: str,
    serial_or_certfile: str | os.PathLike[str] | int | x509.Certificate,
    *,
    crl_days: int = CRL_DAYS,
) -> Revocation:
    """Revoke a certificate of `tenant` and rewrite `tenants/<tenant>/crl.pem`.

    `serial_or_certfile`: a hex serial (`5f0c1a`, `0x5f0c1a`, `5f:0c:1a`), a path
    to a PEM/DER certificate (which must have been issued by the tenant's CA),
    an int, or an x509.Certificate. Revoking twice is harmless. The existing
    crl.pem's revocations are kept (see write_crl).

    >>> revoke("certs", "acme-corp", "certs/tenants/acme-corp/components/agent-001-partition-1.pem")  # doctest: +SKIP
    """
    layout = as_layout(certs_dir)
    check_label(tenant, "tenant slug")
    ca = load_tenant_authority(layout, tenant)
    serial, cn = _resolve_serial(tenant, serial_or_certfile, ca.cert)
    state = _load_state(layout, tenant)
    previous = _read_previous(layout, tenant, ca.cert)
    hexed = serial_hex(serial)
    already = any(entry.get("serial") == hexed for entry in state["revoked"]) or any(
        entry["serial"] == hexed for entry in previous.entries
    )
    if not already:
        entry: dict[str, Any] = {"serial": hexed, "revoked_at": _rfc3339(utcnow())}
        if cn is not None:
            entry["cn"] = cn
        state["revoked"].append(entry)
    info = _write(layout, tenant, ca, state, previous, days=crl_days)
    return Revocation(serial=hexed, crl_path=info.path, already_revoked=already, carried=info.carried)


def write_crl(certs_dir: StrPath | CertsLayout, tenant: str, *, days: int = CRL_DAYS) -> CrlInfo:
    """(Re)write `tenants/<tenant>/crl.pem`: every revoked serial, signed by the tenant CA.

    thisUpdate is now, nextUpdate now + `days`; the AuthorityKeyIdentifier is
    the tenant CA's SKI. The existing crl.pem, when there is one, must be a
    complete CRL signed by the tenant CA (PkiError otherwise, and nothing is
    written): the entries it lists that revoked.json lacks are carried over and
    recorded there, and the CRL number is one above both its number and the
    last one revoked.json recorded.

    >>> write_crl("certs", "acme-corp").path  # doctest: +SKIP
    PosixPath('certs/tenants/acme-corp/crl.pem')
    """
    layout = as_layout(certs_dir)
    check_label(tenant, "tenant slug")
    if days < 1:
        raise PkiError(f"days must be at least 1 (got {days})")
    ca = load_tenant_authority(layout, tenant)
    state = _load_state(layout, tenant)
    return _write(layout, tenant, ca, state, _read_previous(layout, tenant, ca.cert), days=days)


def write_fresh_crl(certs_dir: StrPath | CertsLayout, tenant: str, *, days: int = CRL_DAYS) -> CrlInfo:
    """Write `tenants/<tenant>/crl.pem` from revoked.json alone, replacing whatever was there.

    Only for a tenant CA whose key was just regenerated: the old crl.pem was
    signed by the key it replaces and revokes certificates the new CA never
    issued (write_crl would refuse it).
    """
    layout = as_layout(certs_dir)
    check_label(tenant, "tenant slug")
    ca = load_tenant_authority(layout, tenant)
    return _write(layout, tenant, ca, _load_state(layout, tenant), _Previous(None, ()), days=days)


@dataclass(frozen=True, slots=True)
class _Previous:
    """What the existing crl.pem holds: its number and its entries as revoked.json entries."""

    number: int | None
    entries: tuple[dict[str, Any], ...]


_KEEP = "refusing to overwrite it, as its revocations could not be kept; move it away to replace it"


def _read_previous(layout: CertsLayout, tenant: str, ca: x509.Certificate) -> _Previous:
    """The existing crl.pem (empty when there is none); PkiError when it cannot be carried over."""
    path = layout.tenant_crl(tenant)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return _Previous(None, ())
    except OSError as exc:
        raise PkiError(f"{path}: cannot read ({exc.strerror or exc}); {_KEEP}") from None
    try:
        crl = x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----") else x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise PkiError(f"{path}: not a readable PEM or DER CRL ({exc}); {_KEEP}") from None
    if crl.issuer != ca.subject or not crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
        raise PkiError(f"{path}: not signed by tenant {tenant!r}'s CA (bad signature or issuer); {_KEEP}")
    try:
        extensions = list(crl.extensions)
        listed = [(entry, list(entry.extensions)) for entry in crl]
    except ValueError as exc:  # a malformed or duplicated extension
        raise PkiError(f"{path}: unreadable CRL extensions ({exc}); {_KEEP}") from None
    why = _not_complete(extensions, listed)
    if why is not None:
        raise PkiError(
            f"{path}: {why}; its entries carried into a complete CRL could be wrong, so it is not overwritten "
            "(move it away to replace it)"
        )
    number = next((e.value.crl_number for e in extensions if isinstance(e.value, x509.CRLNumber)), None)
    where = f"crl.pem #{number}" if number is not None else "crl.pem"
    entries: dict[str, dict[str, Any]] = {}
    for revoked, entry_extensions in listed:
        carried: dict[str, Any] = {
            "serial": serial_hex(revoked.serial_number),
            "revoked_at": _rfc3339(revoked.revocation_date_utc),
            "carried_from": where,
        }
        reason = next((e.value.reason for e in entry_extensions if isinstance(e.value, x509.CRLReason)), None)
        if reason is not None:
            carried["reason"] = reason.value
        entries.setdefault(carried["serial"], carried)
    return _Previous(number, tuple(entries.values()))


def _not_complete(
    extensions: list[x509.Extension[x509.ExtensionType]],
    listed: list[tuple[x509.RevokedCertificate, list[x509.Extension[x509.ExtensionType]]]],
) -> str | None:
    """Why a CRL's entries cannot be carried into a complete CRL as they are (None: they can)."""
    for ext in extensions:
        if isinstance(ext.value, x509.DeltaCRLIndicator):
            return f"it is a delta CRL (deltaCRLIndicator, base CRL number {ext.value.crl_number})"
        if isinstance(ext.value, x509.IssuingDistributionPoint):
            return "it has an issuingDistributionPoint (a CRL of part of the CA's certificates)"
        if ext.critical and not isinstance(ext.value, (x509.CRLNumber, x509.AuthorityKeyIdentifier)):
            return f"it has the critical extension {ext.oid.dotted_string}, which would be dropped"
    for revoked, entry_extensions in listed:
        serial = serial_hex(revoked.serial_number)
        for ext in entry_extensions:
            if isinstance(ext.value, x509.CertificateIssuer):
                return f"entry {serial} names a certificateIssuer (an indirect CRL)"
            if isinstance(ext.value, x509.CRLReason) and ext.value.reason is x509.ReasonFlags.remove_from_crl:
                return f"entry {serial} has reason removeFromCRL, which only a delta CRL carries"
            if ext.critical and not isinstance(ext.value, (x509.CRLReason, x509.InvalidityDate)):
                return f"entry {serial} has the critical extension {ext.oid.dotted_string}, which would be dropped"
    return None


_MAX_CRL_NUMBER = 2**159 - 1  # RFC 5280 5.2.3: at most 20 octets


def _write(layout: CertsLayout, tenant: str, ca: Authority, state: dict[str, Any], previous: _Previous, *, days: int) -> CrlInfo:
    """Carry `previous` into `state`, sign the CRL, write crl.pem then revoked.json."""
    if days < 1:
        raise PkiError(f"days must be at least 1 (got {days})")
    known = {str(entry.get("serial")) for entry in state["revoked"]}
    carried = [entry for entry in previous.entries if entry["serial"] not in known]
    state["revoked"].extend(carried)
    try:
        recorded = int(state.get("crl_number", 0))
    except (TypeError, ValueError):
        raise PkiError(f"{revocation_state_path(layout, tenant)}: bad crl_number {state.get('crl_number')!r}") from None
    number = max(recorded, previous.number or 0) + 1
    if number > _MAX_CRL_NUMBER:
        raise PkiError(f"{layout.tenant_crl(tenant)}: CRL number {number - 1} leaves no room for a higher one")
    now = utcnow()
    next_update = now + timedelta(days=days)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    try:
        ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    except x509.ExtensionNotFound:
        pass
    serials: list[str] = []
    for entry in state["revoked"]:
        try:
            serial = parse_serial(str(entry["serial"]))
            when = _parse_rfc3339(str(entry.get("revoked_at", _rfc3339(now))))
            reason = x509.ReasonFlags(entry["reason"]) if "reason" in entry else None
        except (KeyError, ValueError, PkiError):
            raise PkiError(f"{revocation_state_path(layout, tenant)}: bad entry {entry!r}") from None
        if reason is x509.ReasonFlags.remove_from_crl:
            raise PkiError(f"{revocation_state_path(layout, tenant)}: bad entry {entry!r} (removeFromCRL)")
        revoked = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
        if reason is not None:
            revoked = revoked.add_extension(x509.CRLReason(reason), critical=False)
        builder = builder.add_revoked_certificate(revoked.build())
        serials.append(serial_hex(serial))
    crl = builder.sign(ca.key, hashes.SHA256())
    path = layout.tenant_crl(tenant)
    write_public(path, crl.public_bytes(serialization.Encoding.PEM))
    state["crl_number"] = number
    _save_state(layout, tenant, state)
    return CrlInfo(
        path=path,
        number=number,
        revoked=tuple(serials),
        next_update=next_update,
        carried=tuple(entry["serial"] for entry in carried),
    )
