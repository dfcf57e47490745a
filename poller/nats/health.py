"""Agent health transitions, read from the results as they pass by.

An agent is in one of three states: connected (its last result carried a
proven identity), refused (its identity was refused, with a reason) or
unreachable. A change of state is one event on `<tenant>.events.poller.health`:
accepted (first proof), refused (with its reason), unreachable, recovered
(proven again after refused or unreachable) and rotated (proven with another
certificate). Nothing is emitted while the state stays the same.

>>> tracker = HealthTracker()
>>> [m.subject for m in tracker.observe(result)]  # doctest: +SKIP
['acme-corp.events.poller.health']
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from poller.delivery.result import PollResult
from poller.identity.reasons import Reason
from poller.nats.messages import CHANNEL_HEALTH, Message, encode
from poller.nats.subjects import tenant_subject

__all__ = ["HealthEvent", "HealthTracker"]

_UNREACHABLE = frozenset({Reason.UNREACHABLE, Reason.TIMEOUT})


class HealthEvent(StrEnum):
    ACCEPTED = "accepted"
    REFUSED = "refused"
    UNREACHABLE = "unreachable"
    RECOVERED = "recovered"
    ROTATED = "rotated"


@dataclass(frozen=True, slots=True)
class _State:
    kind: str  # "connected" | "refused" | "unreachable"
    detail: str  # fingerprint when connected, else the reason


class HealthTracker:
    """Remembers each agent's state; observe() returns the transition a result makes, if any."""

    def __init__(self) -> None:
        self._states: dict[tuple[str, str], _State] = {}

    def observe(self, result: PollResult) -> list[Message]:
        new = _state_of(result)
        if new is None:
            return []  # a call-level problem (invalid payload, not serving...): no change of connection state
        key = (result.tenant, result.agent)
        old = self._states.get(key)
        self._states[key] = new
        event = _transition(old, new)
        return [] if event is None else [_message(result, event, new)]

    def forget(self, tenant: str, agent: str) -> None:
        self._states.pop((tenant, agent), None)


def _state_of(result: PollResult) -> _State | None:
    if result.context is not None:
        return _State("connected", result.context.fingerprint_sha256)
    if result.reason is not None and Reason(result.reason).is_refusal:
        return _State("refused", str(result.reason))
    if result.reason in _UNREACHABLE:
        return _State("unreachable", "")  # a timeout and a refused connection are the same state
    return None


def _transition(old: _State | None, new: _State) -> HealthEvent | None:
    if new.kind == "connected":
        if old is None:
            return HealthEvent.ACCEPTED
        if old.kind != "connected":
            return HealthEvent.RECOVERED
        return HealthEvent.ROTATED if old.detail != new.detail else None
    if old == new:
        return None
    return HealthEvent.REFUSED if new.kind == "refused" else HealthEvent.UNREACHABLE


def _message(result: PollResult, event: HealthEvent, state: _State) -> Message:
    doc: dict[str, object] = {
        "tenant": result.tenant,
        "agent": result.agent,
        "address": result.address,
        "poller_id": result.poller_id,
        "kind": "health",
        "event": event.value,
        "proven": result.context is not None,
        "at": round(result.polled_at, 3),
    }
    if state.kind != "connected":
        doc["reason"] = result.reason
    if result.context is not None:
        doc["identity"] = result.context.as_dict()
    return Message(
        tenant=result.tenant,
        subject=tenant_subject(result.tenant, CHANNEL_HEALTH),
        msg_id=f"{result.poller_id}/{result.agent}/health/{event.value}/{result.polled_at:.6f}",
        payload=encode(doc),
    )
