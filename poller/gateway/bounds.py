"""The gateway's bounds: what one request, one stream, one tenant and the
whole gateway may take.

Defaults are upstream's gateway's (5,000 services per request, 4 KiB per
status message, 15 MiB per results payload) plus per-tenant ones: a push
rate, calls in flight, and connections held. Over a bound a request is
refused RESOURCE_EXHAUSTED (`resource_exhausted`) and counted; nothing else
is affected.

Connections. A TCP connection is accepted before TLS, so nobody knows its
tenant then: `max_connections` bounds them all, at accept (grpc closes one
over it; the agent sees UNAVAILABLE and retries). Once a connection carries
a proven call it counts against that tenant's `max_connections_per_tenant`
until it has been without calls for `connection_idle` (grpc closes it then,
too). A call on a connection over the tenant's limit is refused. An agent
holds one connection, so a reconnecting agent's new connection replaces its
old one in the count and is not refused.

>>> limits = TenantLimits(GatewayBounds(push_rate=2, push_burst=2))
>>> [limits.take_push("acme-corp", now=0.0) for _ in range(3)]
[True, True, False]
>>> limits.take_push("xyz-inc", now=0.0)  # another tenant has its own bucket
True
>>> limits = TenantLimits(GatewayBounds(max_connections_per_tenant=1, connection_idle=60.0))
>>> limits.enter_call("acme-corp", "10.0.0.1:4000", "agent-001", now=0.0) is None
True
>>> limits.leave_call("acme-corp", "10.0.0.1:4000", now=0.5)
>>> limits.enter_call("acme-corp", "10.0.0.2:4000", "agent-002", now=1.0)
'tenant acme-corp holds 1 connections (at most 1)'
>>> limits.enter_call("acme-corp", "10.0.0.1:4001", "agent-001", now=2.0) is None  # agent-001 reconnected
True
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from poller.config.model import (
    DEFAULT_GATEWAY_CONNECTION_IDLE,
    DEFAULT_GATEWAY_MAX_CALLS_PER_TENANT,
    DEFAULT_GATEWAY_MAX_CONNECTIONS,
    DEFAULT_GATEWAY_MAX_CONNECTIONS_PER_TENANT,
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
    max_connections: int = DEFAULT_GATEWAY_MAX_CONNECTIONS  # TCP connections in all (grpc, at accept)
    max_connections_per_tenant: int = DEFAULT_GATEWAY_MAX_CONNECTIONS_PER_TENANT  # held by a tenant's proven callers
    connection_idle: float = DEFAULT_GATEWAY_CONNECTION_IDLE  # seconds without calls: closed, no longer counted
    stream_timeout: float = DEFAULT_GATEWAY_STREAM_TIMEOUT  # seconds a StreamStatus may take to reach is_final

    def __post_init__(self) -> None:
        for name in (
            "max_services",
            "max_status_bytes",
            "max_results_bytes",
            "push_burst",
            "max_calls_per_tenant",
            "max_connections",
            "max_connections_per_tenant",
        ):
            if getattr(self, name) <= 0:
                raise InvalidArgument(f"gateway bound {name} must be positive")
        if self.push_rate <= 0 or self.stream_timeout <= 0 or self.connection_idle <= 0:
            raise InvalidArgument("gateway bounds push_rate, stream_timeout and connection_idle must be positive")

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
            max_connections=config.max_connections,
            max_connections_per_tenant=config.max_connections_per_tenant,
            connection_idle=config.connection_idle,
            stream_timeout=config.stream_timeout,
        )

    @property
    def max_message_bytes(self) -> int:
        """grpc's receive limit: the largest results payload plus room for the rest of a request."""
        return self.max_results_bytes + MiB


class _Connection:
    """One connection (peer address) a tenant's proven callers use."""

    __slots__ = ("agent", "calls", "last")

    def __init__(self, agent: str, now: float) -> None:
        self.agent, self.calls, self.last = agent, 0, now


