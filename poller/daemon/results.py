"""PollResult: one check's outcome, stamped with the proven identity.

A result either came over a proven connection (context is set, and its tenant
is the only tenant it may be published under) or says that no answer could be
had (context is None: unreachable, refused, timed out). A refusal's details
stay in the audit log; the result carries only the reason code, so that one
tenant's stream never learns about another tenant's CAs or agents.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any

from poller.identity.context import TenantContext
from poller.identity.reasons import InvalidArgument, Reason


@dataclass(frozen=True, slots=True)
class PollResult:
    tenant: str
    agent: str
    address: str
    poller_id: str
    partition: str
    kind: str  # "status" | "results" | "stream" | "health"
    service_name: str
    service_type: str
    available: bool
    context: TenantContext | None = None
    reason: Reason | None = None
    payload: bytes = b""
    response_time_ns: int = 0
    current_sequence: str = ""
    agent_timestamp: int = 0
    polled_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        # Invariant 6 of docs/design.md: a proven result belongs to its proven tenant, full stop.
        if self.context is not None and self.context.tenant != self.tenant:
            raise InvalidArgument(f"result for tenant {self.tenant!r} carries the identity of {self.context.tenant!r}")

    @property
    def proven(self) -> bool:
        return self.context is not None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "tenant": self.tenant,
            "agent": self.agent,
            "address": self.address,
            "poller_id": self.poller_id,
            "partition": self.partition,
            "kind": self.kind,
            "service_name": self.service_name,
            "service_type": self.service_type,
            "available": self.available,
            "proven": self.proven,
            "polled_at": round(self.polled_at, 3),
        }
        if self.context is not None:
            doc["identity"] = self.context.as_dict()
        if self.reason:
            doc["reason"] = self.reason
        if self.response_time_ns:
            doc["response_time_ns"] = self.response_time_ns
        if self.current_sequence:
            doc["current_sequence"] = self.current_sequence
        if self.agent_timestamp:
            doc["agent_timestamp"] = self.agent_timestamp
        if self.payload:
            doc.update(_payload_field(self.payload))
        return doc


def _payload_field(payload: bytes) -> dict[str, Any]:
    """The agent's JSON as JSON; anything else base64, so nothing is lost."""
    try:
        return {"data": json.loads(payload)}
    except (UnicodeDecodeError, ValueError):
        return {"data_b64": base64.b64encode(payload).decode("ascii")}


def agent_outcome(results: list[PollResult]) -> Reason:
    """One agent's outcome for one cycle, from the results of its checks.

    REFUSED when any check saw its identity refused; OK when every result came
    over a proven connection with an answer (a service the agent reports down
    is still an answer); otherwise the first reason the agent gave no proven
    answer (unreachable, timeout, not_serving, invalid_payload, ...).

    >>> agent_outcome([])
    <Reason.OK: 'ok'>
    """
    if any(r.reason is not None and r.reason.is_refusal for r in results):
        return Reason.REFUSED
    for r in results:
        if not r.proven or r.reason not in _ANSWERED:
            return r.reason or Reason.INTERNAL_ERROR
    return Reason.OK


_ANSWERED = frozenset({None, Reason.UNAVAILABLE})
