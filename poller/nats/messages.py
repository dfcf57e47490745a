"""What goes on the bus: channel, subject, deterministic Msg-Id and payload of each message.

The payload of a result is the same JSON as a line of the file sink
(`PollResult.to_json()`), so a consumer can read either. The Msg-Id is derived
from the result itself (poller, agent, check, sequence, poll time; for a pushed
result the agent's proven name, its own timestamp and the status's place in the
request or stream, not the replica), so a
retried publish of the same result carries the same id and JetStream stores it
once; the outbox keeps the id with the row, so a replay after a restart does too.

>>> channel_for(result)  # doctest: +SKIP
'agents.results.sweep'
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

# The channel of a result is the handler registry's decision (one function for
# both): the sink publishes on exactly the channel the registry checked.
from poller.delivery.channels import CHANNEL_HEALTH, CHANNEL_HEARTBEAT, CHANNEL_RESULTS, CHANNEL_STATUS, channel_for
from poller.delivery.result import PollResult
from poller.nats.subjects import tenant_subject

__all__ = [
    "CHANNEL_HEALTH",
    "CHANNEL_HEARTBEAT",
    "CHANNEL_RESULTS",
    "CHANNEL_STATUS",
    "Message",
    "channel_for",
    "encode",
    "heartbeat_message",
    "result_message",
]


@dataclass(frozen=True, slots=True)
class Message:
    """One message for one tenant's stream."""

    tenant: str
    subject: str
    msg_id: str
    payload: bytes


def encode(doc: dict[str, Any]) -> bytes:
    """Compact JSON, exactly as the file sink writes a line (without the newline)."""
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("utf-8")


_PLAIN = re.compile(r"[A-Za-z0-9=._-]*")


def _id_part(part: str) -> str:
    """A Msg-Id part, percent-encoded unless plain: a '/' inside a name cannot blur two ids."""
    return part if _PLAIN.fullmatch(part) else quote(part, safe="=.-_")


def _stamp(at: float) -> str:
    return f"{at:.6f}"


def result_message(result: PollResult) -> Message:
    """The message of a result; raises SubjectError (tenant) or ResultRefused (invalid_channel)
    if it cannot make a subject."""
    if result.pushed and result.context is not None and result.agent_timestamp:
        # Pushed: whichever gateway replica took it (an agent may push again to
        # another after a reconnect), the agent and its own timestamp name it.
        parts = ["push", result.context.cn, result.kind, result.service_type, result.service_name]
        parts.append(f"at={result.agent_timestamp}")
        parts.append(f"n={result.push_position}")
    else:
        parts = [result.poller_id, result.agent, result.kind, result.service_type, result.service_name]
        if result.current_sequence:
            parts.append(f"seq={result.current_sequence}")
        parts.append(_stamp(result.polled_at))
    return Message(
        tenant=result.tenant,
        subject=tenant_subject(result.tenant, channel_for(result)),
        msg_id="/".join(_id_part(part) for part in parts),
        payload=encode(result.to_json()),
    )


def heartbeat_message(tenant: str, *, poller_id: str, at: float, interval: float, agents: int) -> Message:
    """`<tenant>.pollers.heartbeat`: this poller serves this tenant, and how often it says so."""
    doc = {
        "tenant": tenant,
        "poller_id": poller_id,
        "kind": "heartbeat",
        "at": round(at, 3),
        "interval": interval,
        "agents": agents,
    }
    return Message(
        tenant=tenant,
        subject=tenant_subject(tenant, CHANNEL_HEARTBEAT),
        msg_id=f"{poller_id}/heartbeat/{_stamp(at)}",
        payload=encode(doc),
    )
