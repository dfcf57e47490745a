"""Delivery metrics of the NATS sink, registered in a registry the caller owns.

The daemon passes the registry it serves on `metrics_listen`; a library user
passes theirs or gets a private one nobody serves. Labels: tenant slugs and
reason codes (bounded).

>>> from prometheus_client import CollectorRegistry
>>> m = DeliveryMetrics(CollectorRegistry())
>>> m.outbox_dropped.labels(tenant="acme-corp").inc(3)
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["PUBLISH_FAILURES", "UNDELIVERABLE", "DeliveryMetrics"]

#: The reasons the sink counts (poller.nats.sink), made at 0 by DeliveryMetrics.prime.
PUBLISH_FAILURES = ("not_acknowledged", "stream_mismatch", "stream_unavailable")
UNDELIVERABLE = ("invalid_subject", "too_large", "invalid_channel", "payload_mismatch")


class DeliveryMetrics:
    """poller_outbox_pending, poller_outbox_dropped_total{tenant}, poller_nats_connected,
    poller_nats_published_total{tenant}, poller_nats_duplicates_total{tenant},
    poller_nats_publish_failures_total{tenant,reason}, poller_nats_undeliverable_total{tenant,reason},
    poller_outbox_replayed_beyond_window_total{tenant}."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.outbox_pending = Gauge("poller_outbox_pending", "Messages in the outbox waiting for a JetStream ack", registry=r)
        self.outbox_dropped = Counter(
            "poller_outbox_dropped_total", "Messages dropped, oldest first, because the outbox was full", ["tenant"], registry=r
        )
        self.connected = Gauge("poller_nats_connected", "1 while the NATS sink is connected", registry=r)
        self.published = Counter("poller_nats_published_total", "Messages acknowledged by JetStream", ["tenant"], registry=r)
        self.duplicates = Counter(
            "poller_nats_duplicates_total",
            "Publishes JetStream acknowledged as duplicates (a replay of a stored message)",
            ["tenant"],
            registry=r,
        )
        self.publish_failures = Counter(
            "poller_nats_publish_failures_total",
            "Publish attempts that will be retried, by reason",
            ["tenant", "reason"],
            registry=r,
        )
        self.replayed_beyond_window = Counter(
            "poller_outbox_replayed_beyond_window_total",
            "Rows published later than the streams' duplicate window after they were queued (dedup not guaranteed)",
            ["tenant"],
            registry=r,
        )
        self.undeliverable = Counter(
            "poller_nats_undeliverable_total",
            "Messages that can never be delivered (dropped and logged), by reason",
            ["tenant", "reason"],
            registry=r,
        )

    def prime(self, tenants: Iterable[str]) -> None:
        """Every counter's series for `tenants` at 0, so dashboards show 0 before the first failure.

        >>> m = DeliveryMetrics(CollectorRegistry())
        >>> m.prime(["acme-corp"])
        >>> m.registry.get_sample_value("poller_outbox_dropped_total", {"tenant": "acme-corp"})
        0.0
        """
        for tenant in tenants:
            for counter in (self.outbox_dropped, self.published, self.duplicates, self.replayed_beyond_window):
                counter.labels(tenant=tenant)
            for reason in PUBLISH_FAILURES:
                self.publish_failures.labels(tenant=tenant, reason=reason)
            for reason in UNDELIVERABLE:
                self.undeliverable.labels(tenant=tenant, reason=reason)
