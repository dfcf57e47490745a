"""Revocation: a per-tenant list of revoked serials and the CRL signed from it.

State lives in `tenants/<slug>/revoked.json` (serials and revocation times,
plus the last CRL number); `tenants/<slug>/crl.pem` is always rewritten from
it, signed by the tenant CA.

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
from poller.pki.ca import StrPath, as_layout, load_tenant_authority
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


@dataclass(frozen=True, slots=True)
class CrlInfo:
    """A CRL written by write_crl."""

    path: Path
    number: int
    revoked: tuple[str, ...]
    next_update: datetime


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
    an int, or an x509.Certificate. Revoking twice is harmless.

    >>> revoke("certs", "acme-corp", "certs/tenants/acme-corp/components/agent-001-partition-1.pem")  # doctest: +SKIP
    """
    layout = as_layout(certs_dir)
    check_label(tenant, "tenant slug")
    ca = load_tenant_authority(layout, tenant)
    serial, cn = _resolve_serial(tenant, serial_or_certfile, ca.cert)
    state = _load_state(layout, tenant)
    hexed = serial_hex(serial)
    already = any(entry.get("serial") == hexed for entry in state["revoked"])
    if not already:
        entry: dict[str, Any] = {"serial": hexed, "revoked_at": _rfc3339(utcnow())}
        if cn is not None:
            entry["cn"] = cn
        state["revoked"].append(entry)
        _save_state(layout, tenant, state)
    info = write_crl(layout, tenant, days=crl_days)
    return Revocation(serial=hexed, crl_path=info.path, already_revoked=already)


def write_crl(certs_dir: StrPath | CertsLayout, tenant: str, *, days: int = CRL_DAYS) -> CrlInfo:
    """(Re)write `tenants/<tenant>/crl.pem`: every revoked serial, signed by the tenant CA.

    thisUpdate is now, nextUpdate now + `days`; CRLNumber increases with each
    write; the AuthorityKeyIdentifier is the tenant CA's SKI.

    >>> write_crl("certs", "acme-corp").path  # doctest: +SKIP
    PosixPath('certs/tenants/acme-corp/crl.pem')
    """
    layout = as_layout(certs_dir)
    check_label(tenant, "tenant slug")
    if days < 1:
        raise PkiError(f"days must be at least 1 (got {days})")
    ca = load_tenant_authority(layout, tenant)
    state = _load_state(layout, tenant)
    number = int(state.get("crl_number", 0)) + 1
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
        except (KeyError, ValueError, PkiError):
            raise PkiError(f"{revocation_state_path(layout, tenant)}: bad entry {entry!r}") from None
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
        serials.append(serial_hex(serial))
    crl = builder.sign(ca.key, hashes.SHA256())
    path = layout.tenant_crl(tenant)
    write_public(path, crl.public_bytes(serialization.Encoding.PEM))
    state["crl_number"] = number
    _save_state(layout, tenant, state)
    return CrlInfo(path=path, number=number, revoked=tuple(serials), next_update=next_update)
