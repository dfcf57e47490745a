"""Moved to poller.delivery (registry, channels, payload); this name stays so that
existing imports keep working."""

from poller.delivery.channels import (
    CHANNEL_HEALTH,
    CHANNEL_HEARTBEAT,
    CHANNEL_RESULTS,
    CHANNEL_STATUS,
    channel_for,
    channel_matches,
)
from poller.delivery.payload import TENANT_KEYS, payload_tenant_claims
from poller.delivery.registry import DEFAULT_HANDLER_TIMEOUT, Delivery, Handler, HandlerRegistry, Registration
from poller.delivery.sink import Sink as SinkLike

__all__ = [
    "CHANNEL_HEALTH",
    "CHANNEL_HEARTBEAT",
    "CHANNEL_RESULTS",
    "CHANNEL_STATUS",
    "DEFAULT_HANDLER_TIMEOUT",
    "TENANT_KEYS",
    "Delivery",
    "Handler",
    "HandlerRegistry",
    "Registration",
    "SinkLike",
    "channel_for",
    "channel_matches",
    "payload_tenant_claims",
]
