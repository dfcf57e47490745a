"""The agent gateway (issue 16): real mTLS on loopback, the real grpc.aio server
behind TenantServerInterceptor, the project's own push agent as the client,
results through a real HandlerRegistry into a real FileSink.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from poller.agent.budget import ReassemblyBudget
from poller.config import CheckConfig
from poller.delivery import FileSink, HandlerRegistry
from poller.delivery.result import PollResult
from poller.gateway import (
    AgentGateway,
    GatewayBounds,
    GatewayServer,
    PushEntry,
    PushRegistry,
    PushTracker,
    agent_checks,
    config_version,
    serve_gateway,
)
from poller.gateway import service as gateway_service
from poller.gateway.reads import AgentReads
from poller.gateway.service import KEPT_CHUNK_BYTES, KEPT_STATUS_BYTES
from poller.identity import certinfo
from poller.identity.reasons import InvalidArgument, Reason
from poller.metrics import PollerMetrics
from poller.policy import platform_admin
from poller.proto import monitoring_pb2 as pb
from poller.proto import monitoring_pb2_grpc as pb_grpc
from poller.testing import ForgedCert, ForgePki
from poller.testing.push_agent import PushAgent, refusal_of
from poller.trust import TrustStore
from poller.trust.platform import local_platform_identity

ACME, XYZ = "acme-corp", "xyz-inc"
SERVER_NAME = "poller-1.serviceradar"  # the gateway serves with the PKI's poller certificate in these tests


@dataclass
class Gateway:
    pki: ForgePki
    trust: TrustStore
    server: GatewayServer
    gateway: AgentGateway
    data: Path
    metrics: PollerMetrics
    agents: list[PushAgent]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def agent(self, cert: ForgedCert, **options) -> PushAgent:
        agent = PushAgent.for_cert(self.address, cert, ca_pem=self.pki.root_pem, server_name=SERVER_NAME, **options)
        self.agents.append(agent)
        return agent

    def rows(self, tenant: str) -> list[dict]:
        path = self.data / tenant / "results.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def pushes(self, tenant: str, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value("poller_gateway_pushes_total", {"tenant": tenant, "outcome": outcome})
        return value or 0.0

    def refused(self, tenant: str, method: str, reason: str) -> float:
        labels = {"tenant": tenant, "method": method, "reason": reason}
        return self.metrics.registry.get_sample_value("poller_gateway_calls_refused_total", labels) or 0.0


CHECKS = (CheckConfig(service_type="port", service_name="ssh", details="127.0.0.1", port=22),)


def entries() -> list[PushEntry]:
    return [
        PushEntry("edge-acme", tenant=ACME, component="agent-001", checks=CHECKS, interval=15.0),
        PushEntry("edge-xyz", tenant=XYZ, component="agent-007", partition="site-b", interval=30.0),
    ]


async def start(pki: ForgePki, tmp_path: Path, **options) -> Gateway:
    trust = TrustStore(pki.directory, require_client=False)
    metrics = PollerMetrics()
    sink = options.pop("sink", None) or FileSink(tmp_path / "data", commit_delay=0)
    registry = HandlerRegistry(timeout=5.0, metrics=metrics)
    registry.register(">", sink, policy=platform_admin(), platform=local_platform_identity(trust.client), name="file-sink")
    gateway = AgentGateway(
        pushes=PushRegistry(options.pop("entries", entries()), accept_unlisted=options.pop("accept_unlisted", False)),
        delivery=registry,
        gateway_id=options.pop("gateway_id", "poller-1"),
        bounds=options.pop("bounds", None),
        budget=options.pop("budget", None),
        trust=trust,
        tracker=options.pop("tracker", None),
        metrics=metrics,
    )
    chain, key = pki.client_identity()
    server = await serve_gateway(gateway, trust, options.pop("listen", "127.0.0.1:0"), chain, key, **options)
    return Gateway(pki, trust, server, gateway, tmp_path / "data", metrics, [])


@contextlib.asynccontextmanager
async def started(pki: ForgePki, tmp_path: Path, **options) -> AsyncIterator[Gateway]:
    g = await start(pki, tmp_path, **options)
    try:
        yield g
    finally:
        for agent in g.agents:
            await agent.close()
        await g.server.stop(None)


@pytest.fixture
async def gw(pki, tmp_path) -> AsyncIterator[Gateway]:
    async with started(pki, tmp_path) as g:
        yield g


async def refused(call) -> tuple[grpc.StatusCode, str | None]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return refusal_of(info.value)


def audited(log_events, event: str) -> list[dict]:
    return [e for e in log_events() if e["event"] == event and e.get("audit") is True]


# -- the honest path ---------------------------------------------------------------------


def test_the_registry_prefers_an_entry_for_the_partition_and_keeps_the_listed_order():
    anywhere = PushEntry("any-site", tenant=ACME, component="agent-001")
    site_b = PushEntry("site-b", tenant=ACME, component="agent-001", partition="site-b")
    other = PushEntry("other", tenant=XYZ, component="agent-001", partition="site-c")
    registry = PushRegistry([anywhere, other, site_b])
    assert registry.lookup(ACME, "agent-001", "site-b") is site_b
    assert registry.lookup(ACME, "agent-001", "site-a") is anywhere
    assert registry.lookup(XYZ, "agent-001", "site-b") is None
    assert registry.lookup(ACME, "agent-002", "site-b") is None
    assert registry.entries == (anywhere, other, site_b)
    assert registry.tenants == {ACME, XYZ}
    registry.set_entries([site_b])  # a reload: the tenants follow the entries
    assert registry.tenants == {ACME} and registry.lookup(XYZ, "agent-001", "site-c") is None


async def test_hello_config_and_a_push_filed_under_the_proven_tenant(gw):
    agent = gw.agent(gw.pki.agent(ACME, "agent-001"))
    hello = await agent.hello()
    assert (hello.accepted, hello.agent_id, hello.gateway_id, hello.heartbeat_interval_sec) == (True, "agent-001", "poller-1", 15)
    assert hello.config_outdated and (hello.tenant_id, hello.tenant_slug) == (ACME, ACME)  # the proven tenant
    config = await agent.get_config()
    [check] = config.checks
    assert (check.check_type, check.target, check.port, check.name, check.enabled) == ("port", "127.0.0.1:22", 22, "ssh", True)
    assert config.config_version == config_version(agent_checks(CHECKS, interval=15.0)) and config.heartbeat_interval_sec == 15
    assert (await agent.get_config(config_version=config.config_version)).not_modified
    assert not (await agent.hello(config_version=config.config_version)).config_outdated

    assert (await agent.push([agent.status("ssh", message=b'{"open":true}')])).received
    [row] = gw.rows(ACME)
    assert row["identity"]["tenant"] == ACME and row["identity"]["component_id"] == "agent-001"
    assert (row["tenant"], row["agent"], row["kind"], row["poller_id"], row["data"]) == (
        ACME,
        "edge-acme",
        "status",
        "poller-1",
        {"open": True},
    )
    assert row["address"].startswith("127.0.0.1:") and row["agent_timestamp"] > 0
    assert gw.rows(XYZ) == [] and gw.pushes(ACME, "ok") == 1
    record = gw.gateway.tracker.get(ACME, "edge-acme")
    assert record is not None and record.pushes == 1 and record.peer == row["address"]


async def test_a_results_source_is_a_results_result(gw):
    agent = gw.agent(gw.pki.agent(XYZ, "agent-007", "site-b"))
    await agent.push([agent.status("sweep", service_type="sweep", source="results", message=b'{"hosts":[]}')])
    [row] = gw.rows(XYZ)
    assert (row["kind"], row["service_type"], row["partition"]) == ("results", "sweep", "default")
    assert gw.rows(ACME) == []


async def test_the_metrics_sources_of_later_agents_are_results_and_any_other_source_a_status(gw):
    # cf23e4b05 agents stream sysmon-metrics (StreamStatus) and push plugin results;
    # refused, such an agent dropped its connection at every stream and flapped unreachable.
    agent = gw.agent(gw.pki.agent(ACME, "agent-001"))
    sysmon = b'{"cpus":[' + b",".join(b'{"core_id":%d,"usage_percent":1.5}' % i for i in range(300)) + b"]}"
    assert len(sysmon) > 4096  # over the status bound, within the results bound
    assert (await agent.stream([agent.status("sysmon", service_type="sysmon", source="sysmon-metrics", message=sysmon)])).received
    assert (await agent.push([agent.status("dns", service_type="plugin", source="plugin-result", message=b"{}")])).received
    assert (await agent.push([agent.status("odd", service_type="odd", source="from-a-future-agent")])).received
    kinds = [(r["service_name"], r["kind"], r["service_type"]) for r in gw.rows(ACME)]
    assert kinds == [("sysmon", "results", "sysmon"), ("dns", "results", "plugin"), ("odd", "status", "odd")]
    # An unknown source is held to a status's bound; a malformed one is refused.
    big = agent.status("odd", service_type="odd", source="from-a-future-agent", message=b"x" * 5000)
    assert await refused(agent.push([big])) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "resource_exhausted")
    bad = agent.status("odd", source="tab\there")
    assert await refused(agent.push([bad])) == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_payload")
    assert len(gw.rows(ACME)) == 3 and gw.rows(XYZ) == []


@pytest.mark.parametrize("control", ["\x1b[2J", "\x7f", "\x85", "\u2028", "\x07"], ids=["esc", "del", "nel", "lsep", "bel"])
@pytest.mark.parametrize("field", ["service_name", "service_type", "source"])
async def test_a_name_holding_any_control_character_is_invalid_payload(gw, field, control):
    # Only \n \r \t and NUL were caught; an ESC sequence in a service name reached
    # the file sink, the targets page and a terminal reading the logs.
    agent = gw.agent(gw.pki.agent(ACME, "agent-001"))
    fields = {"service_name": "ssh", "service_type": "port", "source": "from-a-future-agent", field: f"odd{control}name"}
    status = agent.status(fields.pop("service_name"), **fields)
    assert await refused(agent.push([status])) == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_payload")
    assert gw.rows(ACME) == []


async def test_a_results_type_that_is_no_subject_token_is_invalid_channel_counted_from_0(gw):
    gw.metrics.prime([ACME], gateway=True)
    labels = {"tenant": ACME, "outcome": "invalid_channel"}
    assert gw.metrics.registry.get_sample_value("poller_gateway_pushes_total", labels) == 0.0  # primed
    agent = gw.agent(gw.pki.agent(ACME, "agent-001"))
    status = agent.status("sweep", service_type="a*b", source="results", message=b"{}")
    code, reason = await refused(agent.push([status]))
    assert reason == "invalid_channel" and code != grpc.StatusCode.OK
    assert gw.metrics.registry.get_sample_value("poller_gateway_pushes_total", labels) == 1.0 and gw.rows(ACME) == []


async def test_the_real_agents_loop_runs_a_port_check(gw, tmp_path):
    listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    await gw.server.stop(None)
    checks = (CheckConfig(service_type="tcp", service_name="svc", details=f"127.0.0.1:{port}"),)
    entry = PushEntry("e", tenant=ACME, component="agent-001", checks=checks, interval=1)
    try:
        async with started(gw.pki, tmp_path / "2", entries=[entry]) as g:
            agent = g.agent(g.pki.agent(ACME, "agent-001"))
            await agent.run(pushes=1)
            [check] = agent.config.checks
            assert (check.check_type, check.target, check.port) == ("port", f"127.0.0.1:{port}", port)
            [row] = g.rows(ACME)
            assert (row["service_name"], row["service_type"], row["available"]) == ("svc", "port", True)
    finally:
        listener.close()


# -- who may push ----------------------------------------------------------------------


async def test_an_unlisted_identity_is_unknown_agent(gw, log_events):
    agent = gw.agent(gw.pki.agent(ACME, "agent-002"))
    assert await refused(agent.hello()) == (grpc.StatusCode.PERMISSION_DENIED, "unknown_agent")
    assert await refused(agent.push([agent.status("x")])) == (grpc.StatusCode.PERMISSION_DENIED, "unknown_agent")
    # The listed partition counts too: agent-007 of xyz-inc is listed for site-b only.
    other = gw.agent(gw.pki.agent(XYZ, "agent-007", "site-c"))
    assert await refused(other.hello()) == (grpc.StatusCode.PERMISSION_DENIED, "unknown_agent")
    refusals = [e for e in audited(log_events, "server_call_refused") if e["reason"] == "unknown_agent"]
    assert len(refusals) == 3 and refusals[0]["component"] == "agent-002"
    assert gw.rows(ACME) == [] and gw.pushes(ACME, "unknown_agent") == 1  # the push, not the Hellos
    assert gw.refused(ACME, "Hello", "unknown_agent") == 1 and gw.refused(XYZ, "Hello", "unknown_agent") == 1
    assert gw.refused(ACME, "PushStatus", "unknown_agent") == 1  # every refused call, by method


async def test_accept_unlisted_admits_any_proven_identity_without_checks(pki, tmp_path):
    async with started(pki, tmp_path, entries=[], accept_unlisted=True) as g:
        agent = g.agent(pki.agent(ACME, "agent-042", "lab"))
        assert (await agent.hello()).accepted
        assert list((await agent.get_config()).checks) == []
        await agent.push([agent.status("x")])
        [row] = g.rows(ACME)
        assert row["identity"]["component_id"] == "agent-042"
        # Still proven: an impostor from another tenant's CA is refused by the interceptor.
        impostor = g.agent(pki.agent(ACME, "agent-043", issuer_tenant=XYZ, dns=[]))
        assert await refused(impostor.hello()) == (grpc.StatusCode.UNAUTHENTICATED, "tenant_mismatch")


async def test_an_unlisted_agent_is_named_for_its_identity_never_for_a_listed_entry(pki, tmp_path):
    # A listed entry whose name reads like "<component>.<partition>", for agent-001; an
    # unlisted certificate probe/site-a of the same tenant, and one of another tenant.
    listed = PushEntry("probe.site-a", tenant=ACME, component="agent-001", interval=15.0)
    async with started(pki, tmp_path, entries=[listed], accept_unlisted=True) as g:
        for tenant in (ACME, XYZ):
            other = g.agent(pki.agent(tenant, "probe", "site-a"))
            assert (await other.push([other.status("ssh")])).received
        [acme_row], [xyz_row] = g.rows(ACME), g.rows(XYZ)
        assert (acme_row["agent"], xyz_row["agent"]) == ("unlisted:acme-corp/probe.site-a", "unlisted:xyz-inc/probe.site-a")
        assert g.gateway.tracker.get(ACME, "probe.site-a") is None  # agent-001 never pushed: its record is not fed
        records = {(r.tenant, r.name): r.pushes for r in g.gateway.tracker.records()}
        assert records == {(ACME, "unlisted:acme-corp/probe.site-a"): 1, (XYZ, "unlisted:xyz-inc/probe.site-a"): 1}


def test_a_listed_entry_cannot_take_an_unlisted_agents_name():
    with pytest.raises(InvalidArgument, match="unlisted"):
        PushEntry("unlisted:acme-corp/probe.site-a", tenant=ACME, component="agent-001")


async def test_the_proof_is_the_interceptors(gw, log_events):
    impostor = gw.agent(gw.pki.agent(ACME, "agent-001", issuer_tenant=XYZ, dns=[]))
    assert await refused(impostor.hello()) == (grpc.StatusCode.UNAUTHENTICATED, "tenant_mismatch")
    revoked_cert = gw.pki.agent(ACME, "agent-001")
    gw.pki.revoke(ACME, revoked_cert)
    gw.trust.reload()
    revoked = gw.agent(revoked_cert)
    assert await refused(revoked.push([revoked.status("x")])) == (grpc.StatusCode.UNAUTHENTICATED, "revoked")
    admin_cn = "ops-admin.platform.serviceradar"
    admin = gw.agent(gw.pki.agent(ACME, signed_by="platform", cn=admin_cn, spiffe=None, dns=[admin_cn]), agent_id="ops-admin")
    assert await refused(admin.hello()) == (grpc.StatusCode.UNAUTHENTICATED, "untrusted_chain")
    assert gw.rows(ACME) == []
    assert {e["reason"] for e in audited(log_events, "server_call_refused")} == {"tenant_mismatch", "revoked", "untrusted_chain"}


@pytest.mark.parametrize("method", ["Hello", "GetConfig", "PushStatus"])
async def test_a_unary_call_is_proven_before_its_request_is_read(gw, method):
    # grpc reads a unary request in full before any handler runs: a revoked certificate's
    # 15 MB pushes were each held before the proof refused them (200 of them: 2.6 GB). The
    # gateway reads the request after the proof, so a revoked caller that has sent nothing
    # yet (a request stream it never writes to) is refused at once, not left waiting.
    cert = gw.pki.agent(ACME, "agent-001")
    gw.pki.revoke(ACME, cert)
    gw.trust.reload()
    thief = gw.agent(cert)
    call = thief.channel.stream_unary(f"/monitoring.AgentGatewayService/{method}", lambda raw: raw, lambda raw: raw)

    async def never_sent() -> AsyncIterator[bytes]:
        await asyncio.Event().wait()
        yield b""

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(never_sent(), timeout=30)  # without the fix: DEADLINE_EXCEEDED
    assert refusal_of(info.value) == (grpc.StatusCode.UNAUTHENTICATED, "revoked")


class WatchedReads(AgentReads):
    """The gateway's read places, telling a test when a wait of its is met: each
    change is looked at on the loop's next turn (a wait for a place has begun, or the
    place is held and its read awaits)."""

    def __init__(self) -> None:
        super().__init__()
        self._waits: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    def _look(self) -> None:
        for predicate, met in list(self._waits):
            if not met.done() and predicate():
                met.set_result(None)

    @contextlib.asynccontextmanager
    async def place(self, agent):
        loop = asyncio.get_running_loop()
        loop.call_soon(self._look)
        try:
            async with super().place(agent):
                yield
        finally:
            loop.call_soon(self._look)

    async def until(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        met = asyncio.get_running_loop().create_future()
        self._waits.append((predicate, met))
        self._look()
        await asyncio.wait_for(met, timeout)


def never_sent_call(agent: PushAgent, method: str = "PushStatus") -> asyncio.Future:
    """A unary method called as a stream whose one request never comes: the call waits
    for it, holding whatever the gateway gave it before the read."""
    call = agent.channel.stream_unary(f"/monitoring.AgentGatewayService/{method}", lambda raw: raw, lambda raw: raw)

    async def never_sent() -> AsyncIterator[bytes]:
        await asyncio.Event().wait()
        yield b""

    return asyncio.ensure_future(call(never_sent(), timeout=30))


@pytest.mark.parametrize("over", ["calls", "rate"])
async def test_an_admitted_agents_call_over_its_bounds_is_refused_before_its_request_is_read(pki, tmp_path, over):
    # grpc takes a whole message (up to 16 MiB) once it is asked for: an admitted key's
    # calls over its calls in flight, or over its tenant's rate, were each read in full
    # before they were refused. Refused before the read, a call that has sent nothing yet
    # is refused at once (without the fix it waited for its request: DEADLINE_EXCEEDED).
    bounds = GatewayBounds(max_calls_per_agent=1) if over == "calls" else GatewayBounds(push_rate=0.001, push_burst=1)
    async with started(pki, tmp_path, bounds=bounds) as g:
        agent = g.agent(pki.agent(ACME, "agent-001"))
        g.gateway.reads = reads = WatchedReads()
        first = never_sent_call(agent)  # takes the one call place, or the one token
        await reads.until(lambda: reads.reading((ACME, "agent-001", "partition-1")) == 1)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await never_sent_call(agent)
        assert refusal_of(info.value) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "resource_exhausted")
        first.cancel()


async def test_an_agents_requests_are_read_a_few_at_a_time_and_its_siblings_are_not_held(pki, tmp_path):
    # One key's concurrent 15 MB pushes were all read at once (48 of them: 2.0 GB). Each
    # agent's messages are read READS_PER_AGENT at a time; its other calls wait their turn.
    second = PushEntry("edge-acme-2", tenant=ACME, component="agent-002", checks=CHECKS, interval=15.0)
    async with started(pki, tmp_path, entries=[*entries(), second]) as g:
        g.gateway.reads = reads = WatchedReads()
        hog = g.agent(pki.agent(ACME, "agent-001"))
        key = (ACME, "agent-001", "partition-1")
        holding = [never_sent_call(hog, method) for method in ("PushStatus", "Hello", "GetConfig", "PushStatus")[: reads.places]]
        await reads.until(lambda: reads.reading(key) == reads.places)
        waiting = asyncio.ensure_future(hog.push([hog.status("waited")]))
        await reads.until(lambda: reads.waiting(key) == 1)
        sibling = g.agent(pki.agent(ACME, "agent-002"))
        assert (await sibling.push([sibling.status("sibling")])).received  # not behind agent-001's reads
        assert not waiting.done()
        holding[0].cancel()  # one of the hog's places is free again
        assert (await waiting).received
        assert sorted(r["service_name"] for r in g.rows(ACME)) == ["sibling", "waited"]
        for call in holding[1:]:
            call.cancel()
        await reads.until(lambda: reads.reading(key) == 0 and reads.waiting(key) == 0)


async def test_a_unary_call_without_its_request_is_refused_and_counted(gw):
    agent = gw.agent(gw.pki.agent(ACME, "agent-001"))
    call = agent.channel.stream_unary("/monitoring.AgentGatewayService/PushStatus", lambda raw: raw, lambda raw: raw)

    async def none() -> AsyncIterator[bytes]:
        return
        yield b""

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(none(), timeout=30)
    assert refusal_of(info.value) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "resource_exhausted")
    assert gw.rows(ACME) == []


async def test_a_push_over_the_receive_limit_is_counted_and_named(pki, tmp_path, log_events):
    # grpc refuses a message over its receive limit itself, and the handler sees no
    # message: it was neither counted nor logged (a residual of earlier stops).
    async with started(pki, tmp_path, bounds=GatewayBounds(max_results_bytes=1024)) as g:
        agent = g.agent(pki.agent(ACME, "agent-001"))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await agent.push([agent.huge_status(g.gateway.bounds.max_message_bytes + 1)])
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED  # grpc's own answer
        assert g.pushes(ACME, "resource_exhausted") == 1
        [line] = [e for e in log_events() if e["event"] == "gateway_request_refused"]
        assert (line["tenant"], line["agent"], line["reason"]) == (ACME, "edge-acme", "resource_exhausted")
        assert "receive limit" in line["detail"]
        assert (await agent.push([agent.status("after")])).received


def _every_method_called(agent: PushAgent) -> list[tuple[str, object]]:
    """Each method AgentGatewayService declares, called once as its shape calls it (a
    call object to await or read): from the service descriptor, so a method added to the
    proto is called here too."""
    service = pb.DESCRIPTOR.services_by_name["AgentGatewayService"]
    calls = []
    for method in service.methods:
        request = getattr(pb, method.input_type.name)()
        target = getattr(agent.stub, method.name)
        # A request stream that only half-closes: the refusal comes before any read, and a
        # grpc.aio client write that crosses the server's status replaces it with INTERNAL
        # (grpc/grpc#36066), which would hide what the server answered.
        calls.append((method.name, target(_no_requests() if method.client_streaming else request, timeout=10)))
    return calls


async def _no_requests() -> AsyncIterator[object]:
    return
    yield  # pragma: no cover - an async generator that yields nothing


async def ended(call) -> tuple[grpc.StatusCode, str | None]:
    """The end of a call of any shape: a streamed answer is read until it fails."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        if isinstance(call, grpc.aio.UnaryStreamCall | grpc.aio.StreamStreamCall):
            async for _ in call:
                pass
        else:
            await call
    return refusal_of(info.value)


