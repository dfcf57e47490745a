"""The gateway's bounds: what one request, one stream, one tenant and the
whole gateway may take.

Defaults are upstream's gateway's (5,000 services per request, 4 KiB per
status message, 15 MiB per results payload) plus per-tenant ones: a push
rate, calls in flight (and one agent's share of them), and connections
held. Over a bound a request is refused RESOURCE_EXHAUSTED
(`resource_exhausted`) and counted; nothing else is affected.

Connections. A TCP connection is accepted before TLS, so nobody knows its
tenant then: `max_connections` bounds them all, at accept (grpc closes one
over it; the agent sees UNAVAILABLE and retries). Once a connection carries
a proven call it counts against that tenant's `max_connections_per_tenant`
until it has been without calls for `connection_idle` (grpc closes it then,
too). A call on a connection over the tenant's limit is refused.

An agent (one proven tenant, component and partition) holds one connection:
it opens another when its own has failed, which grpc may not see before
connection_idle. So an agent's new connection takes the place in the count of
those it left between calls, and a reconnect, or many, is not refused. The
old connection is still known: if the agent calls on it again, it keeps more
than one alive (one certificate on many connections), and from then on each
of its connections counts, and must fit the tenant's limit, until they have
all been idle for connection_idle.

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
>>> limits.leave_call("acme-corp", "10.0.0.1:4001", now=2.5)
>>> limits.enter_call("acme-corp", "10.0.0.1:4000", "agent-001", now=3.0)  # and calls on its old one again
'tenant acme-corp holds 1 connections (at most 1)'
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass

from poller.config.model import (
    DEFAULT_GATEWAY_CONNECTION_IDLE,
    DEFAULT_GATEWAY_KEEPALIVE,
    DEFAULT_GATEWAY_KEEPALIVE_TIMEOUT,
    DEFAULT_GATEWAY_MAX_CALLS_PER_AGENT,
    DEFAULT_GATEWAY_MAX_CALLS_PER_TENANT,
    DEFAULT_GATEWAY_MAX_CONNECTIONS,
    DEFAULT_GATEWAY_MAX_CONNECTIONS_PER_TENANT,
    DEFAULT_GATEWAY_MAX_RESULTS_BYTES,
    DEFAULT_GATEWAY_MAX_SERVICES,
    DEFAULT_GATEWAY_MAX_STATUS_BYTES,
    DEFAULT_GATEWAY_PUSH_BURST,
    DEFAULT_GATEWAY_PUSH_RATE,
    DEFAULT_GATEWAY_STREAM_TIMEOUT,
    GRPC_MAX_INT,
    GRPC_MAX_MS,
    MAX_AGENT_RATE,
    MAX_GATEWAY_RESULTS_BYTES,
    GatewayConfig,
)
from poller.identity.reasons import InvalidArgument

__all__ = ["LEFT_REMEMBERED", "GatewayBounds", "TenantLimits"]

#: Connections an agent left for newer ones that are remembered (uncounted) until
#: connection_idle, so a call on one of them again shows it keeps several alive.
#: Bounded: a certificate opening a connection per call must not grow the records.
LEFT_REMEMBERED = 64

#: Per-agent buckets kept before the full ones are forgotten (a scan, at doubling marks).
AGENT_BUCKETS = 10_000

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class GatewayBounds:
    """Configurable limits (config keys of the `gateway` section, same names)."""

    max_services: int = DEFAULT_GATEWAY_MAX_SERVICES  # statuses per PushStatus, or per whole StreamStatus
    max_status_bytes: int = DEFAULT_GATEWAY_MAX_STATUS_BYTES  # one status message (source "status")
    max_results_bytes: int = DEFAULT_GATEWAY_MAX_RESULTS_BYTES  # one results payload (source "results")
    push_rate: float = (
        DEFAULT_GATEWAY_PUSH_RATE  # calls per second, per tenant: every gateway call takes one token, checked or not
    )
    push_burst: int = DEFAULT_GATEWAY_PUSH_BURST  # ... and at once
    # Opt-in: one agent's (component, partition) own rate, taken before its tenant's, so a
    # stolen key cannot spend its siblings' rate. 0: none. Burst 0: 10 s of the rate.
    push_rate_per_agent: float = 0.0
    push_burst_per_agent: int = 0
    max_calls_per_tenant: int = DEFAULT_GATEWAY_MAX_CALLS_PER_TENANT  # in flight per tenant (ControlStreams too)
    max_calls_per_agent: int = DEFAULT_GATEWAY_MAX_CALLS_PER_AGENT  # ... of them, one agent's (component, partition)
    max_connections: int = DEFAULT_GATEWAY_MAX_CONNECTIONS  # TCP connections in all (grpc, at accept)
    max_connections_per_tenant: int = DEFAULT_GATEWAY_MAX_CONNECTIONS_PER_TENANT  # held by a tenant's proven callers
    connection_idle: float = DEFAULT_GATEWAY_CONNECTION_IDLE  # seconds without calls: closed, no longer counted
    stream_timeout: float = DEFAULT_GATEWAY_STREAM_TIMEOUT  # seconds a StreamStatus may take to reach is_final
    keepalive: float = DEFAULT_GATEWAY_KEEPALIVE  # seconds without a frame from the agent: the gateway pings
    keepalive_timeout: float = DEFAULT_GATEWAY_KEEPALIVE_TIMEOUT  # ... and closes the connection if unanswered

    def __post_init__(self) -> None:
        for name in (
            "max_services",
            "max_status_bytes",
            "max_results_bytes",
            "push_burst",
            "max_calls_per_tenant",
            "max_calls_per_agent",
            "max_connections",
            "max_connections_per_tenant",
            "push_rate",
            "stream_timeout",
            "connection_idle",
            "keepalive",
            "keepalive_timeout",
        ):
            value = getattr(self, name)
            if not value > 0 or not math.isfinite(value):  # NaN compares false either way
                raise InvalidArgument(f"gateway bound {name} must be positive")
        for name in ("push_rate_per_agent", "push_burst_per_agent"):
            value = getattr(self, name)
            if not 0 <= value <= MAX_AGENT_RATE:
                raise InvalidArgument(f"gateway bound {name} must be 0 (none) or positive, at most {MAX_AGENT_RATE}")
        if self.push_burst_per_agent and not self.push_rate_per_agent:
            raise InvalidArgument("gateway bound push_burst_per_agent needs push_rate_per_agent (a burst of no rate)")
        if self.max_results_bytes > MAX_GATEWAY_RESULTS_BYTES:
            most = MAX_GATEWAY_RESULTS_BYTES
            raise InvalidArgument(
                f"gateway bound max_results_bytes must be at most {most} (grpc's receive limit, 1 MiB more, is a C int)"
            )
        if self.max_connections > GRPC_MAX_INT:
            raise InvalidArgument(f"gateway bound max_connections must be at most {GRPC_MAX_INT} (a grpc option, a C int)")
        for name in ("connection_idle", "keepalive", "keepalive_timeout"):  # grpc options, in milliseconds
            if getattr(self, name) * 1000 > GRPC_MAX_MS:
                limit = GRPC_MAX_MS / 1000
                raise InvalidArgument(f"gateway bound {name} must be at most {limit} seconds (grpc takes milliseconds, a C int)")

    @classmethod
    def from_config(cls, config: GatewayConfig) -> GatewayBounds:
        """The bounds of a config's gateway section (same names)."""
        return cls(
            max_services=config.max_services,
            max_status_bytes=config.max_status_bytes,
            max_results_bytes=config.max_results_bytes,
            push_rate=float(config.push_rate),
            push_burst=config.push_burst,
            push_rate_per_agent=float(config.push_rate_per_agent),
            push_burst_per_agent=config.push_burst_per_agent,
            max_calls_per_tenant=config.max_calls_per_tenant,
            max_calls_per_agent=config.max_calls_per_agent,
            max_connections=config.max_connections,
            max_connections_per_tenant=config.max_connections_per_tenant,
            connection_idle=config.connection_idle,
            stream_timeout=config.stream_timeout,
            keepalive=config.keepalive,
            keepalive_timeout=config.keepalive_timeout,
        )

    @property
    def agent_burst(self) -> int:
        """One agent's burst: push_burst_per_agent, else 10 s of its rate (at least 1)."""
        return self.push_burst_per_agent or max(1, math.ceil(10 * self.push_rate_per_agent))

    @property
    def max_message_bytes(self) -> int:
        """grpc's receive limit: the largest results payload plus room for the rest of a request."""
        return self.max_results_bytes + MiB


