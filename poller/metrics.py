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

# Delivery to NATS JetStream (poller.nats).
OUTBOX_PENDING = Gauge("poller_outbox_pending", "Messages in the outbox waiting for a JetStream ack")
OUTBOX_DROPPED = Counter("poller_outbox_dropped_total", "Messages dropped, oldest first, because the outbox was full", ["tenant"])
NATS_CONNECTED = Gauge("poller_nats_connected", "1 while the NATS sink is connected")
NATS_PUBLISHED = Counter("poller_nats_published_total", "Messages acknowledged by JetStream", ["tenant"])
NATS_DUPLICATES = Counter(
    "poller_nats_duplicates_total", "Publishes JetStream acknowledged as duplicates (a replay of a stored message)", ["tenant"]
)
NATS_PUBLISH_FAILURES = Counter(
    "poller_nats_publish_failures_total", "Publish attempts that will be retried, by reason", ["tenant", "reason"]
)
NATS_UNDELIVERABLE = Counter(
    "poller_nats_undeliverable_total",
    "Messages that can never be delivered (dropped and logged), by reason",
    ["tenant", "reason"],
)