async def test_every_method_the_service_declares_is_guarded(gw, log_events):
    """Every method, the ones a later proto adds too, proves and admits its caller
    before it runs: nothing of the servicer is reachable around the interceptor."""
    unlisted = gw.agent(gw.pki.agent(ACME, "agent-002"))
    impostor = gw.agent(gw.pki.agent(ACME, "agent-001", issuer_tenant=XYZ, dns=[]))
    expected = {
        unlisted: (grpc.StatusCode.PERMISSION_DENIED, "unknown_agent"),
        impostor: (grpc.StatusCode.UNAUTHENTICATED, "tenant_mismatch"),
    }
    names = [m.name for m in pb.DESCRIPTOR.services_by_name["AgentGatewayService"].methods]
    assert {"Hello", "GetConfig", "PushStatus", "StreamStatus", "ControlStream"} <= set(names)
    for agent, refusal in expected.items():
        for name, call in _every_method_called(agent):
            assert (name, await ended(call)) == (name, refusal)
    refused_methods = {e["method"] for e in audited(log_events, "server_call_refused")}
    assert refused_methods == {f"/monitoring.AgentGatewayService/{name}" for name in names}
    assert not audited(log_events, "server_call_accepted") and gw.rows(ACME) == []


async def test_a_revoked_agent_is_named_in_its_refusal_and_an_impostor_names_nobody(gw, log_events):
    # An impostor's certificate (another tenant's CA) names edge-acme's identity: that proves nothing
    # about the name, so edge-acme is untouched; a revoked certificate of the tenant's CA is edge-acme's.
    impostor = gw.agent(gw.pki.agent(ACME, "agent-001", issuer_tenant=XYZ, dns=[]))
    assert await refused(impostor.push([impostor.status("x")])) == (grpc.StatusCode.UNAUTHENTICATED, "tenant_mismatch")
    assert gw.gateway.tracker.get(ACME, "edge-acme") is None
    cert = gw.pki.agent(ACME, "agent-001")
    gw.pki.revoke(ACME, cert)
    gw.trust.reload()
    revoked = gw.agent(cert)
    assert await refused(revoked.push([revoked.status("x")])) == (grpc.StatusCode.UNAUTHENTICATED, "revoked")
    assert await refused(revoked.hello()) == (grpc.StatusCode.UNAUTHENTICATED, "revoked")
    record = gw.gateway.tracker.get(ACME, "edge-acme")
    assert record is not None and record.last_outcome is Reason.REVOKED and record.last_push is None
    assert gw.pushes(ACME, "revoked") == 1  # the push, not the Hello
    by_reason = {e["reason"]: e for e in audited(log_events, "server_call_refused")}
    assert (by_reason["revoked"]["tenant"], by_reason["revoked"]["component"]) == (ACME, "agent-001")
    assert "component" not in by_reason["tenant_mismatch"] and "tenant" not in by_reason["tenant_mismatch"]
    assert by_reason["tenant_mismatch"]["issuer_tenant"] == XYZ  # the CA that minted it, not whose agent it names
    calls = gw.metrics.registry.get_sample_value("poller_server_calls_total", {"tenant": ACME, "outcome": "revoked"})
    assert calls == 2 and gw.rows(ACME) == []