class _Agent:
    """One proven identity (component, partition) of a tenant, and the connections it holds."""

    __slots__ = ("component", "counted", "left", "partition", "shared", "tracked")

    def __init__(self, component: str, partition: str) -> None:
        self.component, self.partition = component, partition
        self.counted: set[str] = set()  # the peers of its connections that count
        self.tracked = 0  # its connections known, counted or not
        self.left: deque[str] = deque()  # the peers of connections it left for newer ones, oldest first
        # It called again on a connection it had left for a newer one: it keeps
        # more than one alive (one certificate on many connections, or on many
        # hosts), so each one counts and a new one replaces none.
        self.shared = False


class _Connection:
    """One connection (peer address) a tenant's proven callers use. Not `counted`:
    its agent has opened a newer one while it was between calls (a reconnect)."""

    __slots__ = ("calls", "counted", "last", "owner")

    def __init__(self, owner: _Agent | None, now: float) -> None:
        self.owner, self.calls, self.last, self.counted = owner, 0, now, False

    def owned_by(self, component: str, partition: str) -> bool:
        owner = self.owner
        if owner is None:
            return not component
        return owner.component == component and owner.partition == partition


class _TenantConnections:
    """A tenant's connections: `held` of them count against max_connections_per_tenant."""

    __slots__ = ("agents", "held", "next_expiry", "peers")

    def __init__(self) -> None:
        self.peers: dict[str, _Connection] = {}
        self.agents: dict[tuple[str, str], _Agent] = {}
        self.held = 0
        self.next_expiry = float("-inf")  # when its idle connections may be looked for again

    def count(self, peer: str, connection: _Connection) -> None:
        connection.counted = True
        self.held += 1
        if connection.owner is not None:
            connection.owner.counted.add(peer)

    def supersede(self, agent: _Agent) -> None:
        """The agent opened a new connection: those it left between calls no longer count
        (an agent reconnects when its connection has failed; grpc has not seen that yet)."""
        for peer in [p for p in agent.counted if self.peers[p].calls == 0]:
            self.peers[peer].counted = False
            self.held -= 1
            agent.counted.discard(peer)
            agent.left.append(peer)
        # Remember only the last few it left: one certificate making a new connection per
        # call would otherwise keep a record per call for connection_idle.
        while len(agent.left) > LEFT_REMEMBERED:
            peer = agent.left.popleft()
            connection = self.peers.get(peer)
            if connection is not None and connection.owner is agent and not connection.counted and connection.calls == 0:
                self.forget(peer)

    def forget(self, peer: str) -> None:
        connection = self.peers.pop(peer)
        if connection.counted:
            self.held -= 1
        owner = connection.owner
        if owner is not None:
            owner.counted.discard(peer)
            owner.tracked -= 1
            if owner.tracked == 0:
                del self.agents[(owner.component, owner.partition)]

    def expire(self, now: float, idle: float) -> None:
        """Forget the connections idle for `idle` seconds (grpc has closed them).

        A scan of the tenant's connections, so at most one per second: a tenant
        at its limit does not make every refusal a scan.
        """
        if now < self.next_expiry:
            return
        self.next_expiry = now + min(1.0, idle / 10)
        idle_since = now - idle
        for peer in [p for p, c in self.peers.items() if c.calls == 0 and c.last <= idle_since]:
            self.forget(peer)


