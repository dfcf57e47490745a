"""TenantContext: the identity proven for one agent connection.

A TenantContext is made only by the chain verifier (poller.trust.verify) from
a certificate that passed verification, or by the explicitly named test helper
poller.testing.unverified_tenant_context.

current_tenant() returns it exactly where it is bound:
- in client interceptors placed after the tenant interceptor, for the duration
  of a call on a pinned channel (poller.dial.interceptor);
- inside `with reply.bound():` for an AgentReply or StreamDocument (the way
  for a library user's own code to run as the reply's tenant);
- inside `with bound_tenant(ctx):` (any proven context);
- inside a handler run by poller.delivery.HandlerRegistry (the daemon's sinks
  included): the result's proven context (not for unproven results:
  unreachable, refused, timed out);
- inside a server handler behind poller.server.TenantServerInterceptor, and
  tasks it starts: the caller's proven context.
Anywhere else it raises LookupError.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from poller.identity.names import SUFFIX, CnForm

# Held only by modules that verify (and by the named test helper): a
# TenantContext built without it raises, so a tenant cannot be made up from
# strings by accident or by a payload.
_PROOF = object()


@dataclass(frozen=True, slots=True)
class TenantContext:
    """Who an agent is, as proven by its verified certificate.

    Code running for an agent reads it with current_tenant(), where one is
    bound (see the module docstring); here the named test helper's context
    stands in for a proven one:

    >>> from poller.testing import unverified_tenant_context
    >>> with bound_tenant(unverified_tenant_context("acme-corp", "agent-001")):
    ...     ctx = current_tenant()
    >>> ctx.tenant, ctx.component_id, ctx.cn
    ('acme-corp', 'agent-001', 'agent-001.partition-1.acme-corp.serviceradar')
    >>> current_tenant()
    Traceback (most recent call last):
    LookupError: no TenantContext bound: not in a call, a reply.bound() block or a result's handler
    """

    tenant: str
    component_id: str
    partition_id: str
    component_type: str | None
    spiffe_id: str | None
    serial: str
    fingerprint_sha256: str
    issuer_spki_sha256: str
    not_after: datetime
    verified_at: datetime
    #: DEPLOYMENT when the CN carried no tenant and the tenant came from the
    #: issuing CA's binding (poller.trust.binding).
    cn_form: CnForm = CnForm.TENANT
    _proof: object = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._proof is not _PROOF:
            raise TypeError("TenantContext is made only from a verified certificate")

    @property
    def cn(self) -> str:
        # The parts were validated when proven.
        if self.cn_form is CnForm.DEPLOYMENT:
            return f"{self.component_id}.{self.partition_id}.{SUFFIX}"
        return f"{self.component_id}.{self.partition_id}.{self.tenant}.{SUFFIX}"

    def as_dict(self) -> dict[str, Any]:
        """The identity fields as JSON-ready values (the probe contract's keys)."""
        return {
            "tenant": self.tenant,
            "component_id": self.component_id,
            "partition_id": self.partition_id,
            "component_type": self.component_type,
            "spiffe_id": self.spiffe_id,
            "serial": self.serial,
            "fingerprint_sha256": self.fingerprint_sha256,
            "issuer_spki_sha256": self.issuer_spki_sha256,
            "not_after": format_time(self.not_after),
        }

    def log_fields(self) -> dict[str, Any]:
        """The fields every log line about this agent carries."""
        return {
            "tenant": self.tenant,
            "component": self.component_id,
            "partition": self.partition_id,
            "serial": self.serial,
            "fingerprint": self.fingerprint_sha256,
        }


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a Z, seconds precision."""
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


_current: contextvars.ContextVar[TenantContext | None] = contextvars.ContextVar("poller_tenant", default=None)


def current_tenant() -> TenantContext:
    """The TenantContext bound here (see the module docstring); LookupError where none is."""
    ctx = _current.get()
    if ctx is None:
        raise LookupError("no TenantContext bound: not in a call, a reply.bound() block or a result's handler")
    return ctx


@contextmanager
def bound_tenant(ctx: TenantContext) -> Iterator[TenantContext]:
    """Make ctx the current_tenant() for the duration of the block."""
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)
