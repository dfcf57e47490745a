"""Metrics live in a registry the caller owns; nothing lands in prometheus_client's
process-global registry, so two pollers (or two tests) never see each other's counts."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry

from poller.agent.client import AgentClient
from poller.dial.dialer import dial_agent
from poller.identity.reasons import IdentityRefused
from poller.metrics import PollerMetrics, default_metrics

ACME = "acme-corp"
XYZ = "xyz-inc"


def _global_poller_metrics() -> list[str]:
    return sorted(name for name in REGISTRY._names_to_collectors if name.startswith("poller_"))


def test_importing_and_making_metrics_registers_nothing_globally() -> None:
    import poller  # noqa: F401

    PollerMetrics()
    default_metrics()
    assert _global_poller_metrics() == []


def test_two_metrics_objects_keep_separate_counts() -> None:
    first, second = PollerMetrics(CollectorRegistry()), PollerMetrics(CollectorRegistry())
    first.polls.labels(tenant=ACME, outcome="ok").inc(3)
    assert first.registry.get_sample_value("poller_polls_total", {"tenant": ACME, "outcome": "ok"}) == 3
    assert second.registry.get_sample_value("poller_polls_total", {"tenant": ACME, "outcome": "ok"}) is None


async def test_dial_counts_decisions_and_calls_in_the_callers_registry(pki, trust, serve) -> None:
    good = await serve(pki.agent(ACME, "agent-001"))
    impostor = await serve(pki.agent(ACME, "agent-666", issuer_tenant=XYZ, dns=[]))
    registry = CollectorRegistry()
    metrics = PollerMetrics(registry)
    async with await dial_agent(good.address, tenant=ACME, trust=trust, metrics=metrics) as conn:
        await AgentClient(conn).get_status("ping", "icmp")
        await AgentClient(conn).get_status("ping", "icmp")
    try:
        await dial_agent(impostor.address, tenant=ACME, trust=trust, metrics=metrics)
    except IdentityRefused as err:
        refusal = err.reason.value
    else:
        raise AssertionError("the impostor was accepted")
    assert registry.get_sample_value("poller_identity_accepts_total", {"tenant": ACME}) == 1
    assert registry.get_sample_value("poller_identity_refusals_total", {"tenant": ACME, "reason": refusal}) == 1
    assert registry.get_sample_value("poller_call_latency_seconds_count", {"method": "GetStatus"}) == 2
    assert _global_poller_metrics() == []
