"""Test helper: a PollResult with plausible defaults, proven by an UNVERIFIED context.

>>> sample_result(payload=b'{"up": true}').proven, sample_result(proven=False).reason
(True, <Reason.UNREACHABLE: 'unreachable'>)
"""

from __future__ import annotations

from typing import Any

from poller.delivery.result import PollResult
from poller.identity.reasons import Reason
from poller.testing.identity import unverified_tenant_context

__all__ = ["sample_result"]


def sample_result(tenant: str = "acme-corp", *, proven: bool = True, **fields: Any) -> PollResult:
    """A status result of agent edge-1 for `tenant`; `fields` override any PollResult field.

    proven=True stamps it with unverified_tenant_context(tenant); proven=False makes
    it an unanswered (unreachable) result without a context.
    """
    values: dict[str, Any] = dict(
        tenant=tenant,
        agent="edge-1",
        address="10.0.0.5:50051",
        poller_id="poller-1",
        partition="default",
        kind="status",
        service_name="ping",
        service_type="icmp",
        available=proven,
        context=unverified_tenant_context(tenant) if proven else None,
        reason=None if proven else Reason.UNREACHABLE,
    )
    values.update(fields)
    return PollResult(**values)