def accepted_calls(log_events, rpc: str) -> list[dict]:
    return [e for e in audited(log_events, "server_call_accepted") if e["method"].endswith("/" + rpc)]


async def test_an_accept_is_audited_once_per_connection_method_and_proof(gw, log_events):
    agent = gw.agent(gw.pki.agent(ACME, "agent-001"))
    await agent.hello()
    for _ in range(3):
        await agent.push([agent.status("ssh")])
    [hello] = accepted_calls(log_events, "Hello")
    [push] = accepted_calls(log_events, "PushStatus")  # three pushes, one line: the decision did not change
    assert (push["tenant"], push["component"]) == (ACME, "agent-001") and push["peer"] == hello["peer"]
    assert gw.pushes(ACME, "ok") == 3 and len(gw.rows(ACME)) == 3
    assert gw.metrics.registry.get_sample_value("poller_server_calls_total", {"tenant": ACME, "outcome": "accepted"}) == 4

    # A trust reload proves afresh, and the next push is audited again.
    gw.pki.revoke(ACME, gw.pki.agent(ACME, "agent-099"))
    assert gw.trust.reload().changed
    await agent.push([agent.status("ssh")])
    assert len(accepted_calls(log_events, "PushStatus")) == 2

    # Another connection, even with the same certificate, is audited on its own.
    again = gw.agent(gw.pki.agent(ACME, "agent-001"))
    await again.push([again.status("ssh")])
    pushes = accepted_calls(log_events, "PushStatus")
    assert len(pushes) == 3 and pushes[2]["peer"] != pushes[0]["peer"]

    # Refusals are audited every time.
    liar = gw.agent(gw.pki.agent(ACME, "agent-002"))
    for _ in range(2):
        await refused(liar.push([liar.status("x")]))
    assert len([e for e in audited(log_events, "server_call_refused") if e["component"] == "agent-002"]) == 2


