"""Prometheus metrics of the poller (process-wide, served by the daemon).

Labels are bounded: tenant slugs, reason codes, method names, outcomes.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

POLLS = Counter("poller_polls_total", "Polls of agents by tenant and outcome", ["tenant", "outcome"])
IDENTITY_REFUSALS = Counter("poller_identity_refusals_total", "Agent identities refused, by reason", ["tenant", "reason"])
IDENTITY_ACCEPTS = Counter("poller_identity_accepts_total", "Agent identities proven", ["tenant"])
CALL_LATENCY = Histogram(
    "poller_call_latency_seconds",
    "Latency of calls to agents",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CONNECTED_AGENTS = Gauge("poller_connected_agents", "Agents with a proven, open channel", ["tenant"])
CERT_EXPIRY_DAYS = Gauge(
    "poller_certificate_expiry_days",
    "Days until a certificate expires (the poller's own and each agent's)",
    ["kind", "tenant", "name"],
)
CLUSTER_MEMBERS = Gauge("poller_cluster_members", "Live replicas in this replica's view of the cluster (dynamic mode)")
CLUSTER_LEASES = Gauge("poller_cluster_leases", "Agent leases this replica holds (dynamic mode), by tenant", ["tenant"])
