"""PlatformIdentity: a proven identity of the platform, not of a tenant.

A platform identity is either

- an administrator or platform service whose certificate was issued by the
  platform services CA (certs/platform/ca.pem) with the CN
  `<name>.platform.serviceradar` (made by poller.trust.platform), or
- the poller process itself (`local=True`): the certificate and key it loaded
  as its own client identity. It is trusted because the process holds the
  key, and it is what the daemon's own sinks are registered with.

It is deliberately a different type from TenantContext: nothing that expects
a tenant's proven identity can be handed a platform one by mistake, and a
platform identity never has a tenant. Like TenantContext it can only be made
by code that verified it (or by the named test helper).

>>> parse_platform_cn("ops-admin.platform.serviceradar")
'ops-admin'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from poller.identity.context import _PROOF
from poller.identity.names import SUFFIX, InvalidName, check_label

PLATFORM_LABEL = "platform"


def parse_platform_cn(cn: str) -> str:
    """`<name>.platform.serviceradar` -> `<name>`; InvalidName for anything else."""
    if not isinstance(cn, str):
        raise InvalidName("CN is not a string")
    labels = cn.split(".")
    if len(labels) != 3 or labels[1:] != [PLATFORM_LABEL, SUFFIX]:
        raise InvalidName(f"CN {cn!r} is not a platform name (<name>.{PLATFORM_LABEL}.{SUFFIX})")
    return check_label(labels[0], "platform name")


def format_platform_cn(name: str) -> str:
    """`ops-admin` -> `ops-admin.platform.serviceradar` (validated)."""
    return f"{check_label(name, 'platform name')}.{PLATFORM_LABEL}.{SUFFIX}"


@dataclass(frozen=True, slots=True)
class PlatformIdentity:
    """Who a platform party is, as proven by its certificate (or by holding the poller's key).

    `local` is True only for the poller process's own identity; every other
    platform identity came from a verified chain. Cross-tenant access by a
    non-local identity is audited with `cn`, `serial` and `fingerprint_sha256`.
    """

    name: str
    cn: str
    serial: str
    fingerprint_sha256: str
    issuer_spki_sha256: str
    not_after: datetime
    verified_at: datetime
    local: bool = False
    _proof: object = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._proof is not _PROOF:
            raise TypeError("PlatformIdentity is made only from a verified certificate")

    def log_fields(self) -> dict[str, Any]:
        """The fields an audit line about this identity carries (never key material)."""
        return {
            "admin": self.cn,
            "admin_serial": self.serial,
            "admin_fingerprint": self.fingerprint_sha256,
        }