class TenantLimits:
    """Per-tenant token buckets (push rate), calls in flight and connections held.

    One event loop; `now` is monotonic seconds (injectable for tests).
    """

    def __init__(self, bounds: GatewayBounds) -> None:
        self.bounds = bounds
        self._buckets: dict[str, tuple[float, float]] = {}  # tenant -> (tokens, at)
        self._agent_buckets: dict[tuple[str, str, str], tuple[float, float]] = {}  # (tenant, component, partition)
        self._agent_prune_at = AGENT_BUCKETS
        self._calls: dict[str, int] = {}
        self._agent_calls: dict[tuple[str, str, str], int] = {}  # (tenant, component, partition); no zeros
        self._connections: dict[str, _TenantConnections] = {}

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

    def take_agent(self, tenant: str, agent: str, partition: str = "", *, now: float | None = None) -> bool:
        """Take one token of the agent's own bucket (push_rate_per_agent); True when
        there is none to take from (no per-agent rate), False when its rate is spent."""
        rate = self.bounds.push_rate_per_agent
        if not rate:
            return True
        now = time.monotonic() if now is None else now
        burst = float(self.bounds.agent_burst)
        key = (tenant, agent, partition)
        tokens, at = self._agent_buckets.get(key, (burst, now))
        tokens = min(burst, tokens + (now - at) * rate)
        taken = tokens >= 1.0
        self._agent_buckets[key] = (tokens - 1.0 if taken else tokens, now)
        if len(self._agent_buckets) > self._agent_prune_at:  # identities a tenant CA can mint: bounded
            # A bucket that has filled up again is as good as none.
            full = burst / rate
            self._agent_buckets = {k: v for k, v in self._agent_buckets.items() if now - v[1] < full}
            self._agent_prune_at = max(AGENT_BUCKETS, 2 * len(self._agent_buckets))
        return taken

    def enter_call(
        self, tenant: str, peer: str = "", agent: str = "", partition: str = "", *, now: float | None = None
    ) -> str | None:
        """Count one call of `agent` in `partition` (its proven identity) for
        `tenant` from `peer` ("host:port", one connection; "" counts no connection).

        None when admitted; else why not, and nothing is counted.
        """
        who = (tenant, agent, partition)
        mine = self._agent_calls.get(who, 0) if agent else 0
        if mine >= self.bounds.max_calls_per_agent:  # its own share first: a flood is told it is its own
            limit = self.bounds.max_calls_per_agent
            return f"agent {agent} of tenant {tenant} (partition {partition!r}) has its {limit} calls in flight"
        held = self._calls.get(tenant, 0)
        if held >= self.bounds.max_calls_per_tenant:
            return f"tenant {tenant} has {self.bounds.max_calls_per_tenant} calls in flight"
        if peer:
            now = time.monotonic() if now is None else now
            connections = self._connections.get(tenant)
            if connections is None:
                connections = self._connections[tenant] = _TenantConnections()
            connection = connections.peers.get(peer)
            if connection is None or not connection.counted or not connection.owned_by(agent, partition):
                connection = self._admit(tenant, connections, peer, agent, partition, now)
                if connection is None:
                    limit = self.bounds.max_connections_per_tenant
                    return f"tenant {tenant} holds {connections.held} connections (at most {limit})"
            connection.calls += 1
            connection.last = now
        self._calls[tenant] = held + 1
        if agent:
            self._agent_calls[who] = mine + 1
        return None

    def _admit(
        self, tenant: str, connections: _TenantConnections, peer: str, agent: str, partition: str, now: float
    ) -> _Connection | None:
        """A new connection, or one that no longer counts: counted now if the tenant has room."""
        connections.expire(now, self.bounds.connection_idle)
        connection = connections.peers.get(peer)
        if connection is not None and not connection.owned_by(agent, partition):
            connections.forget(peer)  # another identity on its address: that connection is closed
            connection = None
        owner = connections.agents.get((agent, partition)) if agent else None
        if connection is None:
            if owner is not None and not owner.shared:
                connections.supersede(owner)  # a reconnect: never refused for the connection it left
        elif not connection.counted and owner is not None:
            owner.shared = True  # it called again on a connection it had left for a newer one
        if connections.held >= self.bounds.max_connections_per_tenant:
            return None
        if connection is None:
            if agent and owner is None:
                owner = connections.agents[(agent, partition)] = _Agent(agent, partition)
            connection = connections.peers[peer] = _Connection(owner, now)
            if owner is not None:
                owner.tracked += 1
        if not connection.counted:
            connections.count(peer, connection)
        return connection

    def leave_call(
        self, tenant: str, peer: str = "", agent: str | None = None, partition: str = "", *, now: float | None = None
    ) -> None:
        """The end of a call `enter_call` admitted (the same tenant, peer, agent and
        partition). Agent None: whoever holds the peer's connection now, for its
        share too; pass the agent (the gateway does): once another identity has
        taken the address, the call's own agent could not be told otherwise."""
        held = self._calls.get(tenant, 0) - 1
        if held > 0:
            self._calls[tenant] = held
        else:
            self._calls.pop(tenant, None)
        connections = self._connections.get(tenant) if peer else None
        connection = connections.peers.get(peer) if connections is not None else None
        if agent is None and connection is not None and connection.owner is not None:
            agent, partition = connection.owner.component, connection.owner.partition
        if agent:
            who = (tenant, agent, partition)
            mine = self._agent_calls.get(who, 0) - 1
            if mine > 0:
                self._agent_calls[who] = mine
            else:
                self._agent_calls.pop(who, None)
        # Another identity on the address: the call's own connection closed and was
        # forgotten (an address reused behind a NAT); the newcomer's count is not its.
        if connection is not None and (agent is None or connection.owned_by(agent, partition)):
            connection.calls -= 1
            connection.last = time.monotonic() if now is None else now

    def calls(self, tenant: str, agent: str | None = None, partition: str = "") -> int:
        """Calls in flight of `tenant`, or of one of its agents (component, partition)."""
        if agent is None:
            return self._calls.get(tenant, 0)
        return self._agent_calls.get((tenant, agent, partition), 0)

    def tracked(self, tenant: str) -> int:
        """Connections of `tenant` on record, counted or not (what the records cost)."""
        connections = self._connections.get(tenant)
        return len(connections.peers) if connections is not None else 0

    def connections(self, tenant: str, *, now: float | None = None) -> int:
        """Connections `tenant` holds: counted, with a call in flight or one within connection_idle."""
        now = time.monotonic() if now is None else now
        idle_since = now - self.bounds.connection_idle
        connections = self._connections.get(tenant)
        peers = connections.peers.values() if connections is not None else ()
        return sum(1 for c in peers if c.counted and (c.calls or c.last > idle_since))