async def test_audit_accepted_per_call_audits_every_push(pki, tmp_path, log_events):
    async with started(pki, tmp_path, audit_accepted="call") as g:
        agent = g.agent(pki.agent(ACME, "agent-001"))
        for _ in range(3):
            await agent.push([agent.status("ssh")])
        assert len(accepted_calls(log_events, "PushStatus")) == 3


async def test_audit_accepted_must_be_known(pki, tmp_path):
    with pytest.raises(ValueError, match="audit_accepted"):
        await start(pki, tmp_path, audit_accepted="never")


async def test_no_client_certificate_no_call(gw):
    channel = grpc.aio.secure_channel(
        gw.address,
        grpc.ssl_channel_credentials(root_certificates=gw.pki.root_pem),
        options=[("grpc.ssl_target_name_override", SERVER_NAME)],
    )
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await pb_grpc.AgentGatewayServiceStub(channel).Hello(pb.AgentHelloRequest(agent_id="agent-001"), timeout=10)
        assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED)
    finally:
        await channel.close()


@pytest.mark.parametrize(
    "lie",
    [
        {"agent_id": "agent-002"},  # another component of the same tenant
        {"agent_id": ""},
        {"partition": "partition-9"},
    ],
)
async def test_a_request_that_lies_about_who_sends_it_is_identity_mismatch(gw, log_events, lie):
    agent = gw.agent(gw.pki.agent(ACME, "agent-001"), **lie)
    assert await refused(agent.hello()) == (grpc.StatusCode.PERMISSION_DENIED, "identity_mismatch")
    assert await refused(agent.push([agent.status("x")])) == (grpc.StatusCode.PERMISSION_DENIED, "identity_mismatch")
    assert await refused(agent.stream([agent.status("x")])) == (grpc.StatusCode.PERMISSION_DENIED, "identity_mismatch")
    if "agent_id" in lie:
        assert await refused(agent.get_config()) == (grpc.StatusCode.PERMISSION_DENIED, "identity_mismatch")
    events = [e for e in audited(log_events, "gateway_request_refused") if e["reason"] == "identity_mismatch"]
    assert events and all(e["tenant"] == ACME and e["component"] == "agent-001" for e in events)
    assert gw.rows(ACME) == [] and gw.pushes(ACME, "identity_mismatch") == 2


async def test_a_status_that_names_another_agent_is_identity_mismatch(gw):
    agent = gw.agent(gw.pki.agent(ACME, "agent-001"))
    liar = agent.status("x")
    liar.agent_id = "agent-002"
    assert await refused(agent.push([agent.status("ok"), liar])) == (grpc.StatusCode.PERMISSION_DENIED, "identity_mismatch")
    assert gw.rows(ACME) == []  # nothing of a refused request is delivered


async def test_a_claim_of_another_tenant_is_payload_mismatch_and_decides_nothing(gw, log_events):
    liar = gw.agent(gw.pki.agent(ACME, "agent-001"), claim_tenant=XYZ)
    assert await refused(liar.push([liar.status("x")])) == (grpc.StatusCode.PERMISSION_DENIED, "payload_mismatch")
    assert await refused(liar.stream([liar.status("x")])) == (grpc.StatusCode.PERMISSION_DENIED, "payload_mismatch")
    assert gw.rows(XYZ) == [] and gw.rows(ACME) == []
    [event, *_] = [e for e in audited(log_events, "gateway_request_refused") if e["reason"] == "payload_mismatch"]
    assert event["tenant"] == ACME
    # Its own tenant, or an opaque tenant_id (a cac9ec1af agent's UUID), decides nothing either way.
    honest = gw.agent(gw.pki.agent(ACME, "agent-001"), claim_tenant=ACME)
    assert (await honest.push([honest.status("x")])).received
    opaque = gw.agent(gw.pki.agent(ACME, "agent-001"))
    status = opaque.status("y")
    status.tenant_id = "0b5a3c9e-0000-4000-8000-000000000001"
    assert (await opaque.push([status])).received
    assert [r["tenant"] for r in gw.rows(ACME)] == [ACME, ACME] and gw.rows(XYZ) == []


@pytest.mark.parametrize("claim", ["XYZ-INC", " xyz-inc", "Xyz-Inc\t"])
async def test_a_tenant_id_naming_another_tenant_in_other_case_or_spacing_is_payload_mismatch(gw, claim):
    agent = gw.agent(gw.pki.agent(ACME, "agent-001"))
    liar = agent.status("x")
    liar.tenant_id = claim
    assert await refused(agent.push([liar])) == (grpc.StatusCode.PERMISSION_DENIED, "payload_mismatch")
    own = agent.status("y")
    own.tenant_id = claim.replace("xyz-inc", ACME).replace("XYZ-INC", ACME.upper()).replace("Xyz-Inc", ACME)
    assert (await agent.push([own])).received  # its own tenant, however written, decides nothing
    assert [r["service_name"] for r in gw.rows(ACME)] == ["y"] and gw.rows(XYZ) == []


async def test_a_tenant_id_naming_a_tenant_known_only_by_its_push_entries_is_payload_mismatch(pki, tmp_path):
    # "ghost-co" has no CA in the trust store: the gateway knows it only from the entry that names it.
    ghost = PushEntry("edge-ghost", tenant="ghost-co", component="agent-009")
    async with started(pki, tmp_path, entries=[*entries(), ghost]) as g:
        agent = g.agent(g.pki.agent(ACME, "agent-001"))
        status = agent.status("x")
        status.tenant_id = "ghost-co"
        assert await refused(agent.push([status])) == (grpc.StatusCode.PERMISSION_DENIED, "payload_mismatch")
        g.gateway.pushes.set_entries(entries())  # a reload drops it: now an opaque id, which decides nothing
        assert (await agent.push([status])).received
        assert [r["tenant"] for r in g.rows(ACME)] == [ACME]


async def test_a_payload_naming_another_tenant_is_refused_by_the_registry(gw):
    agent = gw.agent(gw.pki.agent(ACME, "agent-001"))
    code, reason = await refused(agent.push([agent.status("x", message=b'{"tenant":"xyz-inc"}')]))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "payload_mismatch")
    assert gw.rows(ACME) == [] and gw.rows(XYZ) == []


@pytest.mark.parametrize("method", ["push", "stream"])
async def test_a_request_refused_for_one_result_files_none_of_them(gw, method):
    # The registry checks every result before any is delivered: the honest "ssh" of a
    # request refused for its "http" is not filed, so the agent's retry files nothing twice.
    agent = gw.agent(gw.pki.agent(ACME, "agent-001"))
    send = getattr(agent, method)
    good, bad = agent.status("ssh", message=b'{"open":true}'), agent.status("http", message=b'{"tenant":"xyz-inc"}')
    for _ in range(2):  # it was not told `received`: it pushes again
        assert await refused(send([good, bad])) == (grpc.StatusCode.PERMISSION_DENIED, "payload_mismatch")
    assert gw.rows(ACME) == [] and gw.pushes(ACME, "payload_mismatch") == 2 and gw.pushes(ACME, "ok") == 0
    assert (await send([good])).received
    assert [r["service_name"] for r in gw.rows(ACME)] == ["ssh"]


# -- bounds ------------------------------------------------------------------------------


async def test_bounds_are_resource_exhausted_and_counted(pki, tmp_path):
    bounds = GatewayBounds(max_services=3, max_results_bytes=64 * 1024, push_rate=0.001, push_burst=4)
    async with started(pki, tmp_path, bounds=bounds) as g:
        agent = g.agent(pki.agent(ACME, "agent-001"))
        exhausted = (grpc.StatusCode.RESOURCE_EXHAUSTED, "resource_exhausted")
        assert await refused(agent.push([agent.status(f"s{i}") for i in range(4)])) == exhausted
        assert await refused(agent.push([agent.status("big", message=b"x" * 4097)])) == exhausted
        assert await refused(agent.push([agent.huge_status(64 * 1024 + 1)])) == exhausted
        assert (await agent.push([agent.status("fits", message=b"x" * 4096), agent.huge_status(64 * 1024)])).received
        # The burst (4) is spent: the rate refuses the next push of this tenant, not another tenant's.
        assert await refused(agent.push([agent.status("late")])) == exhausted
        other = g.agent(pki.agent(XYZ, "agent-007", "site-b"))
        assert (await other.push([other.status("x")])).received
        assert g.pushes(ACME, "resource_exhausted") == 4 and g.pushes(ACME, "ok") == 1
        assert [r["service_name"] for r in g.rows(ACME)] == ["fits", "huge"]


