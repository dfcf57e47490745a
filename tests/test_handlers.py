"""The handler registry: deny by default, tenant binding, payload lies, labels,
isolation of failing handlers, admin audit, current_tenant() inside handlers.

Unit tests use contexts made without proof (poller.testing helpers); the
end-to-end tests at the bottom poll real mock agents over real mTLS.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from collections.abc import Coroutine
from typing import Any

import pytest

from poller import (
    HandlerRegistry,
    Reason,
    channel_for,
    current_tenant,
    platform_admin,
    same_tenant,
    tenant_in,
)
from poller.config import AgentConfig, CheckConfig, PollerConfig, SinkConfig
from poller.daemon.daemon import PollerDaemon
from poller.delivery import Delivery
from poller.delivery.channels import channel_matches
from poller.delivery.payload import payload_tenant_claims
from poller.delivery.registry import MAX_RESULTS_CHANNEL_LABELS
from poller.delivery.result import PollResult
from poller.identity.reasons import InvalidArgument
from poller.identity.reasons import Reason as R
from poller.metrics import PollerMetrics
from poller.testing import unverified_platform_identity, unverified_tenant_context
from poller.testing.memory_sink import MemorySink

ACME, XYZ = "acme-corp", "xyz-inc"


def result(tenant=ACME, *, proven=True, kind="status", service_type="icmp", payload=b"", reported_agent_id="", agent="edge-1"):
    ctx = unverified_tenant_context(tenant) if proven else None
    return PollResult(
        tenant=tenant,
        agent=agent,
        address="127.0.0.1:1",
        poller_id="p",
        partition="default",
        kind=kind,
        service_name="svc",
        service_type=service_type,
        available=proven,
        context=ctx,
        reason=None if proven else R.UNREACHABLE,
        payload=payload,
        reported_agent_id=reported_agent_id,
    )


def sample(metrics: PollerMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def refused_count(metrics: PollerMetrics, tenant: str, channel: str, reason: str) -> float:
    return sample(metrics, "poller_results_refused_total", tenant=tenant, channel=channel, reason=reason)


class Recorder:
    """An async handler that records what it got and the current_tenant() it saw."""

    def __init__(self) -> None:
        self.got: list[PollResult] = []
        self.seen_tenants: list[str | None] = []

    async def __call__(self, r: PollResult) -> None:
        self.got.append(r)
        try:
            self.seen_tenants.append(current_tenant().tenant)
        except LookupError:
            self.seen_tenants.append(None)


def test_channels():
    assert channel_for(result(kind="status")) == "agents.status"
    assert channel_for(result(kind="results", service_type="sweep")) == "agents.results.sweep"
    assert channel_for(result(kind="stream", service_type="sync")) == "agents.results.sync"
    assert channel_for(result(kind="health")) == "events.poller.health"
    assert channel_for(result(kind="heartbeat")) == "pollers.heartbeat"
    assert channel_matches("agents.results.*", "agents.results.sweep")
    assert not channel_matches("agents.results.*", "agents.status")
    assert channel_matches("agents.>", "agents.results.sweep") and not channel_matches("agents.>", "agents")
    with pytest.raises(ValueError):
        channel_matches("agents.>.x", "agents.status")


async def test_a_bound_handler_never_gets_another_tenants_result_even_if_its_policy_would():
    registry = HandlerRegistry()
    acme = Recorder()
    # The policy is deliberately too broad: the binding is what must hold.
    registry.register(">", acme, tenant=ACME, policy=tenant_in({ACME, XYZ}), name="acme")
    xyz = Recorder()
    registry.register(">", xyz, tenant=XYZ, policy=same_tenant(XYZ), name="xyz")
    await registry.deliver(result(ACME))
    await registry.deliver(result(XYZ))
    assert [r.tenant for r in acme.got] == [ACME] and [r.tenant for r in xyz.got] == [XYZ]
    # Inside a handler, current_tenant() is the result's proven context.
    assert acme.seen_tenants == [ACME] and xyz.seen_tenants == [XYZ]


async def test_deny_by_default_counts_and_logs(log_events):
    metrics = PollerMetrics()
    registry = HandlerRegistry(metrics=metrics)
    registry.register("agents.status", Recorder(), tenant=ACME, policy=same_tenant(ACME), name="acme-status")
    delivery = await registry.deliver(result(XYZ, kind="results", service_type="sweep"))
    assert delivery.refused is Reason.NO_HANDLER and delivery.delivered == ()
    assert refused_count(metrics, XYZ, "agents.results.sweep", "no_handler") == 1
    line = next(entry for entry in log_events() if entry["event"] == "result_refused")
    assert line["tenant"] == XYZ and line["reason"] == "no_handler" and line["agent"] == "edge-1"


async def test_unproven_results_reach_only_platform_handlers():
    registry = HandlerRegistry()
    tenant_handler, platform_handler = Recorder(), Recorder()
    registry.register(">", tenant_handler, tenant=ACME, policy=same_tenant(ACME), name="tenant")
    registry.register(
        ">", platform_handler, platform=unverified_platform_identity(local=True), policy=platform_admin(), name="sink"
    )
    delivery = await registry.deliver(result(ACME, proven=False))
    assert delivery.delivered == ("sink",)
    assert tenant_handler.got == [] and platform_handler.seen_tenants == [None]  # no proven context to bind


@pytest.mark.parametrize(
    "payload",
    [
        b'{"tenant": "xyz-inc", "status": "ok"}',
        b'{"tenant_id": "xyz-inc"}',
        b'{"tenant_slug": "XYZ-INC"}',
        b'{"hosts": [{"ip": "192.0.2.1", "tenant": "xyz-inc"}]}',
        b'{"tenant": 7}',
        b'{"tenantId": "xyz-inc"}',
        b'{"meta": {"Tenant-Slug": "xyz-inc"}}',
        b'{"\\u0074enant": "xyz-inc"}',  # an escaped key is still the key
        b'{"ten_ant": "xyz-inc"}',  # the key rule drops `_` and `-`: so must the pre-check
        b'{"hosts": [{"Ten-Ant-Id": "xyz-inc"}]}',
        b'{"t_e_n_a_n_t_slug": "xyz-inc"}',
    ],
)
async def test_a_payload_naming_another_tenant_is_refused_and_audited(payload, log_events):
    metrics = PollerMetrics()
    registry = HandlerRegistry(metrics=metrics)
    sink = Recorder()
    registry.register(">", sink, platform=unverified_platform_identity(local=True), policy=platform_admin(), name="sink")
    delivery = await registry.deliver(result(ACME, payload=payload))
    assert delivery.refused is Reason.PAYLOAD_MISMATCH
    assert sink.got == []  # not passed on, not even to the platform sink
    assert refused_count(metrics, ACME, "agents.status", "payload_mismatch") == 1
    audit = next(e for e in log_events() if e["event"] == "result_refused")
    assert audit["logger"] == "poller.audit"
    assert audit["audit"] is True and audit["reason"] == "payload_mismatch" and audit["tenant"] == ACME
    assert audit["serial"] and audit["fingerprint"]


async def test_refusals_under_invented_results_types_mint_a_bounded_number_of_series():
    metrics = PollerMetrics()
    registry = HandlerRegistry(metrics=metrics)
    registry.register(">", Recorder(), platform=unverified_platform_identity(local=True), policy=platform_admin(), name="sink")
    lie = b'{"tenant": "xyz-inc"}'
    for n in range(MAX_RESULTS_CHANNEL_LABELS + 50):
        assert (await registry.deliver(result(kind="results", service_type=f"made-up-{n}", payload=lie))).refused
    assert (await registry.deliver(result(payload=lie))).refused  # a fixed channel keeps its own label
    channels = {s.labels["channel"] for m in metrics.registry.collect() if m.name == "poller_results_refused" for s in m.samples}
    assert len([c for c in channels if c.startswith("agents.results.")]) == MAX_RESULTS_CHANNEL_LABELS
    assert {"other", "agents.status"} <= channels
    assert refused_count(metrics, ACME, "other", "payload_mismatch") == 50
    assert refused_count(metrics, ACME, "agents.results.made-up-0", "payload_mismatch") == 1
    assert refused_count(metrics, ACME, "agents.status", "payload_mismatch") == 1
    # The cap is the tenant's own: another tenant's channels keep their names.
    xyz_lie = b'{"tenant": "acme-corp"}'
    assert (await registry.deliver(result(XYZ, kind="results", service_type="sweep", payload=xyz_lie))).refused
    assert refused_count(metrics, XYZ, "agents.results.sweep", "payload_mismatch") == 1


async def test_a_payload_naming_the_proven_tenant_or_none_is_delivered():
    registry = HandlerRegistry()
    sink = Recorder()
    registry.register(">", sink, tenant=ACME, policy=same_tenant(ACME), name="acme")
    for payload in (b'{"tenant": "acme-corp"}', b'{"tenant": null, "tenant_id": ""}', b"not json", b""):
        assert (await registry.deliver(result(ACME, payload=payload))).ok
    assert len(sink.got) == 4
    assert payload_tenant_claims([[{"a": {"tenant": "x"}}]]) == {"x"}


async def test_reported_labels_are_kept_beside_the_proof_and_counted(log_events):
    metrics = PollerMetrics()
    registry = HandlerRegistry(metrics=metrics)
    sink = Recorder()
    registry.register(">", sink, tenant=ACME, policy=same_tenant(ACME), name="acme")
    lying = result(ACME, reported_agent_id="docker-agent", payload=b'{"partition": "elsewhere"}')
    assert (await registry.deliver(lying)).ok
    assert (await registry.deliver(lying)).ok
    logs = log_events()
    doc = sink.got[0].to_json()
    assert doc["reported"] == {"agent_id": "docker-agent", "partition": "elsewhere"}
    assert doc["identity"]["component_id"] == "agent-001" and doc["tenant"] == ACME
    assert sample(metrics, "poller_label_mismatches_total", tenant=ACME, label="agent_id") == 2
    # Logged once per new disagreement, not once per poll.
    assert sum(1 for e in logs if e["event"] == "label_mismatch" and e["label"] == "agent_id") == 1


async def test_strict_labels_refuse_a_disagreement():
    registry = HandlerRegistry(strict_labels=lambda r: r.agent == "strict-one")
    sink = Recorder()
    registry.register(">", sink, tenant=ACME, policy=same_tenant(ACME), name="acme")
    delivery = await registry.deliver(result(ACME, agent="strict-one", reported_agent_id="docker-agent"))
    assert delivery.refused is Reason.LABEL_MISMATCH
    assert (await registry.deliver(result(ACME, agent="lenient", reported_agent_id="docker-agent"))).ok
    assert (await registry.deliver(result(ACME, agent="strict-one", reported_agent_id="agent-001"))).ok
    assert [r.agent for r in sink.got] == ["lenient", "strict-one"]


async def test_raising_and_hanging_handlers_do_not_stop_the_others(log_events):
    metrics = PollerMetrics()
    registry = HandlerRegistry(timeout=1.0, metrics=metrics)
    good = Recorder()
    never = asyncio.Event()
    stubborn_started = asyncio.Event()

    async def raising(r: PollResult) -> None:
        raise RuntimeError("boom")

    async def hanging(r: PollResult) -> None:
        await never.wait()

    release = asyncio.Event()

    async def stubborn(r: PollResult) -> None:
        stubborn_started.set()
        while not release.is_set():  # swallows cancellation: the registry must not wait for it anyway
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue

    for name, handler in (("raising", raising), ("hanging", hanging), ("stubborn", stubborn), ("good", good)):
        registry.register(">", handler, tenant=ACME, policy=same_tenant(ACME), name=name)
    async with asyncio.timeout(30):  # a guard against a hang, not a timing assertion
        delivery = await registry.deliver(result(ACME))
    logs = log_events()
    assert delivery.delivered == ("good",) and len(good.got) == 1
    assert delivery.failed == {
        "raising": Reason.HANDLER_FAILED,
        "hanging": Reason.HANDLER_TIMEOUT,
        "stubborn": Reason.HANDLER_TIMEOUT,
    }
    failures = {e["handler"]: e for e in logs if e["event"] == "handler_failed"}
    assert set(failures) == {"raising", "hanging", "stubborn"}
    assert all(e["tenant"] == ACME for e in failures.values())
    assert "RuntimeError: boom" in failures["raising"]["detail"]
    assert sample(metrics, "poller_handler_failures_total", tenant=ACME, handler="raising", reason="handler_failed") == 1
    assert sample(metrics, "poller_handler_failures_total", tenant=ACME, handler="hanging", reason="handler_timeout") == 1
    assert stubborn_started.is_set()
    release.set()  # let the stubborn handler end, so the test leaves nothing running
    await registry.close()


async def test_an_eager_handler_runs_in_the_delivering_task_bound_and_bounded_as_any(log_events):
    """eager=True (poller.eager): a handler that does not wait gets no task; one
    that fails or hangs is refused and bounded exactly as a task-run one is."""
    metrics = PollerMetrics()
    registry = HandlerRegistry(timeout=0.2, metrics=metrics)
    tasks: list[asyncio.Task | None] = []
    never = asyncio.Event()

    class Quick(Recorder):
        async def __call__(self, r: PollResult) -> None:
            tasks.append(asyncio.current_task())
            await super().__call__(r)

    async def raising(r: PollResult) -> None:
        raise RuntimeError("boom")

    async def hanging(r: PollResult) -> None:
        await never.wait()

    quick, other = Quick(), Recorder()
    registry.register(">", quick, tenant=ACME, policy=same_tenant(ACME), name="quick", eager=True)
    registry.register(">", other, tenant=XYZ, policy=same_tenant(XYZ), name="xyz", eager=True)
    assert (await registry.deliver(result(ACME))).delivered == ("quick",)
    assert tasks == [asyncio.current_task()] and quick.seen_tenants == [ACME] and other.got == []

    failing = HandlerRegistry(timeout=0.2, metrics=metrics)
    for name, handler in (("raising", raising), ("hanging", hanging)):
        failing.register(">", handler, tenant=ACME, policy=same_tenant(ACME), name=name, eager=True)
    assert all(r.eager for r in failing.registrations)
    async with asyncio.timeout(30):  # a guard against a hang, not a timing assertion
        delivery = await failing.deliver(result(ACME))
    assert delivery.failed == {"raising": Reason.HANDLER_FAILED, "hanging": Reason.HANDLER_TIMEOUT}
    assert sample(metrics, "poller_handler_failures_total", tenant=ACME, handler="hanging", reason="handler_timeout") == 1
    await failing.close()
    await registry.close()


@pytest.mark.parametrize("eager", [False, True])
async def test_every_shape_of_handler_is_run_bound_to_the_results_tenant(eager):
    """An async function, an object with an async __call__, a partial of one, a
    plain function (run in a thread) and a plain function returning an awaitable:
    each gets the result once, with current_tenant() bound to its proof."""
    seen: dict[str, list[str]] = {}

    def note(name: str) -> None:
        seen.setdefault(name, []).append(current_tenant().tenant)

    async def coroutine_function(r: PollResult) -> None:
        note("coroutine_function")

    async def with_prefix(prefix: str, r: PollResult) -> None:
        note(prefix)

    def plain(r: PollResult) -> None:
        note("plain")

    async def later() -> None:
        note("returns_awaitable")

    def returns_awaitable(r: PollResult) -> Coroutine[Any, Any, None]:  # run in a thread, awaited on the loop
        return later()

    class CallableObject:
        async def __call__(self, r: PollResult) -> None:
            note("callable_object")

    handlers = {
        "coroutine_function": coroutine_function,
        "partial": functools.partial(with_prefix, "partial"),
        "plain": plain,
        "returns_awaitable": returns_awaitable,
        "callable_object": CallableObject(),
    }
    registry = HandlerRegistry()
    for name, handler in handlers.items():
        registry.register(">", handler, tenant=ACME, policy=same_tenant(ACME), name=name, eager=eager)
    delivery = await registry.deliver(result(ACME))
    assert delivery.ok and sorted(delivery.delivered) == sorted(handlers)
    assert seen == {name: [ACME] for name in handlers}

    async def takes_nothing() -> None:  # cannot even be called with a result
        note("takes_nothing")

    registry.register(">", takes_nothing, tenant=ACME, policy=same_tenant(ACME), name="takes_nothing", eager=eager)
    delivery = await registry.deliver(result(ACME))
    assert delivery.failed == {"takes_nothing": Reason.HANDLER_FAILED} and sorted(delivery.delivered) == sorted(handlers)
    assert "takes_nothing" not in seen
    await registry.close()


async def test_a_sinks_own_eager_attribute_is_the_default():
    class Eager(MemorySink):
        eager = True

    registry = HandlerRegistry()
    eager_sink, plain = Eager(), MemorySink()
    registry.register(">", eager_sink, platform=unverified_platform_identity(local=True), policy=platform_admin(), name="e")
    registry.register(">", plain, platform=unverified_platform_identity(local=True), policy=platform_admin(), name="p")
    registry.register(
        ">", Eager(), platform=unverified_platform_identity(local=True), policy=platform_admin(), name="x", eager=False
    )
    assert [r.eager for r in registry.registrations] == [True, False, False]
    assert (await registry.deliver(result(ACME))).delivered == ("e", "p", "x")
    await registry.flush()
    assert len(eager_sink.results) == len(plain.results) == 1


async def test_a_hanging_sink_flush_is_bounded_and_counted(log_events):
    class StuckSink:
        def __init__(self) -> None:
            self.release = asyncio.Event()

        async def publish(self, r: PollResult) -> None:
            pass

        async def flush(self) -> None:
            await self.release.wait()

        async def close(self) -> None:
            pass

    metrics = PollerMetrics()
    registry = HandlerRegistry(timeout=0.2, metrics=metrics)
    sink = StuckSink()
    registry.register(">", sink, platform=unverified_platform_identity(local=True), policy=platform_admin(), name="stuck")
    async with asyncio.timeout(30):  # a guard against a hang, not a timing assertion
        unflushed = await registry.flush()
    assert unflushed == {"stuck": Reason.HANDLER_TIMEOUT}  # told, so a caller promising durability can refuse
    assert sample(metrics, "poller_handler_failures_total", tenant="", handler="stuck", reason="handler_timeout") == 1
    assert any(e["event"] == "sink_flush_failed" and e["handler"] == "stuck" for e in log_events())
    sink.release.set()
    await registry.close()


async def test_flush_follows_the_registrations_as_they_change():
    """The registry keeps its list of sinks between flushes: a sink registered
    later is flushed, one unregistered is not, one registered twice once."""

    class CountingFlushes(MemorySink):
        def __init__(self) -> None:
            super().__init__()
            self.flushes = 0

        async def flush(self) -> None:
            self.flushes += 1

    registry = HandlerRegistry()
    first, second = CountingFlushes(), CountingFlushes()
    admin = unverified_platform_identity(local=True)
    registry.register(">", first, platform=admin, policy=platform_admin(), name="first")
    await registry.flush()
    registry.register(">", second, platform=admin, policy=platform_admin(), name="second")
    registry.register("agents.>", second, platform=admin, policy=platform_admin(), name="second-again")
    await registry.flush()
    registry.unregister("first")
    assert await registry.flush() == {}  # every sink flushed: nothing to report
    assert (first.flushes, second.flushes) == (2, 2)


async def test_a_plain_function_runs_in_a_thread_with_the_tenant_bound():
    registry = HandlerRegistry()
    seen: list[tuple[str, bool]] = []

    def blocking(r: PollResult) -> None:
        seen.append((current_tenant().tenant, threading.current_thread() is threading.main_thread()))

    registry.register(">", blocking, tenant=XYZ, policy=same_tenant(XYZ), name="blocking")
    assert (await registry.deliver(result(XYZ))).ok
    assert seen == [(XYZ, False)]


async def test_admin_cross_tenant_deliveries_are_audited_and_the_local_sink_is_not(log_events):
    registry = HandlerRegistry()
    admin = unverified_platform_identity("ops-admin")
    registry.register("agents.status", Recorder(), platform=admin, policy=platform_admin(), name="admin-view")
    registry.register(
        ">", Recorder(), platform=unverified_platform_identity("poller-1", local=True), policy=platform_admin(), name="sink"
    )
    await registry.deliver(result(XYZ))
    await registry.deliver(result(ACME))
    audits = [e for e in log_events() if e["event"] == "cross_tenant_delivery"]
    assert [(e["tenant"], e["admin"], e["handler"]) for e in audits] == [
        (XYZ, "ops-admin.platform.serviceradar", "admin-view"),
        (ACME, "ops-admin.platform.serviceradar", "admin-view"),
    ]
    assert all(e["audit"] is True and e["admin_fingerprint"] for e in audits)


async def test_invalid_service_type_is_refused_not_published_under_a_bad_subject():
    registry = HandlerRegistry()
    registry.register(">", Recorder(), platform=unverified_platform_identity(local=True), policy=platform_admin(), name="sink")
    for bad in ("a.b", "*", ">", "sweep now", ""):
        delivery = await registry.deliver(result(ACME, kind="results", service_type=bad))
        assert delivery.refused is Reason.INVALID_CHANNEL


async def test_a_policy_that_raises_denies(log_events):
    from poller import Access, Decision, Policy

    class Broken(Policy):
        def evaluate(self, access: Access) -> Decision:
            raise RuntimeError("bug in a custom policy")

    registry = HandlerRegistry()
    handler = Recorder()
    registry.register(">", handler, tenant=ACME, policy=Broken(), name="broken")
    delivery = await registry.deliver(result(ACME))
    assert delivery.refused is Reason.NO_HANDLER and handler.got == []
    assert any(e["event"] == "policy_failed" and e["handler"] == "broken" for e in log_events())


def test_registration_needs_exactly_one_scope_and_a_policy():
    registry = HandlerRegistry()
    with pytest.raises(ValueError):
        registry.register(">", Recorder(), policy=same_tenant(ACME))
    with pytest.raises(ValueError):
        registry.register(">", Recorder(), policy=same_tenant(ACME), tenant=ACME, platform=unverified_platform_identity())
    with pytest.raises(TypeError):
        registry.register(">", Recorder(), policy=lambda a: True, tenant=ACME)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        registry.register("agents.*x", Recorder(), policy=same_tenant(ACME), tenant=ACME)
    registry.register(">", Recorder(), policy=same_tenant(ACME), tenant=ACME, name="one")
    with pytest.raises(ValueError):
        registry.register(">", Recorder(), policy=same_tenant(ACME), tenant=ACME, name="one")


# --- end to end: real agents over mTLS, through the daemon's registry -------------------


def settings(pki, agents, **extra) -> PollerConfig:
    return PollerConfig(
        poller_id="p-handlers",
        certs_dir=pki.directory,
        poll_interval=30.0,
        call_timeout=3.0,
        sink=SinkConfig(type="file", dir=None),
        agents=tuple(agents),
        **extra,
    )


def agent_config(name, agent, tenant=ACME, **kw) -> AgentConfig:
    return AgentConfig(name=name, address=agent.address, tenant=tenant, checks=(CheckConfig("process", "p"),), **kw)


async def test_daemon_refuses_an_agent_payload_claiming_another_tenant(pki, serve, log_events):
    honest = await serve(pki.agent(ACME, "agent-001"))
    liar = await serve(pki.agent(ACME, "agent-002"))
    liar.behaviour.message = json.dumps({"status": "ok", "tenant": XYZ}).encode()
    sink = MemorySink()
    daemon = PollerDaemon(settings(pki, [agent_config("honest", honest), agent_config("liar", liar)]), sink=sink)
    results = await daemon.run_once()
    logs = log_events()
    assert {r.agent for r in results} == {"honest", "liar"}
    assert [r.agent for r in sink.results] == ["honest"]
    refusal = next(e for e in logs if e["event"] == "result_refused")
    assert refusal["agent"] == "liar" and refusal["reason"] == "payload_mismatch" and refusal["component"] == "agent-002"


async def test_daemon_strict_labels_per_agent(pki, serve):
    lenient = await serve(pki.agent(ACME, "agent-001"))
    strict = await serve(pki.agent(ACME, "agent-002"))
    for agent in (lenient, strict):
        agent.behaviour.claim_agent_id = "docker-agent"  # what a ServiceRadar agent's own config says
    sink = MemorySink()
    daemon = PollerDaemon(
        settings(pki, [agent_config("lenient", lenient), agent_config("strict", strict, strict_labels=True)]), sink=sink
    )
    await daemon.run_once()
    assert [r.agent for r in sink.results] == ["lenient"]
    doc = sink.results[0].to_json()
    assert doc["reported"]["agent_id"] == "docker-agent" and doc["identity"]["component_id"] == "agent-001"


async def test_a_library_handler_beside_the_daemons_sink_sees_its_tenant_bound(pki, serve):
    acme = await serve(pki.agent(ACME, "agent-001"))
    xyz = await serve(pki.agent(XYZ, "agent-007", "site-b"))
    xyz.behaviour.results_data = b'{"hosts": [{"ip": "192.0.2.7"}]}'
    registry = HandlerRegistry()
    seen: list[tuple[str, str, str]] = []

    async def on_xyz_results(r: PollResult) -> None:
        seen.append((r.agent, channel_for(r), current_tenant().tenant))

    registry.register("agents.results.*", on_xyz_results, tenant=XYZ, policy=same_tenant(XYZ), name="xyz-results")
    sink = MemorySink()
    results_check = CheckConfig("snmp", "interfaces", results_interval=60.0)
    agents = [
        AgentConfig(name="acme", address=acme.address, tenant=ACME, checks=(CheckConfig("process", "p"), results_check)),
        AgentConfig(name="xyz", address=xyz.address, tenant=XYZ, checks=(CheckConfig("process", "p"), results_check)),
    ]
    daemon = PollerDaemon(settings(pki, agents), sink=sink, registry=registry)
    await daemon.run_once()
    assert seen == [("xyz", "agents.results.snmp", XYZ)]  # not acme's results, not xyz's status
    assert len(sink.results) == 4  # the sink (a platform handler) got everything


async def test_deliver_takes_a_checked_only_for_the_result_it_was_made_for():
    # check() then deliver(result, checked) skips the checks: handing it another result's
    # Checked (another tenant's handlers) must fail loudly, never deliver across tenants.
    registry = HandlerRegistry(metrics=PollerMetrics())
    got: list[tuple[str, str]] = []

    async def xyz_handler(r: PollResult) -> None:
        got.append(("xyz", r.tenant))

    registry.register("agents.status", xyz_handler, tenant=XYZ, policy=same_tenant(XYZ), name="xyz")
    checked = registry.check(result(XYZ))
    assert not isinstance(checked, Delivery)
    with pytest.raises(InvalidArgument, match="another result"):
        await registry.deliver(result(ACME), checked)
    assert got == []
    mine = result(XYZ)
    passed = registry.check(mine)
    assert not isinstance(passed, Delivery)
    assert (await registry.deliver(mine, passed)).ok and got == [("xyz", XYZ)]
