"""Prometheus metrics of the poller, registered in a registry the caller owns.

Nothing is registered at import time. The daemon makes one PollerMetrics and
serves its registry on `metrics_listen`; a library user passes theirs to
dial_agent (the connection and its AgentClient use it), or gets a private
default whose registry nobody serves. Labels are bounded: tenant slugs,
reason codes, method names, outcomes.

>>> from prometheus_client import CollectorRegistry
>>> registry = CollectorRegistry()
>>> m = PollerMetrics(registry)
>>> m.polls.labels(tenant="acme-corp", outcome="ok").inc()
>>> registry.get_sample_value("poller_polls_total", {"tenant": "acme-corp", "outcome": "ok"})
1.0
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, gc_collector, platform_collector, process_collector

from poller.identity.reasons import Reason

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

#: What PollerMetrics.prime makes at 0 per tenant: a poll's outcomes, ...
POLL_OUTCOMES: tuple[Reason, ...] = (
    Reason.OK,
    *(r for r in Reason if r.is_refusal and r is not Reason.REFUSED),
    Reason.CRL_EXPIRED,
    Reason.UNREACHABLE,
    Reason.TIMEOUT,
    Reason.NOT_SERVING,
    Reason.INVALID_PAYLOAD,
    Reason.INCOMPLETE_STREAM,
    Reason.UNAVAILABLE,
    Reason.INTERNAL_ERROR,
    Reason.PENDING,
)
#: ... the reasons an identity is refused (a dial or a re-check), ...
IDENTITY_REFUSALS: tuple[Reason, ...] = (*(r for r in Reason if r.is_refusal and r is not Reason.REFUSED), Reason.CRL_EXPIRED)
#: ... a result is refused by the handler registry, and a handler fails.
RESULT_REFUSALS: tuple[Reason, ...] = (Reason.INVALID_CHANNEL, Reason.PAYLOAD_MISMATCH, Reason.LABEL_MISMATCH, Reason.NO_HANDLER)
HANDLER_FAILURES: tuple[Reason, ...] = (Reason.HANDLER_FAILED, Reason.HANDLER_TIMEOUT)
#: The gateway's methods, as poller_gateway_calls_refused_total{method} names them.
GATEWAY_METHODS = ("Hello", "GetConfig", "PushStatus", "StreamStatus", "ControlStream")
#: ... the gateway takes or refuses a push (poller_gateway_pushes_total{outcome}).
GATEWAY_OUTCOMES: tuple[Reason, ...] = (
    Reason.OK,
    Reason.UNKNOWN_AGENT,
    Reason.IDENTITY_MISMATCH,
    Reason.PAYLOAD_MISMATCH,
    Reason.LABEL_MISMATCH,
    Reason.INVALID_PAYLOAD,
    Reason.INVALID_CHANNEL,  # a results service_type that is no subject token
    Reason.NO_HANDLER,  # no handler's policy allows it
    Reason.INCOMPLETE_STREAM,
    Reason.RESOURCE_EXHAUSTED,
    Reason.UNREACHABLE,  # the call ended before its answer (cancelled)
    Reason.HANDLER_FAILED,  # a sink did not take or flush its results: not durable, the agent retries
    Reason.HANDLER_TIMEOUT,
)


class LabelCache:
    """A metric's children by label values (in its labelnames' order), each
    looked up once: labels() checks, hashes and locks on every call, a
    noticeable share of a per-call path such as the gateway's pushes.

    >>> calls = LabelCache(Counter("calls", "", ["tenant"], registry=CollectorRegistry()))
    >>> calls.child("acme-corp") is calls.child("acme-corp")
    True
    """

    __slots__ = ("_children", "_limit", "_metric")

    def __init__(self, metric: Any, *, limit: int = 65536) -> None:
        self._metric = metric
        self._limit = limit
        self._children: dict[tuple[str, ...], Any] = {}

    def child(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._metric.labels(*values)
            if len(self._children) < self._limit:  # proven tenants x outcomes are few; beyond, look up each time
                self._children[values] = child
        return child


class PollerMetrics:
    """The poller's metrics, all registered in `registry` (a new one if None).

    Names (every one starts with poller_; CHANGELOG.md lists the renames):
    poller_polls_total, poller_identity_refusals_total,
    poller_identity_accepts_total, poller_call_latency_seconds,
    poller_connected_agents, poller_certificate_expiry_timestamp_seconds,
    poller_agent_last_success_timestamp_seconds,
    poller_agent_consecutive_failures, poller_tenant_crl_loaded,
    poller_tenant_crl_next_update_timestamp_seconds,
    poller_results_refused_total, poller_handler_failures_total,
    poller_label_mismatches_total, poller_cross_tenant_deliveries_total,
    poller_server_calls_total, poller_cluster_members,
    poller_cluster_leases, poller_gateway_pushes_total,
    poller_gateway_connected_agents, poller_gateway_calls_refused_total. The daemon adds the process collectors and
    poller_build_info to the registry it serves (`add_process_metrics`).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.polls = Counter("poller_polls_total", "Polls of agents by tenant and outcome", ["tenant", "outcome"], registry=r)
        self.identity_refusals = Counter(
            "poller_identity_refusals_total", "Agent identities refused, by reason", ["tenant", "reason"], registry=r
        )
        self.identity_accepts = Counter("poller_identity_accepts_total", "Agent identities proven", ["tenant"], registry=r)
        self.call_latency = Histogram(
            "poller_call_latency_seconds", "Latency of calls to agents", ["method"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.connected_agents = Gauge("poller_connected_agents", "Agents with a proven, open channel", ["tenant"], registry=r)
        # A timestamp, not "days left": it stays right between polls, and alerts compute `- time()`.
        self.cert_expiry = Gauge(
            "poller_certificate_expiry_timestamp_seconds",
            "When a certificate expires, Unix time (the poller's own: kind=poller; each agent's: kind=agent)",
            ["kind", "tenant", "name"],
            registry=r,
        )
        self.agent_last_success = Gauge(
            "poller_agent_last_success_timestamp_seconds",
            "When the agent last gave a proven answer to every check of a cycle, Unix time",
            ["tenant", "agent"],
            registry=r,
        )
        self.agent_failures = Gauge(
            "poller_agent_consecutive_failures",
            "Cycles in a row whose outcome was not ok (refused, unreachable, timeout, ...); 0 after a proven answer",
            ["tenant", "agent"],
            registry=r,
        )
        self.tenant_crl_loaded = Gauge(
            "poller_tenant_crl_loaded", "1 when a CRL is in force for the tenant, 0 when it has none", ["tenant"], registry=r
        )
        self.tenant_crl_next_update = Gauge(
            "poller_tenant_crl_next_update_timestamp_seconds",
            "The nextUpdate of the tenant's CRL in force, Unix time (no series without a CRL)",
            ["tenant"],
            registry=r,
        )
        # Dynamic cluster mode (poller.cluster.node).
        self.cluster_members = Gauge("poller_cluster_members", "Live replicas in this replica's view of the cluster", registry=r)
        self.cluster_leases = Gauge("poller_cluster_leases", "Agent leases this replica holds, by tenant", ["tenant"], registry=r)
        # Delivery through the handler registry (poller.delivery).
        self.results_refused = Counter(
            "poller_results_refused", "Results refused by the handler registry", ["tenant", "channel", "reason"], registry=r
        )
        self.handler_failures = Counter(
            "poller_handler_failures_total", "Handlers that raised or timed out", ["tenant", "handler", "reason"], registry=r
        )
        self.label_mismatches = Counter(
            "poller_label_mismatches_total",
            "Results whose reported agent_id/partition differ from the proof",
            ["tenant", "label"],
            registry=r,
        )
        self.cross_tenant_deliveries = Counter(
            "poller_cross_tenant_deliveries_total",
            "Results delivered to a platform (admin) identity's handler",
            ["tenant"],
            registry=r,
        )
        # The server-side tenant interceptor (poller.server): one count per decision.
        self.server_calls = Counter(
            "poller_server_calls_total", "Calls decided by the tenant interceptor", ["tenant", "outcome"], registry=r
        )
        # The agent gateway (poller.gateway): pushes by outcome (ok or the refusal's
        # reason), and push agents connected (pushed within 2 intervals or holding a stream).
        self.gateway_pushes = Counter(
            "poller_gateway_pushes_total",
            "Push calls (PushStatus, StreamStatus) by tenant and outcome",
            ["tenant", "outcome"],
            registry=r,
        )
        self.gateway_connected = Gauge(
            "poller_gateway_connected_agents", "Push agents connected to the gateway", ["tenant"], registry=r
        )
        # Every call the gateway refuses once the caller is proven, of any method: a refused
        # Hello, GetConfig or ControlStream is no push, and is counted only here.
        self.gateway_refused = Counter(
            "poller_gateway_calls_refused_total",
            "Gateway calls of proven callers refused, by tenant, method and reason",
            ["tenant", "method", "reason"],
            registry=r,
        )
        self._latency_children: dict[str, Any] = {}

    def prime(self, tenants: Iterable[str], *, handlers: Iterable[str] = (), gateway: bool = False) -> None:
        """Make every counter's series for `tenants` (and the named handlers) at 0,
        for each reason it can count, so a dashboard or a rate() shows 0 rather
        than "No data" before the first failure. Idempotent; call it again after
        a reload adds tenants. `gateway`: also the push counters and the connected
        push agents gauge (a daemon with a gateway section).

        >>> m = PollerMetrics()
        >>> m.prime(["acme-corp"], handlers=["nats-sink"])
        >>> m.registry.get_sample_value("poller_identity_refusals_total", {"tenant": "acme-corp", "reason": "revoked"})
        0.0
        >>> m.prime(["acme-corp"], gateway=True)
        >>> refused = {"tenant": "acme-corp", "method": "Hello", "reason": "resource_exhausted"}
        >>> m.registry.get_sample_value("poller_gateway_calls_refused_total", refused)
        0.0
        """
        handlers = tuple(handlers)
        for tenant in tenants:
            self.identity_accepts.labels(tenant=tenant)
            self.cross_tenant_deliveries.labels(tenant=tenant)
            for outcome in POLL_OUTCOMES:
                self.polls.labels(tenant=tenant, outcome=outcome.value)
            for reason in IDENTITY_REFUSALS:
                self.identity_refusals.labels(tenant=tenant, reason=reason.value)
            for reason in RESULT_REFUSALS:
                self.results_refused.labels(tenant=tenant, channel="", reason=reason.value)
            for label in ("agent_id", "partition"):
                self.label_mismatches.labels(tenant=tenant, label=label)
            for handler in handlers:
                for reason in HANDLER_FAILURES:
                    self.handler_failures.labels(tenant=tenant, handler=handler, reason=reason.value)
            if gateway:  # the daemon serves push agents: their counters too
                for outcome in GATEWAY_OUTCOMES:
                    self.gateway_pushes.labels(tenant=tenant, outcome=outcome.value)
                self.gateway_connected.labels(tenant=tenant)
                for method in GATEWAY_METHODS:  # the bounds' refusal, the one a flood brings
                    self.gateway_refused.labels(tenant=tenant, method=method, reason=Reason.RESOURCE_EXHAUSTED.value)

    def latency(self, method: str) -> Any:
        """The latency histogram of one method (labels() is a lookup under a lock)."""
        child = self._latency_children.get(method)
        if child is None:
            child = self._latency_children[method] = self.call_latency.labels(method=method)
        return child


def add_process_metrics(registry: CollectorRegistry, *, version: str) -> None:
    """Add the process_*, python_info and python_gc_* collectors and
    poller_build_info{version,python} to `registry` (the daemon's, which it
    serves). prometheus_client registers these in its global registry at
    import; the daemon's registry is its own, so it adds them here.

    >>> r = CollectorRegistry()
    >>> add_process_metrics(r, version="0.1.0")
    >>> r.get_sample_value("poller_build_info", {"version": "0.1.0", "python": platform.python_version()})
    1.0
    """
    process_collector.ProcessCollector(registry=registry)
    platform_collector.PlatformCollector(registry=registry)
    gc_collector.GCCollector(registry=registry)
    info = Gauge(
        "poller_build_info", "Always 1; the poller's and Python's versions as labels", ["version", "python"], registry=registry
    )
    info.labels(version=version, python=platform.python_version()).set(1)


_default: PollerMetrics | None = None
_default_lock = threading.Lock()


def default_metrics() -> PollerMetrics:
    """The private metrics of callers that pass none (made on first use, never served)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = PollerMetrics()
        return _default