async def test_the_rate_binds_lying_calls_hello_and_get_config_too(pki, tmp_path, log_events):
    # Each call takes its tenant's token before it is checked: a flood of lying pushes is
    # refused resource_exhausted and counted, with an audit line only while tokens last.
    bounds = GatewayBounds(push_rate=0.001, push_burst=4)  # no token back within the test
    second = PushEntry("edge-acme-2", tenant=ACME, component="agent-002", checks=CHECKS, interval=15.0)
    async with started(pki, tmp_path, bounds=bounds, entries=[*entries(), second]) as g:
        honest = g.agent(pki.agent(ACME, "agent-001"))
        liar = g.agent(pki.agent(ACME, "agent-001"), agent_id="agent-999")
        assert (await honest.hello()).accepted and (await honest.push([honest.status("ssh")])).received
        lies = [await refused(liar.push([liar.status("ssh")])) for _ in range(20)]
        mismatch, exhausted = (
            (grpc.StatusCode.PERMISSION_DENIED, "identity_mismatch"),
            (grpc.StatusCode.RESOURCE_EXHAUSTED, "resource_exhausted"),
        )
        assert lies == [mismatch] * 2 + [exhausted] * 18
        assert len([e for e in audited(log_events, "gateway_request_refused") if e["reason"] == "identity_mismatch"]) == 2
        assert g.pushes(ACME, "identity_mismatch") == 2 and g.pushes(ACME, "resource_exhausted") == 18
        for call in (honest.hello(), honest.get_config(), honest.push([honest.status("ssh")])):
            assert await refused(call) == exhausted
        sibling = g.agent(pki.agent(ACME, "agent-002"))
        assert await refused(sibling.hello()) == exhausted
        # 22 refused and counted, one line per agent and method: the flood is not one in the
        # log too, and hides neither the agent's other calls nor another agent's.
        over = [e for e in log_events() if e["event"] == "gateway_request_refused" and e["reason"] == "resource_exhausted"]
        assert sorted((e["agent"], e["method"].rsplit("/", 1)[1]) for e in over) == [
            ("edge-acme", "GetConfig"),
            ("edge-acme", "Hello"),
            ("edge-acme", "PushStatus"),
            ("edge-acme-2", "Hello"),
        ]
        assert all(e["tenant"] == ACME and "suppressed" not in e for e in over)
        assert g.pushes(ACME, "resource_exhausted") == 19  # 18 lies and the push (Hello, GetConfig are no pushes)
        # ... and every refused call, of any method, is counted by method.
        assert g.refused(ACME, "PushStatus", "resource_exhausted") == 19
        assert g.refused(ACME, "PushStatus", "identity_mismatch") == 2
        assert g.refused(ACME, "Hello", "resource_exhausted") == 2 and g.refused(ACME, "GetConfig", "resource_exhausted") == 1
        other = g.agent(pki.agent(XYZ, "agent-007", "site-b"))
        assert (await other.hello()).accepted and (await other.push([other.status("x")])).received  # its own bucket


async def test_the_count_of_a_flood_that_stops_inside_its_window_is_still_written(
    pki, tmp_path, log_events, log_event_seen, monkeypatch
):
    # Refused Hello, GetConfig and ControlStream calls are counted nowhere but these lines:
    # the ones held back when a flood stops must still be said, once its window closes.
    monkeypatch.setattr(gateway_service, "OVER_RATE_LOG_EVERY", 0.5)
    said = log_event_seen("gateway_requests_held_back")
    async with started(pki, tmp_path, bounds=GatewayBounds(push_rate=0.001, push_burst=1)) as g:
        agent = g.agent(pki.agent(ACME, "agent-001"))
        assert (await agent.hello()).accepted  # the tenant's one token
        exhausted = (grpc.StatusCode.RESOURCE_EXHAUSTED, "resource_exhausted")
        assert [await refused(agent.hello()) for _ in range(4)] == [exhausted] * 4
        async with asyncio.timeout(10):
            await said.wait()
    refusals = [e for e in log_events() if e["event"] == "gateway_request_refused"]
    [trailing] = [e for e in log_events() if e["event"] == "gateway_requests_held_back"]
    assert len(refusals) == 1 and refusals[0]["reason"] == "resource_exhausted"  # the first of the four, in full
    assert trailing["level"] == "warning" and trailing["suppressed"] == 3  # and the three held back after it
    assert (trailing["tenant"], trailing["agent"], trailing["method"]) == (ACME, "edge-acme", refusals[0]["method"])
    assert trailing["reason"] == "resource_exhausted" and trailing["limit"] == "tenant_rate"


async def test_a_per_agent_rate_keeps_one_key_from_spending_its_siblings_rate(pki, tmp_path):
    second = PushEntry("edge-acme-2", tenant=ACME, component="agent-002", checks=CHECKS, interval=15.0)
    bounds = GatewayBounds(push_rate=0.001, push_burst=4, push_rate_per_agent=0.001, push_burst_per_agent=2)
    async with started(pki, tmp_path, bounds=bounds, entries=[*entries(), second]) as g:
        hog = g.agent(pki.agent(ACME, "agent-001"))
        exhausted = (grpc.StatusCode.RESOURCE_EXHAUSTED, "resource_exhausted")
        assert (await hog.hello()).accepted and (await hog.push([hog.status("a")])).received
        assert [await refused(hog.push([hog.status("b")])) for _ in range(10)] == [exhausted] * 10
        sibling = g.agent(pki.agent(ACME, "agent-002"))  # the tenant's other two tokens are still there
        assert (await sibling.hello()).accepted and (await sibling.push([sibling.status("c")])).received
        assert await refused(sibling.push([sibling.status("d")])) == exhausted  # its own two spent
        assert [r["service_name"] for r in g.rows(ACME)] == ["a", "c"]
        assert g.refused(ACME, "PushStatus", "resource_exhausted") == 11


async def test_calls_in_flight_per_tenant_are_bounded(pki, tmp_path):
    async with started(pki, tmp_path, bounds=GatewayBounds(max_calls_per_tenant=1)) as g:
        holder = g.agent(pki.agent(ACME, "agent-001"))
        session = holder.control_stream()
        await session.opened()  # the stream holds acme-corp's one slot
        code_reason = await refused(holder.push([holder.status("x")]))
        assert code_reason == (grpc.StatusCode.RESOURCE_EXHAUSTED, "resource_exhausted")
        other = g.agent(pki.agent(XYZ, "agent-007", "site-b"))
        assert (await other.push([other.status("x")])).received  # another tenant's share
        await session.close()
        assert (await session.ended())[0] == grpc.StatusCode.OK


async def test_one_agent_cannot_hold_every_place_of_its_tenant(pki, tmp_path):
    # A stolen key of one agent, holding streams open, must not cut off its sibling agents.
    second = PushEntry("edge-acme-2", tenant=ACME, component="agent-002", checks=CHECKS, interval=15.0)
    bounds = GatewayBounds(max_calls_per_tenant=2, max_calls_per_agent=1)
    async with started(pki, tmp_path, bounds=bounds, entries=[*entries(), second]) as g:
        hog = g.agent(pki.agent(ACME, "agent-001"))
        sessions = [hog.control_stream()]
        await sessions[0].opened()  # its share, held
        exhausted = (grpc.StatusCode.RESOURCE_EXHAUSTED, "resource_exhausted")
        assert (await hog.control_stream().ended()) == exhausted
        assert await refused(hog.push([hog.status("x")])) == exhausted
        sibling = g.agent(pki.agent(ACME, "agent-002"))
        assert (await sibling.push([sibling.status("y")])).received  # the tenant's second place is its
        assert [r["service_name"] for r in g.rows(ACME)] == ["y"]
        await sessions[0].close()
        assert (await sessions[0].ended())[0] == grpc.StatusCode.OK
        assert (await hog.push([hog.status("z")])).received  # a place of its own again
        assert g.pushes(ACME, "resource_exhausted") == 1 and g.pushes(ACME, "ok") == 2


async def test_connections_per_tenant_are_bounded_and_a_reconnect_is_not_refused(pki, tmp_path):
    bounds = GatewayBounds(max_connections_per_tenant=1)
    async with started(pki, tmp_path, entries=[], accept_unlisted=True, bounds=bounds) as g:
        first = g.agent(pki.agent(ACME, "agent-001"))
        assert (await first.push([first.status("a")])).received  # acme-corp's one connection
        second = g.agent(pki.agent(ACME, "agent-002"))  # proven, but a second connection of acme-corp
        assert await refused(second.push([second.status("b")])) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "resource_exhausted")
        other = g.agent(pki.agent(XYZ, "agent-007", "site-b"))
        assert (await other.push([other.status("x")])).received  # another tenant's connections are its own
        for name in ("c", "d", "e"):  # the agent comes back on a new connection, again and again
            await first.disconnect()  # (the gateway closes the old one only after connection_idle)
            assert (await first.push([first.status(name)])).received
        assert await refused(second.push([second.status("f")])) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "resource_exhausted")
        assert g.pushes(ACME, "resource_exhausted") == 2 and g.pushes(ACME, "ok") == 4
        assert [r["service_name"] for r in g.rows(ACME)] == ["a", "c", "d", "e"]
        assert g.gateway.limits.connections(ACME) == 1


