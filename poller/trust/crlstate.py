"""CrlMemory: the newest CRL applied per tenant and CA key, kept across reloads
and, with a state file, across restarts.

Without it a tenant whose ca.pem is missing for one reload forgets its CRL,
and a restart forgets every CRL: an older CRL put back afterwards would lift
revocations. With it, the CRL remembered for (tenant, CA key) is the CRL in
force whenever the same CA key is loaded again, so an older CRL is refused
as older and only adds its revocations (see poller.trust.crl).

The state file is JSON, written atomically (temporary file, fsync, rename)
with mode 0600:

    {"version": 1, "crls": [{"tenant": "acme-corp", "ca_spki_sha256": "<hex>",
      "number": 12, "this_update": "2026-12-04T10:00:00Z",
      "crl_der_b64": "<the CRL itself>", "learned": ["1f2a", ...]}]}

`number` and `this_update` are for people; what counts is the CRL's DER,
whose signature is checked against the tenant's CA again before it is used,
so an edited file cannot raise the bar to a CRL the CA never signed.
`learned` are serials that refused CRLs of the same CA revoked.

>>> memory = CrlMemory(Path("/var/lib/serviceradar-poller/crl-state.json"))  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from poller.durable import atomic_write
from poller.identity.reasons import PollerError
from poller.logs import get_logger
from poller.trust.crl import CrlRefused, learn, read_crl
from poller.trust.snapshot import CrlInForce, TenantAuthority

log = get_logger("poller.trust")

STATE_VERSION = 1
STATE_MODE = 0o600

Key = tuple[str, str]  # (tenant slug, SHA-256 of the CA's SubjectPublicKeyInfo)


class CrlStateError(PollerError):
    """The state file exists but cannot be used (unreadable, not ours, or edited)."""


@dataclass(frozen=True, slots=True)
class _Stored:
    der: bytes
    learned: frozenset[int]


class CrlMemory:
    """Remembers the CRL in force per (tenant, CA key); `path` keeps it in a file."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._crls: dict[Key, CrlInForce] = {}
        self._stored: dict[Key, _Stored] = {}  # read from the file, verified on first use
        if path is not None:
            self._stored = _read(path)

    def recall(self, slug: str, ca: x509.Certificate, spki: str) -> CrlInForce | None:
        """The CRL remembered for this tenant and CA key, or None; CrlStateError when
        the stored one is not a complete CRL signed by this CA (an edited file)."""
        key = (slug, spki)
        if key in self._crls:
            return self._crls[key]
        stored = self._stored.get(key)
        if stored is None:
            return None
        try:
            crl = learn(read_crl(stored.der, ca, f"{self.path} (tenant {slug})"), stored.learned)
        except CrlRefused as exc:
            raise CrlStateError(f"{exc}; remove {self.path} to forget the remembered CRLs") from None
        self._crls[key] = crl
        return crl

    def remember(self, tenants: Iterable[TenantAuthority]) -> None:
        """Note the CRL in force of each tenant; write the file when anything changed."""
        changed = False
        for authority in tenants:
            if authority.crl is None:
                continue
            key = (authority.slug, authority.spki_sha256)
            known = self._crls.get(key)
            if known is None or known.fingerprint != authority.crl.fingerprint or known.learned != authority.crl.learned:
                self._crls[key] = authority.crl
                changed = True
        if changed and self.path is not None:
            self._write(self.path)

    def _write(self, path: Path) -> None:
        entries = {key: _Stored(crl.der, crl.learned) for key, crl in self._crls.items()}
        for key, stored in self._stored.items():  # not yet met again: kept as read
            entries.setdefault(key, stored)
        doc = {
            "version": STATE_VERSION,
            "crls": [_entry(key, stored, self._crls.get(key)) for key, stored in sorted(entries.items())],
        }
        try:
            atomic_write(path, json.dumps(doc, indent=1).encode() + b"\n", STATE_MODE)
        except OSError as exc:
            # Rollback protection then holds only until a restart; polling goes on.
            log.error("crl_state_unwritable", path=str(path), detail=exc.strerror or str(exc))


def _entry(key: Key, stored: _Stored, crl: CrlInForce | None) -> dict[str, Any]:
    doc: dict[str, Any] = {"tenant": key[0], "ca_spki_sha256": key[1]}
    if crl is not None:
        doc.update(number=crl.number, this_update=f"{crl.this_update:%Y-%m-%dT%H:%M:%SZ}")
    doc["crl_der_b64"] = base64.b64encode(stored.der).decode()
    doc["learned"] = [f"{serial:x}" for serial in sorted(stored.learned)]
    return doc


def _read(path: Path) -> dict[Key, _Stored]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CrlStateError(f"CRL state {path}: unreadable ({exc.strerror or exc})") from None
    problem = f"CRL state {path}: not a state file this poller wrote; remove it to forget the remembered CRLs"
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("version") != STATE_VERSION or not isinstance(doc.get("crls"), list):
            raise CrlStateError(problem)
        stored: dict[Key, _Stored] = {}
        for entry in doc["crls"]:
            key = (str(entry["tenant"]), str(entry["ca_spki_sha256"]))
            der = base64.b64decode(entry["crl_der_b64"], validate=True)
            stored[key] = _Stored(der, frozenset(int(serial, 16) for serial in entry["learned"]))
        return stored
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise CrlStateError(problem) from None
