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

import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class PollerMetrics:
    """The poller's metrics, all registered in `registry` (a new one if None).

    Names: poller_polls_total, poller_identity_refusals_total,
    poller_identity_accepts_total, poller_call_latency_seconds,
    poller_connected_agents, poller_certificate_expiry_days, tenant_crl_loaded,
    results_refused_total, poller_handler_failures_total,
    poller_label_mismatches_total, poller_cross_tenant_deliveries_total,
    poller_server_calls_total, poller_cluster_members,
    poller_cluster_leases, poller_gateway_pushes_total,
    poller_gateway_connected_agents.
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
        self.cert_expiry_days = Gauge(
            "poller_certificate_expiry_days",
            "Days until a certificate expires (the poller's own and each agent's)",
            ["kind", "tenant", "name"],
            registry=r,
        )
        # Named as issue 6 specifies (no poller_ prefix): 1 when a CRL is in force for the tenant, else 0.
        self.tenant_crl_loaded = Gauge(
            "tenant_crl_loaded", "1 when a CRL is in force for the tenant, 0 when it has none", ["tenant"], registry=r
        )
        # Dynamic cluster mode (poller.cluster.node).
        self.cluster_members = Gauge("poller_cluster_members", "Live replicas in this replica's view of the cluster", registry=r)
        self.cluster_leases = Gauge("poller_cluster_leases", "Agent leases this replica holds, by tenant", ["tenant"], registry=r)
        # Delivery through the handler registry (poller.handlers). The refusal
        # counter's name is a contract: results_refused_total{tenant,channel,reason}.
        self.results_refused = Counter(
            "results_refused", "Results refused by the handler registry", ["tenant", "channel", "reason"], registry=r
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
        self._latency_children: dict[str, Any] = {}

    def latency(self, method: str) -> Any:
        """The latency histogram of one method (labels() is a lookup under a lock)."""
        child = self._latency_children.get(method)
        if child is None:
            child = self._latency_children[method] = self.call_latency.labels(method=method)
        return child


_default: PollerMetrics | None = None
_default_lock = threading.Lock()


def default_metrics() -> PollerMetrics:
    """The private metrics of callers that pass none (made on first use, never served)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = PollerMetrics()
        return _default