async def test_one_certificate_on_many_connections_has_each_counted(pki, tmp_path):
    async with started(pki, tmp_path, bounds=GatewayBounds(max_connections_per_tenant=2)) as g:
        cert = pki.agent(ACME, "agent-001")
        agents = [g.agent(cert) for _ in range(6)]  # six channels: six connections, all kept open
        assert [(await a.hello()).accepted for a in agents] == [True] * 6  # each new one looks like a reconnect
        outcomes = []
        for a in agents:  # called on again: it holds them all, and each counts
            try:
                outcomes.append((await a.hello()).accepted)
            except grpc.aio.AioRpcError as err:
                outcomes.append(refusal_of(err))
        exhausted = (grpc.StatusCode.RESOURCE_EXHAUSTED, "resource_exhausted")
        assert outcomes == [True, exhausted, exhausted, exhausted, exhausted, True]
        assert g.gateway.limits.connections(ACME) == 2


async def test_connections_over_max_connections_are_closed_at_accept(pki, tmp_path):
    async with started(pki, tmp_path, bounds=GatewayBounds(max_connections=1)) as g:
        holder = g.agent(pki.agent(ACME, "agent-001"))
        session = holder.control_stream()
        await session.opened()  # the gateway's one connection
        late = g.agent(pki.agent(XYZ, "agent-007", "site-b"), timeout=5.0)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await late.push([late.status("x")])
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # closed before TLS: no tenant, no reason code
        assert g.rows(XYZ) == []
        await session.close()
        assert (await session.ended())[0] == grpc.StatusCode.OK


# -- StreamStatus ------------------------------------------------------------------------


async def test_a_stream_in_order_is_delivered_whole(gw):
    agent = gw.agent(gw.pki.agent(ACME, "agent-001"))
    statuses = [agent.status(f"s{i}") for i in range(250)]
    assert (await agent.stream(statuses, per_chunk=100)).received
    assert [r["service_name"] for r in gw.rows(ACME)] == [f"s{i}" for i in range(250)]
    assert gw.gateway.budget.in_use() == 0


@pytest.mark.parametrize(
    "order, final",
    [([1, 0, 2], True), ([0, 2], True), ([0, 1, 1, 2], True), ([0, 1, 2], False)],
    ids=["out-of-order", "missing", "repeated", "no-final"],
)
async def test_a_broken_stream_is_incomplete_and_delivers_nothing(gw, order, final):
    agent = gw.agent(gw.pki.agent(ACME, "agent-001"))
    code, reason = await refused(agent.stream([agent.status(f"s{i}") for i in range(3)], per_chunk=1, order=order, final=final))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "incomplete_stream")
    assert gw.rows(ACME) == [] and gw.gateway.budget.in_use() == 0


async def test_an_endless_stream_is_stopped_by_its_tenants_share_of_the_budget(pki, tmp_path):
    budget = ReassemblyBudget(2 * 1024 * 1024, tenants=[ACME, XYZ])  # 1 MiB each
    async with started(pki, tmp_path, budget=budget, bounds=GatewayBounds(max_results_bytes=128 * 1024)) as g:
        agent = g.agent(pki.agent(ACME, "agent-001"))
        err = await agent.endless_stream(chunk_bytes=100 * 1024)
        assert refusal_of(err) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "incomplete_stream")
        assert budget.in_use() == 0 and budget.peak <= 1024 * 1024
        other = g.agent(pki.agent(XYZ, "agent-007", "site-b"))
        assert (await other.stream([other.huge_status(100 * 1024) for _ in range(5)], per_chunk=1)).received
        assert g.rows(ACME) == [] and len(g.rows(XYZ)) == 5


async def test_a_stream_of_many_tiny_statuses_is_charged_what_it_holds_not_its_wire_bytes(pki, tmp_path):
    # 5,000 empty statuses are ~45 KB on the wire but over 1 MB once parsed and kept:
    # the lease charges KEPT_STATUS_BYTES for each, so they do not fit a 1 MiB share.
    budget = ReassemblyBudget(2 * 1024 * 1024, tenants=[ACME, XYZ])  # 1 MiB each
    async with started(pki, tmp_path, budget=budget) as g:
        agent = g.agent(pki.agent(ACME, "agent-001"))
        [chunk] = agent.chunks([pb.GatewayServiceStatus(service_name=f"s{i}") for i in range(5000)], per_chunk=5000)
        assert chunk.ByteSize() < 64 * 1024 < budget.share(ACME) < 5000 * KEPT_STATUS_BYTES
        assert await refused(agent.stream(chunks=[chunk])) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "incomplete_stream")
        assert budget.in_use() == 0 and g.rows(ACME) == []
        assert (await agent.stream([agent.status(f"s{i}") for i in range(2000)], per_chunk=1000)).received
        assert len(g.rows(ACME)) == 2000 and budget.peak >= 2000 * KEPT_STATUS_BYTES


async def test_a_stream_of_empty_chunks_is_charged_what_each_kept_chunk_holds(pki, tmp_path):
    # 200,000 empty chunks were charged 15 bytes each while each kept one held about
    # 934: KEPT_CHUNK_BYTES each, so 1,100 of them do not fit a 1 MiB share.
    budget = ReassemblyBudget(2 * 1024 * 1024, tenants=[ACME, XYZ])  # 1 MiB each
    async with started(pki, tmp_path, budget=budget) as g:
        agent = g.agent(pki.agent(ACME, "agent-001"))
        chunks = agent.chunks([agent.status(f"s{i}") for i in range(1100)], per_chunk=1)
        for chunk in chunks[:-1]:
            del chunk.services[:]  # empty, but in order: only the budget can stop them
        assert sum(c.ByteSize() for c in chunks) < 64 * 1024 < budget.share(ACME) < 1100 * KEPT_CHUNK_BYTES
        assert await refused(agent.stream(chunks=chunks)) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "incomplete_stream")
        assert budget.in_use() == 0 and g.rows(ACME) == []


