"""The fixed vocabulary of refusals, and the errors that carry it.

Every identity decision that is not an acceptance is an IdentityRefused with
one of these reason codes; the codes appear verbatim in logs, metrics, errors
and the CLI's JSON. Details describe certificates, never keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class Reason(StrEnum):
    UNTRUSTED_CHAIN = "untrusted_chain"
    TENANT_MISMATCH = "tenant_mismatch"
    INVALID_CN = "invalid_cn"
    IDENTITY_MISMATCH = "identity_mismatch"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    REVOKED = "revoked"
    BAD_CERTIFICATE = "bad_certificate"
    UNREACHABLE = "unreachable"
    # Onboarding packages (poller.onboard): what is wrong with the archive itself.
    BAD_PACKAGE = "bad_package"
    INCOMPLETE_PACKAGE = "incomplete_package"
    UNEXPECTED_MEMBER = "unexpected_member"
    UNSAFE_MEMBER = "unsafe_member"
    KEY_MISMATCH = "key_mismatch"
    FORBIDDEN_MATERIAL = "forbidden_material"

    def __str__(self) -> str:
        return self.value


class PollerError(Exception):
    """Base of the errors this package raises on purpose."""

    reason: Reason

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class IdentityRefused(PollerError):
    """The peer did not prove the expected identity; reason says why.

    `peer` describes the certificate that was presented (subject, serial,
    fingerprint) when one could be read, for the audit log.

    >>> err = IdentityRefused(Reason.TENANT_MISMATCH, "issued by tenant-xyz-inc.ca.serviceradar")
    >>> err.reason.value
    'tenant_mismatch'
    """

    def __init__(self, reason: Reason, detail: str, *, peer: Mapping[str, str] | None = None) -> None:
        super().__init__(reason, detail)
        self.peer: dict[str, str] = dict(peer or {})


class AgentUnreachable(PollerError):
    """No identity decision could be made: connect, handshake or call failed.

    `code` is the gRPC status name when a call failed (e.g. DEADLINE_EXCEEDED).
    """

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(Reason.UNREACHABLE, detail)
        self.code = code
