"""The gateway's bounds: what one request, one stream and one tenant may take.

Defaults are upstream's gateway's (5,000 services per request, 4 KiB per
status message, 15 MiB per results payload) plus a per-tenant push rate and a
per-tenant limit of calls in flight (a HEAD agent holds a ControlStream open
for as long as it runs, so that is also the limit of its tenant's connected
agents). Over a bound a request is refused RESOURCE_EXHAUSTED
(`resource_exhausted`) and counted; nothing else is affected.

>>> limits = TenantLimits(GatewayBounds(push_rate=2, push_burst=2))
>>> [limits.take_push("acme-corp", now=0.0) for _ in range(3)]
[True, True, False]
>>> limits.take_push("xyz-inc", now=0.0)  # another tenant has its own bucket
True
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from poller.config.model import (
    DEFAULT_GATEWAY_MAX_CALLS_PER_TENANT,
    DEFAULT_GATEWAY_MAX_RESULTS_BYTES,
    DEFAULT_GATEWAY_MAX_SERVICES,
    DEFAULT_GATEWAY_MAX_STATUS_BYTES,
    DEFAULT_GATEWAY_PUSH_BURST,
    DEFAULT_GATEWAY_PUSH_RATE,
    DEFAULT_GATEWAY_STREAM_TIMEOUT,
    GatewayConfig,
)
from poller.identity.reasons import InvalidArgument

__all__ = ["GatewayBounds", "TenantLimits"]

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class GatewayBounds:
    """Configurable limits (config keys of the `gateway` section, same names)."""

    max_services: int = DEFAULT_GATEWAY_MAX_SERVICES  # statuses per PushStatus, or per whole StreamStatus
    max_status_bytes: int = DEFAULT_GATEWAY_MAX_STATUS_BYTES  # one status message (source "status")
    max_results_bytes: int = DEFAULT_GATEWAY_MAX_RESULTS_BYTES  # one results payload (source "results")
    push_rate: float = DEFAULT_GATEWAY_PUSH_RATE  # PushStatus / StreamStatus calls per second, per tenant
    push_burst: int = DEFAULT_GATEWAY_PUSH_BURST  # ... and at once
    max_calls_per_tenant: int = DEFAULT_GATEWAY_MAX_CALLS_PER_TENANT  # in flight per tenant (ControlStreams too)
    stream_timeout: float = DEFAULT_GATEWAY_STREAM_TIMEOUT  # seconds a StreamStatus may take to reach is_final

    def __post_init__(self) -> None:
        for name in ("max_services", "max_status_bytes", "max_results_bytes", "push_burst", "max_calls_per_tenant"):
            if getattr(self, name) <= 0:
                raise InvalidArgument(f"gateway bound {name} must be positive")
        if self.push_rate <= 0 or self.stream_timeout <= 0:
            raise InvalidArgument("gateway bounds push_rate and stream_timeout must be positive")

    @classmethod
    def from_config(cls, config: GatewayConfig) -> GatewayBounds:
        """The bounds of a config's gateway section (same names)."""
        return cls(
            max_services=config.max_services,
            max_status_bytes=config.max_status_bytes,
            max_results_bytes=config.max_results_bytes,
            push_rate=float(config.push_rate),
            push_burst=config.push_burst,
            max_calls_per_tenant=config.max_calls_per_tenant,
            stream_timeout=config.stream_timeout,
        )

    @property
    def max_message_bytes(self) -> int:
        """grpc's receive limit: the largest results payload plus room for the rest of a request."""
        return self.max_results_bytes + MiB


class TenantLimits:
    """Per-tenant token buckets (push rate) and in-flight call counts. One event loop."""

    def __init__(self, bounds: GatewayBounds) -> None:
        self.bounds = bounds
        self._buckets: dict[str, tuple[float, float]] = {}  # tenant -> (tokens, at)
        self._calls: dict[str, int] = {}

    def take_push(self, tenant: str, *, now: float | None = None) -> bool:
        """Take one push token of `tenant`; False when its rate is spent."""
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.get(tenant, (float(self.bounds.push_burst), now))
        tokens = min(float(self.bounds.push_burst), tokens + (now - at) * self.bounds.push_rate)
        if tokens < 1.0:
            self._buckets[tenant] = (tokens, now)
            return False
        self._buckets[tenant] = (tokens - 1.0, now)
        return True

    def enter_call(self, tenant: str) -> bool:
        """Count one call in flight for `tenant`; False (nothing counted) over its limit."""
        held = self._calls.get(tenant, 0)
        if held >= self.bounds.max_calls_per_tenant:
            return False
        self._calls[tenant] = held + 1
        return True

    def leave_call(self, tenant: str) -> None:
        held = self._calls.get(tenant, 0) - 1
        if held > 0:
            self._calls[tenant] = held
        else:
            self._calls.pop(tenant, None)

    def calls(self, tenant: str) -> int:
        return self._calls.get(tenant, 0)