class HeldFlush(FileSink):
    """A file sink whose flush waits until the test releases it (an fsync stall)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, commit_delay=0)
        self.waiting = asyncio.Event()
        self.release = asyncio.Event()

    async def flush(self) -> None:
        self.waiting.set()
        await self.release.wait()
        await super().flush()


@pytest.mark.parametrize("method", ["PushStatus", "StreamStatus"])
async def test_a_push_holds_its_bytes_against_its_tenants_share_until_it_is_flushed(pki, tmp_path, method):
    # A review's 48 concurrent 15 MiB pushes of one agent, inside max_calls_per_agent,
    # held 2.3 GiB while a slow flush was waited on, charged to no budget: a push is
    # charged what it holds (its message, and each status's copy in its result) from
    # its arrival until it is flushed, so the next one over the share is refused.
    budget = ReassemblyBudget(4 * 1024 * 1024, tenants=[ACME, XYZ])  # 2 MiB each
    sink = HeldFlush(tmp_path / "data")
    async with started(pki, tmp_path, budget=budget, sink=sink, bounds=GatewayBounds(max_results_bytes=1024 * 1024)) as g:
        agent = g.agent(pki.agent(ACME, "agent-001"))
        big = agent.huge_status(600 * 1024)
        send = agent.push if method == "PushStatus" else agent.stream
        first = asyncio.ensure_future(send([big]))
        await sink.waiting.wait()
        assert budget.in_use(ACME) >= 2 * 600 * 1024  # held while its flush is waited on
        code, reason = await refused(send([big]))  # 2 x 1.2 MiB is over the 2 MiB share
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reason == ("resource_exhausted" if method == "PushStatus" else "incomplete_stream")
        sink.release.set()
        assert (await first).received
        assert budget.in_use() == 0 and len(g.rows(ACME)) == 1
        assert (await send([big])).received  # its bytes were given back


async def test_a_stream_dropped_midway_gives_its_bytes_back(gw):
    agent = gw.agent(gw.pki.agent(ACME, "agent-001"))
    await agent.abandon_stream(chunks=2)
    again = gw.agent(gw.pki.agent(ACME, "agent-001"))
    assert (await again.push([again.status("after")])).received  # the gateway carries on
    record = gw.gateway.tracker.get(ACME, "edge-acme")
    assert record is not None and record.open_streams == 0 and gw.gateway.budget.in_use() == 0


# -- ControlStream -----------------------------------------------------------------------


async def test_a_control_stream_is_held_open_then_cut_off_when_revoked(gw, log_events):
    cert = gw.pki.agent(ACME, "agent-001")
    agent = gw.agent(cert)
    session = agent.control_stream()
    await session.opened()
    assert (await agent.push([agent.status("x")])).received  # pushing while the stream is open
    record = gw.gateway.tracker.get(ACME, "edge-acme")
    assert record is not None and record.open_streams == 1 and not session.call.done()
    gw.pki.revoke(ACME, cert)
    gw.trust.reload()
    assert await session.ended() == (grpc.StatusCode.UNAUTHENTICATED, "revoked")
    assert record.open_streams == 0
    [ended] = audited(log_events, "server_call_ended")
    assert ended["method"] == "/monitoring.AgentGatewayService/ControlStream" and ended["component"] == "agent-001"
    closed = [e for e in log_events() if e["event"] == "push_agent_control_stream_closed"]
    assert [(e["tenant"], e["agent"]) for e in closed] == [(ACME, "edge-acme")]  # said, as when the agent hangs up


async def test_an_agents_newer_control_stream_takes_the_place_of_its_older_one(gw, log_events):
    # Each control stream keeps a message read open (up to 16 MiB): one key's 64 of them
    # held 64 reads. An agent holds one; a reconnect's new stream ends the one it left.
    agent = gw.agent(gw.pki.agent(ACME, "agent-001"))
    old = agent.control_stream()
    await old.opened()
    other = gw.agent(gw.pki.agent(XYZ, "agent-007", "site-b"))
    others = other.control_stream()
    await others.opened()
    new = agent.control_stream()
    await new.opened()
    assert await old.ended() == (grpc.StatusCode.OK, None)
    record = gw.gateway.tracker.get(ACME, "edge-acme")
    assert record is not None and record.open_streams == 1 and not new.call.done() and not others.call.done()
    [superseded] = [e for e in log_events() if e["event"] == "push_agent_control_stream_superseded"]
    assert (superseded["tenant"], superseded["agent"]) == (ACME, "edge-acme")
    await new.close()
    await others.close()
    assert await new.ended() == (grpc.StatusCode.OK, None) and await others.ended() == (grpc.StatusCode.OK, None)


async def test_a_control_stream_must_begin_with_its_hello(gw):
    agent = gw.agent(gw.pki.agent(ACME, "agent-001"))
    session = agent.control_stream()
    session.outbox.get_nowait()  # its hello, taken out: the first message is something else
    await session.send(pb.ControlStreamRequest(command_ack=pb.CommandAck(command_id="c-1")))
    assert await session.ended() == (grpc.StatusCode.FAILED_PRECONDITION, "invalid_payload")
    assert gw.refused(ACME, "ControlStream", "invalid_payload") == 1


async def test_a_control_stream_without_a_hello_ends_after_the_hello_timeout(gw, monkeypatch):
    monkeypatch.setattr(gateway_service, "CONTROL_HELLO_TIMEOUT", 0.5)
    agent = gw.agent(gw.pki.agent(ACME, "agent-001"))
    session = agent.control_stream()
    session.outbox.get_nowait()  # says nothing
    assert await session.ended() == (grpc.StatusCode.DEADLINE_EXCEEDED, "timeout")
    record = gw.gateway.tracker.get(ACME, "edge-acme")
    assert record is not None and record.open_streams == 0
    assert gw.gateway.reads.reading((ACME, "agent-001", "partition-1")) == 0


class BlocksOnSecond(FileSink):
    """A file sink that files the first result and holds the second until released."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, commit_delay=0)
        self.holding = asyncio.Event()
        self.release = asyncio.Event()
        self.published = 0

    async def publish(self, result: PollResult) -> None:
        self.published += 1
        if self.published == 2:
            self.holding.set()
            await self.release.wait()
        await super().publish(result)


async def test_a_unary_push_revoked_while_it_is_delivered_files_no_more_and_is_not_received(pki, tmp_path, log_events):
    # A review revoked an agent while its unary push waited on a slow sink: the push was
    # filed in full and answered `received` after the revocation. A unary call is not
    # held open by the interceptor, so the gateway asks before each result and answers.
    sink = BlocksOnSecond(tmp_path / "data")
    async with started(pki, tmp_path, sink=sink) as g:
        cert = pki.agent(ACME, "agent-001")
        agent = g.agent(cert)
        call = asyncio.ensure_future(agent.push([agent.status(f"s{i}") for i in range(3)]))
        await sink.holding.wait()
        pki.revoke(ACME, cert)
        g.trust.reload()
        sink.release.set()
        assert await refused(call) == (grpc.StatusCode.UNAUTHENTICATED, "revoked")
        await sink.flush()  # what the sink was handed is written at its next flush
        assert [row["service_name"] for row in g.rows(ACME)] == ["s0", "s1"]  # s1 was being filed; s2 never
        assert g.pushes(ACME, "revoked") == 1 and g.pushes(ACME, "ok") == 0
        [line] = audited(log_events, "gateway_request_refused")
        assert line["reason"] == "revoked" and "2 of its 3 results were handed over before" in line["detail"]
        # Another agent of the tenant, not revoked, is not touched by it.
        other = g.agent(pki.agent(ACME, "agent-001"))
        assert (await other.push([other.status("after")])).received


async def test_a_stream_cut_by_a_revocation_mid_delivery_is_counted_and_says_what_it_filed(pki, tmp_path, log_events):
    # A review revoked an agent while its reassembled stream was being delivered: the
    # call ended revoked, one of its results filed, and no line or counter said so.
    sink = BlocksOnSecond(tmp_path / "data")
    async with started(pki, tmp_path, sink=sink) as g:
        cert = pki.agent(ACME, "agent-001")
        agent = g.agent(cert)
        call = asyncio.ensure_future(agent.stream([agent.status(f"s{i}") for i in range(3)], per_chunk=1))
        await sink.holding.wait()
        pki.revoke(ACME, cert)
        g.trust.reload()
        assert await refused(call) == (grpc.StatusCode.UNAUTHENTICATED, "revoked")
        assert g.pushes(ACME, "revoked") == 1 and g.pushes(ACME, "ok") == 0
        [line] = [e for e in log_events() if e["event"] == "push_call_ended"]
        assert (line["tenant"], line["agent"], line["reason"], line["delivered"]) == (ACME, "edge-acme", "revoked", 2)
        record = g.gateway.tracker.get(ACME, "edge-acme")
        assert record is not None and record.last_outcome is Reason.REVOKED
        sink.release.set()


async def test_a_control_stream_hello_that_lies_is_identity_mismatch(gw):
    agent = gw.agent(gw.pki.agent(ACME, "agent-001"))
    session = agent.control_stream(hello_agent_id="agent-002")
    assert await session.ended() == (grpc.StatusCode.PERMISSION_DENIED, "identity_mismatch")


async def test_slow_pushes_and_slow_streams_are_taken(gw):
    slow = gw.agent(gw.pki.agent(ACME, "agent-001"), delay=0.2)
    fast = gw.agent(gw.pki.agent(XYZ, "agent-007", "site-b"))
    slow_stream = asyncio.ensure_future(slow.stream([slow.status(f"s{i}") for i in range(3)], per_chunk=1))
    assert (await fast.push([fast.status("fast")])).received
    assert (await slow.push([slow.status("slow")])).received
    assert (await slow_stream).received
    assert sorted(r["service_name"] for r in gw.rows(ACME)) == ["s0", "s1", "s2", "slow"]
    assert [r["service_name"] for r in gw.rows(XYZ)] == ["fast"]


async def test_the_push_agent_fixture(tenant_pki, push_agent, tmp_path):
    """The pytest plugin's push_agent: certificates from tenant_pki, behaviours as keywords."""
    async with started(tenant_pki, tmp_path) as g:
        honest = push_agent(g.address, ACME)
        assert (await honest.hello()).accepted
        impostor = push_agent(g.address, ACME, impostor_from=XYZ)
        assert await refused(impostor.hello()) == (grpc.StatusCode.UNAUTHENTICATED, "tenant_mismatch")
        liar = push_agent(g.address, ACME, agent_id="agent-002")
        assert await refused(liar.hello()) == (grpc.StatusCode.PERMISSION_DENIED, "identity_mismatch")


async def test_two_replicas_give_the_same_push_the_same_msg_id(pki, tmp_path):
    """The NATS Msg-Id of a pushed result is the agent's and its timestamp's, not the replica's,
    so a push repeated to another replica after a reconnect is stored once."""
    from poller.nats.messages import result_message
    from poller.testing import MemorySink

    sinks = (MemorySink(), MemorySink())
    async with (
        started(pki, tmp_path / "a", gateway_id="gw-a", sink=sinks[0]) as a,
        started(pki, tmp_path / "b", gateway_id="gw-b", sink=sinks[1]) as b,
    ):
        cert = pki.agent(ACME, "agent-001")
        for g in (a, b):
            agent = g.agent(cert)
            await agent.push([agent.status("ssh")], timestamp=1_765_000_000_123_456_789)
        [first], [second] = (s.results for s in sinks)
        assert (first.poller_id, second.poller_id) == ("gw-a", "gw-b") and first.pushed
        assert result_message(first).msg_id == result_message(second).msg_id
        later = g.agent(cert)
        await later.push([later.status("ssh")], timestamp=1_765_000_030_000_000_000)
        assert result_message(sinks[1].results[-1]).msg_id != result_message(second).msg_id


