"""PollResult: one check's outcome, stamped with the proven identity.

A result either came over a proven connection (context is set, and its tenant
is the only tenant it may be published under) or says that no answer could be
had (context is None: unreachable, refused, timed out). A refusal's details
stay in the audit log; the result carries only the reason code, so that one
tenant's stream never learns about another tenant's CAs or agents.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from typing import Any

from poller.delivery.payload import NOT_JSON, decode_payload
from poller.identity.context import TenantContext
from poller.identity.reasons import InvalidArgument, Reason

__all__ = ["REPORTED_LABELS", "PollResult", "agent_outcome"]

#: The agent's own labels, kept as reported values (never as identity).
REPORTED_LABELS = ("agent_id", "partition")
_UNSET: Any = object()


@dataclass(frozen=True, slots=True)
class PollResult:
    """One check's (or health probe's) outcome for one agent, stamped with the proven identity.

    `context` is the proof (None: no answer could be had, and `reason` says why);
    `tenant` must be the proven tenant when there is one.

    >>> PollResult("acme-corp", "edge-1", "10.0.0.5:50051", "poller-1", "default",
    ...            "status", "ping", "icmp", available=False, reason=Reason.UNREACHABLE).proven
    False
    """

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
    # What the agent said about itself (the response's agent_id field). Kept
    # beside the proven identity, never in its place (invariant 3).
    reported_agent_id: str = ""
    # Pushed by the agent through the gateway (poller.gateway), not polled: its
    # NATS Msg-Id comes from the agent and its timestamp, not from this replica.
    pushed: bool = False
    # A pushed status's place in its request or stream (0, 1, ...). ServiceRadar's
    # agent sends a large sweep as chunks whose one status each has the same name,
    # type and timestamp; the position keeps their Msg-Ids apart, and a retry of
    # the same request still gives the same ids.
    push_position: int = 0

    def __post_init__(self) -> None:
        # Invariant 6 of docs/design.md: a proven result belongs to its proven tenant, full stop.
        if self.context is not None and self.context.tenant != self.tenant:
            raise InvalidArgument(f"result for tenant {self.tenant!r} carries the identity of {self.context.tenant!r}")

    @property
    def proven(self) -> bool:
        return self.context is not None

    def payload_json(self) -> Any:
        """The payload decoded as JSON, or None when it is empty or not JSON
        (strict UTF-8 JSON only; see poller.delivery.payload.decode_payload)."""
        if not self.payload:
            return None
        document = decode_payload(self.payload)
        return None if document is NOT_JSON else document

    def reported_labels(self, document: Any = _UNSET) -> dict[str, str]:
        """agent_id / partition as the agent reported them (response field, then its JSON).

        Pass the already decoded payload as `document` to avoid decoding it twice.
        """
        labels: dict[str, str] = {}
        if self.reported_agent_id:
            labels["agent_id"] = self.reported_agent_id
        doc = self.payload_json() if document is _UNSET else document
        if isinstance(doc, dict):
            for key in REPORTED_LABELS:
                value = doc.get(key)
                if isinstance(value, str) and value and key not in labels:
                    labels[key] = value
        return labels

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
        data = self.payload_json()
        reported = self.reported_labels(data)
        if reported:
            doc["reported"] = reported
        if self.payload:
            # The agent's JSON as JSON; anything else base64, so nothing is lost.
            if data is not None or self.payload.strip() == b"null":
                doc["data"] = data
            else:
                doc["data_b64"] = base64.b64encode(self.payload).decode("ascii")
        return doc


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
