"""Delivery on NATS JetStream: tenant subjects, a durable outbox, the JetStream sink and the account layout.

The subject helpers load with the package; the sink, outbox and credentials
(which bring in nats-py and sqlite3) load on first use.

>>> from poller.nats import tenant_subject, tenant_from_subject
>>> tenant_subject("acme-corp", "agents.status")
'acme-corp.agents.status'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from poller._lazy import lazy_names
from poller.nats.subjects import SubjectError, split_subject, stream_name, tenant_from_subject, tenant_subject

if TYPE_CHECKING:
    from poller.nats.creds import CredentialsError, NatsCredentials, load_credentials
    from poller.nats.messages import CHANNEL_HEALTH, CHANNEL_HEARTBEAT, CHANNEL_RESULTS, CHANNEL_STATUS, Message, channel_for
    from poller.nats.outbox import Outbox
    from poller.nats.sink import DeliveryError, JetStreamSettings, JetStreamSink
    from poller.nats.streams import StreamLimits

_LAZY = {
    "CredentialsError": "creds",
    "NatsCredentials": "creds",
    "load_credentials": "creds",
    "CHANNEL_HEALTH": "messages",
    "CHANNEL_HEARTBEAT": "messages",
    "CHANNEL_RESULTS": "messages",
    "CHANNEL_STATUS": "messages",
    "Message": "messages",
    "channel_for": "messages",
    "Outbox": "outbox",
    "DeliveryError": "sink",
    "JetStreamSettings": "sink",
    "JetStreamSink": "sink",
    "StreamLimits": "streams",
}


__getattr__ = lazy_names("poller.nats", _LAZY)


__all__ = [
    "CHANNEL_HEALTH",
    "CHANNEL_HEARTBEAT",
    "CHANNEL_RESULTS",
    "CHANNEL_STATUS",
    "CredentialsError",
    "DeliveryError",
    "JetStreamSettings",
    "JetStreamSink",
    "Message",
    "NatsCredentials",
    "Outbox",
    "StreamLimits",
    "SubjectError",
    "channel_for",
    "load_credentials",
    "split_subject",
    "stream_name",
    "tenant_from_subject",
    "tenant_subject",
]