async def test_a_head_agent_is_served_as_well(gw):
    """Upstream HEAD's agent: version/host fields, no tenant fields, a ControlStream held open."""
    agent = gw.agent(gw.pki.agent(ACME, "agent-001"))
    session = agent.control_stream()
    await session.opened()
    hello = await agent.stub.Hello(
        pb.AgentHelloRequest(agent_id="agent-001", partition="partition-1", version="1.2.0", config_source="remote"), timeout=10
    )
    assert hello.accepted
    status = pb.GatewayServiceStatus(service_name="ssh", available=True, message=b"{}", service_type="port", source="status")
    request = pb.GatewayStatusRequest(
        services=[status], agent_id="agent-001", timestamp=1, version="1.2.0", hostname="h", os="linux", arch="arm64"
    )
    assert (await agent.stub.PushStatus(request, timeout=10)).received
    assert [r["service_name"] for r in gw.rows(ACME)] == ["ssh"]
    await session.close()
    assert (await session.ended())[0] == grpc.StatusCode.OK


class _EventTracker(PushTracker):
    """A tracker that tells a test when a stream opened and when a call's outcome was recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.opened = asyncio.Event()
        self.ended = asyncio.Event()

    def stream_opened(self, entry, *, peer, at) -> None:
        super().stream_opened(entry, peer=peer, at=at)
        self.opened.set()

    def pushed(self, entry, **kwargs) -> None:
        super().pushed(entry, **kwargs)
        self.ended.set()


async def never_final(agent: PushAgent) -> AsyncIterator[pb.GatewayStatusChunk]:
    """A StreamStatus of one chunk that is not final, then held open for ever."""
    [first] = agent.chunks([agent.status("s0")], per_chunk=1)
    first.is_final = False
    yield first
    await asyncio.Event().wait()


async def test_a_stream_status_open_when_revoked_is_cut_off_and_gives_its_bytes_back(pki, tmp_path, log_events):
    tracker = _EventTracker()
    async with started(pki, tmp_path, tracker=tracker) as g:
        cert = pki.agent(ACME, "agent-001")
        agent = g.agent(cert)
        call = asyncio.ensure_future(agent.stub.StreamStatus(never_final(agent), timeout=30))
        await tracker.opened.wait()
        pki.revoke(ACME, cert)
        g.trust.reload()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert refusal_of(info.value) == (grpc.StatusCode.UNAUTHENTICATED, "revoked")
        assert g.gateway.budget.in_use() == 0 and g.rows(ACME) == []
        assert tracker.get(ACME, "edge-acme").open_streams == 0
        # Ended for its identity (audited server_call_ended), not an agent that hung up.
        assert [e["reason"] for e in log_events() if e["event"] == "server_call_ended"] == ["revoked"]
        assert not [e for e in log_events() if e["event"] == "push_call_cancelled"]
        assert tracker.get(ACME, "edge-acme").last_outcome is not Reason.UNREACHABLE


async def test_a_stream_cut_for_an_old_certificate_leaves_an_agent_pushing_under_its_new_one_proven(pki, tmp_path, log_events):
    # A rotation: the old certificate's StreamStatus is still open on its connection when
    # that certificate is revoked. The cut is audited and counted, but the agent pushed
    # under its new certificate just before: its record stays OK, not refused.
    tracker = _EventTracker()
    async with started(pki, tmp_path, tracker=tracker) as g:
        old, new = pki.agent(ACME, "agent-001"), pki.agent(ACME, "agent-001")
        busy, rotated = g.agent(old), g.agent(new)
        call = asyncio.ensure_future(busy.stub.StreamStatus(never_final(busy), timeout=30))
        await tracker.opened.wait()
        assert (await rotated.push([rotated.status("x")])).received
        pki.revoke(ACME, old)
        g.trust.reload()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert refusal_of(info.value) == (grpc.StatusCode.UNAUTHENTICATED, "revoked")
        assert [e["reason"] for e in log_events() if e["event"] == "server_call_ended"] == ["revoked"]
        assert g.pushes(ACME, "revoked") == 1
        record = tracker.get(ACME, "edge-acme")
        assert record.last_outcome is Reason.OK and record.identity.fingerprint_sha256 == certinfo.fingerprint_sha256(new.cert)


async def test_a_reload_that_delists_an_agent_ends_its_open_calls_unknown_agent(pki, tmp_path, log_events):
    # A ControlStream and a StreamStatus being reassembled are held to the push entries in
    # force: a reload without the agent's entry ends both, named; another agent's stays.
    tracker = _EventTracker()
    async with started(pki, tmp_path, tracker=tracker) as g:
        agent = g.agent(pki.agent(ACME, "agent-001"))
        other = g.agent(pki.agent(XYZ, "agent-007", "site-b"))
        control, kept = agent.control_stream(), other.control_stream()
        await control.opened()
        await kept.opened()
        tracker.opened.clear()
        stream = asyncio.ensure_future(agent.stub.StreamStatus(never_final(agent), timeout=30))
        await tracker.opened.wait()
        g.gateway.pushes.set_entries([e for e in entries() if e.tenant != ACME])  # the reload
        unknown = (grpc.StatusCode.PERMISSION_DENIED, "unknown_agent")
        async with asyncio.timeout(30):  # a guard against a hang (the bug), not a timing assertion
            assert await control.ended() == unknown
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stream
        assert refusal_of(info.value) == unknown
        ended = [e for e in audited(log_events, "gateway_request_refused") if e["reason"] == "unknown_agent"]
        assert sorted(e["method"].rsplit("/", 1)[1] for e in ended) == ["ControlStream", "StreamStatus"]
        assert all((e["tenant"], e["agent"]) == (ACME, "edge-acme") and "reload" in e["detail"] for e in ended)
        assert g.pushes(ACME, "unknown_agent") == 1 and g.gateway.budget.in_use() == 0 and g.rows(ACME) == []
        assert tracker.get(ACME, "edge-acme").open_streams == 0
        assert tracker.get(XYZ, "edge-xyz").open_streams == 1  # still admitted: still held
        await kept.close()
        assert (await kept.ended())[0] is grpc.StatusCode.OK


async def test_an_empty_listen_host_is_every_interface(pki, tmp_path):
    async with started(pki, tmp_path, listen=":0") as g:
        agent = g.agent(pki.agent(ACME, "agent-001"))
        assert (await agent.hello()).accepted  # reached on 127.0.0.1


async def test_a_listen_address_another_server_holds_is_refused_not_shared(pki, tmp_path):
    async with started(pki, tmp_path) as g:
        with pytest.raises(InvalidArgument, match=f"gateway cannot listen on 127.0.0.1:{g.server.port}"):
            await start(pki, tmp_path, listen=f"127.0.0.1:{g.server.port}")


class _HeldSink:
    """A sink whose publish waits until released: a push still being delivered."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def publish(self, result) -> None:
        self.entered.set()
        await self.release.wait()

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None


async def test_a_push_cut_before_its_answer_is_a_named_failure(pki, tmp_path, log_events):
    # The agent's deadline passes while its results are still being delivered: grpc cancels
    # the handler. That push is a failure with a line naming tenant and agent, counted, and
    # on the tracker, not a call that simply vanished.
    sink, tracker = _HeldSink(), _EventTracker()
    async with started(pki, tmp_path, sink=sink, tracker=tracker) as g:
        agent = g.agent(pki.agent(ACME, "agent-001"), timeout=1.0)
        push = asyncio.ensure_future(agent.push([agent.status("ssh")]))
        await sink.entered.wait()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await push
        assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        async with asyncio.timeout(30):
            await tracker.ended.wait()
        record = tracker.get(ACME, "edge-acme")
        assert record is not None and record.last_outcome is Reason.UNREACHABLE and record.last_push is None
        [line] = [e for e in log_events() if e["event"] == "push_call_cancelled"]
        assert (line["tenant"], line["agent"], line["reason"]) == (ACME, "edge-acme", "unreachable")
        assert g.pushes(ACME, "unreachable") == 1 and g.pushes(ACME, "ok") == 0
        sink.release.set()


class _FullDiskOnce(FileSink):
    """A FileSink whose first fsync round fails as on a full disk (ENOSPC), then works."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, commit_delay=0)
        self.failing = True

    async def flush(self) -> None:
        if self.failing:
            self.failing = False
            raise OSError(errno.ENOSPC, "No space left on device")
        await super().flush()


async def test_a_push_whose_sink_could_not_flush_is_not_received(pki, tmp_path, log_events):
    # `received` promises the results are durable: after a failed fsync they may be lost,
    # so the push is refused UNAVAILABLE (the agent sends them again), counted and named.
    async with started(pki, tmp_path, sink=_FullDiskOnce(tmp_path / "data")) as g:
        agent = g.agent(pki.agent(ACME, "agent-001"))
        assert await refused(agent.push([agent.status("ssh")])) == (grpc.StatusCode.UNAVAILABLE, "handler_failed")
        [line] = [e for e in log_events() if e["event"] == "gateway_request_refused"]
        assert (line["tenant"], line["agent"], line["reason"]) == (ACME, "edge-acme", "handler_failed")
        assert "file-sink" in line["detail"]
        assert g.pushes(ACME, "handler_failed") == 1 and g.pushes(ACME, "ok") == 0
        assert (await agent.push([agent.status("ssh")])).received  # the retry, flushed
        assert g.pushes(ACME, "ok") == 1 and [r["service_name"] for r in g.rows(ACME)][-1] == "ssh"