class TenantLimits:
    """Per-tenant token buckets (push rate), calls in flight and connections held.

    One event loop; `now` is monotonic seconds (injectable for tests).
    """

    def __init__(self, bounds: GatewayBounds) -> None:
        self.bounds = bounds
        self._buckets: dict[str, tuple[float, float]] = {}  # tenant -> (tokens, at)
        self._calls: dict[str, int] = {}
        self._connections: dict[str, dict[str, _Connection]] = {}  # tenant -> peer -> its use
        self._agent_peer: dict[tuple[str, str], str] = {}  # (tenant, agent) -> the peer it last called from
        self._next_expiry: dict[str, float] = {}  # tenant -> when its idle connections may be looked for again

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

    def enter_call(self, tenant: str, peer: str = "", agent: str = "", *, now: float | None = None) -> str | None:
        """Count one call of `agent` (its proven component) for `tenant` from
        `peer` ("host:port", one connection; "" counts no connection).

        None when admitted; else why not, and nothing is counted.
        """
        held = self._calls.get(tenant, 0)
        if held >= self.bounds.max_calls_per_tenant:
            return f"tenant {tenant} has {self.bounds.max_calls_per_tenant} calls in flight"
        if peer:
            now = time.monotonic() if now is None else now
            connections = self._connections.setdefault(tenant, {})
            connection = connections.get(peer)
            if connection is None:
                previous = self._agent_peer.get((tenant, agent)) if agent else None
                if previous is not None:  # the agent reconnected: its old connection is done with, once idle
                    old = connections.get(previous)
                    if old is not None and old.calls == 0:
                        del connections[previous]
                if len(connections) >= self.bounds.max_connections_per_tenant:
                    self._expire(tenant, connections, now)
                    if len(connections) >= self.bounds.max_connections_per_tenant:
                        limit = self.bounds.max_connections_per_tenant
                        return f"tenant {tenant} holds {len(connections)} connections (at most {limit})"
                connection = connections[peer] = _Connection(agent, now)
            if agent:
                self._agent_peer[(tenant, agent)] = peer
            connection.calls += 1
            connection.last = now
        self._calls[tenant] = held + 1
        return None

    def leave_call(self, tenant: str, peer: str = "", *, now: float | None = None) -> None:
        """The end of a call `enter_call` admitted (the same tenant and peer)."""
        held = self._calls.get(tenant, 0) - 1
        if held > 0:
            self._calls[tenant] = held
        else:
            self._calls.pop(tenant, None)
        connection = self._connections.get(tenant, {}).get(peer) if peer else None
        if connection is not None:
            connection.calls -= 1
            connection.last = time.monotonic() if now is None else now

    def calls(self, tenant: str) -> int:
        return self._calls.get(tenant, 0)

    def connections(self, tenant: str, *, now: float | None = None) -> int:
        """Connections `tenant` holds: with a call in flight or one within connection_idle."""
        now = time.monotonic() if now is None else now
        idle_since = now - self.bounds.connection_idle
        return sum(1 for c in self._connections.get(tenant, {}).values() if c.calls or c.last > idle_since)

    def _expire(self, tenant: str, connections: dict[str, _Connection], now: float) -> None:
        """Forget the tenant's connections idle for connection_idle (grpc has closed them).

        A scan of the tenant's connections, so at most one per second per
        tenant: a tenant at its limit does not make every refusal a scan.
        """
        if now < self._next_expiry.get(tenant, float("-inf")):
            return
        self._next_expiry[tenant] = now + min(1.0, self.bounds.connection_idle / 10)
        idle_since = now - self.bounds.connection_idle
        for peer, connection in list(connections.items()):
            if connection.calls == 0 and connection.last <= idle_since:
                del connections[peer]
                if self._agent_peer.get((tenant, connection.agent)) == peer:
                    del self._agent_peer[(tenant, connection.agent)]
