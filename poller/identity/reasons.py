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
    # Delivery and authorization (handlers, policies, the server interceptor):
    # appended so that the codes above keep their order.
    PAYLOAD_MISMATCH = "payload_mismatch"  # a payload names a tenant other than the proven one
    LABEL_MISMATCH = "label_mismatch"  # reported agent_id/partition differ from the proof (strict_labels)
    POLICY_DENIED = "policy_denied"  # the identity is proven but a policy does not allow it
    NO_HANDLER = "no_handler"  # no registered handler's policy allows the result
    INVALID_CHANNEL = "invalid_channel"  # a result's service type is not a channel token
    HANDLER_FAILED = "handler_failed"  # a handler raised
    HANDLER_TIMEOUT = "handler_timeout"  # a handler did not finish within its timeout

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


class PermissionDenied(PollerError):
    """A proven identity that a policy does not allow (reason policy_denied).

    >>> PermissionDenied(Reason.POLICY_DENIED, "tenant xyz-inc is not acme-corp").reason.value
    'policy_denied'
    """


class ResultRefused(PollerError):
    """A result that may not be delivered (payload_mismatch, label_mismatch, no_handler ...)."""


class AgentUnreachable(PollerError):
    """No identity decision could be made: connect, handshake or call failed.

    `code` is the gRPC status name when a call failed (e.g. DEADLINE_EXCEEDED).
    """

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(Reason.UNREACHABLE, detail)
        self.code = code
