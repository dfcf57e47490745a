"""The fixed vocabulary of outcomes, and the errors of this package.

`Reason` is the one vocabulary for why something was not (or was) a proven
answer: identity refusals, reachability, a result's outcome, a CLI's JSON
`reason`. The codes appear verbatim in logs, metrics, results and the CLI's
JSON. Details describe certificates, never keys.

Every error the package raises on purpose derives from `PollerError`. Those
about an agent (`AgentFailure`: refused, unreachable, incomplete stream) carry
a `reason`; the others (bad config, bad name, bad certificate file, ...) are
plain `PollerError`s, most also `ValueError`s.

>>> try:
...     raise IdentityRefused(Reason.TENANT_MISMATCH, "issued by tenant-xyz-inc.ca.serviceradar")
... except PollerError as err:
...     print(err.reason, err.reason.is_refusal)
tenant_mismatch True
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from poller.identity.names import EdgeName

_DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"


class Reason(StrEnum):
    """Why an agent gave no proven answer, or the outcome of a poll.

    The first members are identity refusals (`is_refusal`); the others say
    what else happened. New members are added at the end only.
    """

    UNTRUSTED_CHAIN = "untrusted_chain"
    TENANT_MISMATCH = "tenant_mismatch"
    INVALID_CN = "invalid_cn"
    IDENTITY_MISMATCH = "identity_mismatch"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    REVOKED = "revoked"
    BAD_CERTIFICATE = "bad_certificate"
    #: No identity decision could be made: connect, handshake or call failed.
    UNREACHABLE = "unreachable"
    #: The agent was proven but did not answer within the deadline.
    TIMEOUT = "timeout"
    #: The agent's health service said NOT_SERVING (or anything but SERVING).
    NOT_SERVING = "not_serving"
    #: The agent answered bytes that do not decode as the expected message.
    INVALID_PAYLOAD = "invalid_payload"
    #: A StreamResults stream did not deliver a whole document.
    INCOMPLETE_STREAM = "incomplete_stream"
    #: A bug or an unexpected failure in the poller itself (logged with traceback).
    INTERNAL_ERROR = "internal_error"
    #: Outcome of an agent that was proven and answered.
    OK = "ok"
    #: Outcome of an agent whose identity was refused (any of the refusal reasons).
    REFUSED = "refused"
    #: A command was called wrongly (CLI exit code 2).
    USAGE = "usage"
    #: The agent was proven and answered that the checked service is not available.
    UNAVAILABLE = "unavailable"
    #: Issue 6: the tenant's CRL is past its nextUpdate (or, with require_crl, absent;
    #: or it is a partitioned CRL that does not cover the certificate), so
    #: revocation cannot be decided: fail closed.
    CRL_EXPIRED = "crl_expired"
    # Delivery and authorization (poller.delivery, poller.policy, poller.server):
    #: A payload names a tenant other than the proven one (invariant 3).
    PAYLOAD_MISMATCH = "payload_mismatch"
    #: Reported agent_id / partition differ from the proof, and the agent asks for strict labels.
    LABEL_MISMATCH = "label_mismatch"
    #: The identity is proven, but a policy does not allow it.
    POLICY_DENIED = "policy_denied"
    #: No registered handler's policy allows the result (deny by default).
    NO_HANDLER = "no_handler"
    #: A result's kind or service type has no channel (not a subject token).
    INVALID_CHANNEL = "invalid_channel"
    #: A handler raised.
    HANDLER_FAILED = "handler_failed"
    #: A handler did not finish within its timeout.
    HANDLER_TIMEOUT = "handler_timeout"
    #: Delivery (poller.nats): a subject that is not <tenant-slug>.<channel>.
    INVALID_SUBJECT = "invalid_subject"
    #: Delivery (poller.nats): an unusable NATS credentials file.
    BAD_CREDENTIALS = "bad_credentials"
    #: Onboarding packages (poller.onboard): the archive is not a readable package.
    BAD_PACKAGE = "bad_package"
    #: A package lacks a required member.
    INCOMPLETE_PACKAGE = "incomplete_package"
    #: A package holds a member that is not part of a package (an extra file).
    UNEXPECTED_MEMBER = "unexpected_member"
    #: A member that could write elsewhere or expose something: link, device, '..', duplicate, readable key.
    UNSAFE_MEMBER = "unsafe_member"
    #: A package's private key is not the key of its certificate.
    KEY_MISMATCH = "key_mismatch"
    #: Material that must never be handed out: a private key outside the key file.
    FORBIDDEN_MATERIAL = "forbidden_material"
    #: Issue 10: the poller had not yet dialed the agent when the cycle ended (its
    #: dial waited for a slot of the daemon's dial gate): not a failure of the agent.
    PENDING = "pending"
    #: The gateway (poller.gateway): a proven agent that is not listed as a push agent
    #: (and gateway.accept_unlisted is off).
    UNKNOWN_AGENT = "unknown_agent"
    #: The gateway: a request over a bound (services per request, message size,
    #: push rate, connections per tenant); answered RESOURCE_EXHAUSTED.
    RESOURCE_EXHAUSTED = "resource_exhausted"

    def __str__(self) -> str:
        return self.value

    @property
    def is_refusal(self) -> bool:
        """True for the reasons an identity is refused (REFUSED included)."""
        return self in _REFUSALS


_REFUSALS = frozenset(
    {
        Reason.UNTRUSTED_CHAIN,
        Reason.TENANT_MISMATCH,
        Reason.INVALID_CN,
        Reason.IDENTITY_MISMATCH,
        Reason.EXPIRED,
        Reason.NOT_YET_VALID,
        Reason.REVOKED,
        Reason.BAD_CERTIFICATE,
        Reason.REFUSED,
        Reason.CRL_EXPIRED,
    }
)


class PollerError(Exception):
    """Base of every error this package raises on purpose.

    >>> issubclass(AgentUnreachable, PollerError)
    True
    """


class AgentFailure(PollerError):
    """No proven answer from an agent; `reason` names why, `detail` explains.

    `outcome` is the reason a poll result carries for it (finer than
    `reason` for some failures, e.g. TIMEOUT for an unreachable call that
    hit its deadline).
    """

    reason: Reason

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail

    @property
    def outcome(self) -> Reason:
        return self.reason


class IdentityRefused(AgentFailure):
    """The peer did not prove the expected identity; reason says why.

    `peer` describes the certificate that was presented (subject, serial,
    fingerprint) when one could be read, for the audit log. `vouched` is the
    identity the certificate names when its tenant's CA signed it and its
    names agree, so that only its validity, revocation or path failed (a
    revoked or expired agent): that identity is authentic, not proven now, and
    a refusal may say whose it is. None for every refusal that proves nothing
    about the name (another CA, a bad signature, a CN naming another tenant).

    `issuer_tenant` is the tenant whose registered CA's key signed the
    certificate (its signature verified under that CA), whatever the names in
    it say: a CN that is no identity, names another tenant, or disagrees with
    its SPIFFE ID is still that CA's doing. It says who issued the
    certificate, never whose agent it is (that is `vouched`, when known).
    None when no registered tenant CA's key signed it (an unknown CA, a
    forged issuer name, the root).

    >>> err = IdentityRefused(Reason.TENANT_MISMATCH, "issued by tenant-xyz-inc.ca.serviceradar", issuer_tenant="xyz-inc")
    >>> err.reason.value, err.vouched, err.issuer_tenant
    ('tenant_mismatch', None, 'xyz-inc')
    """

    def __init__(
        self,
        reason: Reason,
        detail: str,
        *,
        peer: Mapping[str, str] | None = None,
        vouched: EdgeName | None = None,
        issuer_tenant: str | None = None,
    ) -> None:
        super().__init__(reason, detail)
        self.peer: dict[str, str] = dict(peer or {})
        self.vouched = vouched
        self.issuer_tenant = issuer_tenant


class PermissionDenied(PollerError):
    """A proven identity that a policy does not allow (reason policy_denied).

    >>> PermissionDenied(Reason.POLICY_DENIED, "same_tenant(acme-corp): tenant is xyz-inc").reason.value
    'policy_denied'
    """

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class ResultRefused(PollerError):
    """A result that may not be delivered (payload_mismatch, label_mismatch, no_handler, invalid_channel).

    >>> ResultRefused(Reason.NO_HANDLER, "no handler allows it").reason.value
    'no_handler'
    """

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class AgentUnreachable(AgentFailure):
    """No identity decision could be made: connect, handshake or call failed.

    `code` is the gRPC status name when a call failed (e.g. DEADLINE_EXCEEDED),
    None otherwise. `reason` is always UNREACHABLE.

    >>> AgentUnreachable("GetStatus: DEADLINE_EXCEEDED", code="DEADLINE_EXCEEDED").outcome
    <Reason.TIMEOUT: 'timeout'>
    """

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(Reason.UNREACHABLE, detail)
        self.code = code

    @property
    def outcome(self) -> Reason:
        return Reason.TIMEOUT if self.code == _DEADLINE_EXCEEDED else self.reason


class IncompleteStream(AgentFailure):
    """A stream that did not deliver a whole document (reason INCOMPLETE_STREAM).

    >>> IncompleteStream("stream broke off after 3 chunks").reason
    <Reason.INCOMPLETE_STREAM: 'incomplete_stream'>
    """

    def __init__(self, detail: str) -> None:
        super().__init__(Reason.INCOMPLETE_STREAM, detail)


class InvalidPayload(AgentUnreachable):
    """The agent answered, but its bytes are not the message expected (no gRPC code)."""

    @property
    def outcome(self) -> Reason:
        return Reason.INVALID_PAYLOAD


class InvalidArgument(PollerError, ValueError):
    """A function was given a value it cannot use (a caller's mistake, not an agent's).

    >>> isinstance(InvalidArgument("port 70000 out of range"), ValueError)
    True
    """
