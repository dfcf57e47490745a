"""The daemon's scheduling against real mock agents: faults stay contained,
sequences and streams are handled, refusals and impostors are reported."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

import poller
from poller.config import parse_config
from poller.daemon.scheduler import Scheduler
from poller.daemon.worker import backoff_delay
from poller.delivery.file_sink import FileSink
from poller.delivery.result import PollResult
from poller.testing.memory_sink import MemorySink
from poller.trust.store import TrustStore

ACME, XYZ = "acme-corp", "xyz-inc"


def make_settings(pki, agents: dict, **top) -> object:
    doc = {
        "poller_id": "poller-test",
        "partition": "dc-1",
        "poll_interval": "10s",
        "call_timeout": "1s",
        "certs_dir": str(pki.directory),
        "agents": agents,
        **top,
    }
    return parse_config(doc)


def agent_entry(agent, tenant=ACME, checks=None, **extra) -> dict:
    return {
        "address": agent.address,
        "tenant": tenant,
        "checks": checks if checks is not None else [{"service_type": "process", "service_name": "nginx", "details": "nginx"}],
        **extra,
    }


async def run_once(pki, agents: dict, **top) -> tuple[list[PollResult], Scheduler]:
    settings = make_settings(pki, agents, **top)
    sink = MemorySink()
    scheduler = Scheduler(settings, TrustStore(pki.directory), sink.publish)
    scheduler.start(loops=False)
    try:
        results = await scheduler.run_once()
    finally:
        await scheduler.stop(grace=1)
    assert sorted(map(id, results)) == sorted(map(id, sink.results))  # every result was published
    return results, scheduler


def by_agent(results: list[PollResult]) -> dict[str, list[PollResult]]:
    out: dict[str, list[PollResult]] = {}
    for r in results:
        out.setdefault(r.agent, []).append(r)
    return out


async def test_a_cycle_contains_every_fault_to_its_own_agent(pki, serve):
    good = await serve(pki.agent(ACME, "agent-001"))
    hung = await serve(pki.agent(ACME, "agent-002"))
    hung.behaviour.hang = True
    impostor = await serve(pki.agent(ACME, "agent-666", issuer_tenant=XYZ, dns=[]))
    broken = await serve(pki.agent(XYZ, "agent-007", "site-b"))
    broken.behaviour.stream_chunks = 5
    broken.behaviour.drop_after_chunks = 2
    sweep = [{"service_type": "sweep", "service_name": "net", "results_interval": "1m"}]

    results, _ = await run_once(
        pki,
        {
            "good": agent_entry(good),
            "hung": agent_entry(hung),
            "impostor": agent_entry(impostor),
            "broken": agent_entry(broken, tenant=XYZ, checks=sweep),
        },
    )
    got = by_agent(results)
    assert set(got) == {"good", "hung", "impostor", "broken"}

    [ok] = got["good"]
    assert ok.available and ok.proven and ok.context.component_id == "agent-001"
    assert (ok.tenant, ok.poller_id, ok.partition) == (ACME, "poller-test", "dc-1")
    assert json.loads(ok.payload) == {"status": "ok"}

    [timed_out] = got["hung"]
    assert (timed_out.available, timed_out.reason) == (False, "timeout")

    [refused] = got["impostor"]
    assert (refused.available, refused.reason, refused.proven) == (False, "tenant_mismatch", False)
    assert impostor.count("GetStatus") == 0

    [stream] = got["broken"]
    assert (stream.available, stream.reason) == (False, "incomplete_stream")
    assert stream.payload == b""


async def test_results_send_last_sequence_and_skip_unchanged_data(pki, serve):
    agent = await serve(pki.agent(ACME))
    agent.behaviour.results_data = b'{"hosts":[1]}'
    settings = make_settings(
        pki, {"a": agent_entry(agent, checks=[{"service_type": "snmp", "service_name": "snmp", "results_interval": "1m"}])}
    )
    sink = MemorySink()
    scheduler = Scheduler(settings, TrustStore(pki.directory), sink.publish)
    scheduler.start(loops=False)
    worker = scheduler.worker("a")
    try:
        [first] = await scheduler.run_cycle(worker)
        assert (first.kind, first.current_sequence, json.loads(first.payload)) == ("results", "1", {"hosts": [1]})

        worker.results_due.clear()  # make the check due again now
        assert await scheduler.run_cycle(worker) == []  # has_new_data = false: nothing forwarded
        assert agent.requests_for("GetResults")[-1].last_sequence == "1"

        agent.behaviour.advance_sequence(b'{"hosts":[1,2]}')
        worker.results_due.clear()
        [third] = await scheduler.run_cycle(worker)
        assert (third.current_sequence, json.loads(third.payload)) == ("2", {"hosts": [1, 2]})
    finally:
        await scheduler.stop(grace=1)


async def test_stream_reassembled_across_many_chunks(pki, serve):
    agent = await serve(pki.agent(ACME))
    document = json.dumps({"hosts": [{"ip": f"192.0.2.{i % 250}", "n": i} for i in range(2000)]}).encode()
    agent.behaviour.stream_document = document
    agent.behaviour.stream_chunks = 97
    results, _ = await run_once(
        pki, {"a": agent_entry(agent, checks=[{"service_type": "sync", "service_name": "s", "results_interval": "1m"}])}
    )
    [doc] = results
    assert doc.available and doc.kind == "stream"
    assert doc.payload == document


@pytest.mark.parametrize("fault", ["end_without_final", "skip_chunk_index"])
async def test_incomplete_streams_are_not_forwarded_as_complete(pki, serve, fault):
    agent = await serve(pki.agent(ACME))
    agent.behaviour.stream_chunks = 4
    setattr(agent.behaviour, fault, True if fault == "end_without_final" else 2)
    results, _ = await run_once(
        pki, {"a": agent_entry(agent, checks=[{"service_type": "sweep", "service_name": "s", "results_interval": "1m"}])}
    )
    [r] = results
    assert (r.available, r.reason, r.payload) == (False, "incomplete_stream", b"")


async def test_unreachable_agent_reports_and_backs_off(pki, unused_tcp_port):
    settings = make_settings(
        pki,
        {
            "down": {
                "address": f"127.0.0.1:{unused_tcp_port}",
                "tenant": ACME,
                "checks": [{"service_type": "icmp", "service_name": "ping"}],
            }
        },
    )
    sink = MemorySink()
    scheduler = Scheduler(settings, TrustStore(pki.directory), sink.publish)
    scheduler.start(loops=False)
    worker = scheduler.worker("down")
    try:
        [first] = await scheduler.run_cycle(worker)
        assert (first.available, first.reason) == (False, "unreachable")
        assert worker.failures == 1 and worker.down is not None
        retry_at = worker.down.retry_at
        [second] = await scheduler.run_cycle(worker)  # inside the backoff: no new dial
        assert (second.reason, worker.failures, worker.down.retry_at) == ("unreachable", 1, retry_at)
    finally:
        await scheduler.stop(grace=1)


async def test_not_serving_agent_is_reported_unavailable(pki, serve):
    agent = await serve(pki.agent(ACME))
    agent.behaviour.health_status = "NOT_SERVING"
    results, _ = await run_once(pki, {"a": agent_entry(agent)})
    [r] = results
    assert (r.available, r.reason, r.proven) == (False, "not_serving", True)
    assert agent.count("GetStatus") == 0


async def test_agent_restarted_as_impostor_is_refused_on_reconnect(pki, serve):
    agent = await serve(pki.agent(ACME, "agent-001"))
    settings = make_settings(pki, {"a": agent_entry(agent)})
    sink = MemorySink()
    scheduler = Scheduler(settings, TrustStore(pki.directory), sink.publish)
    scheduler.start(loops=False)
    worker = scheduler.worker("a")
    try:
        [ok] = await scheduler.run_cycle(worker)
        assert ok.available
        impostor = pki.agent(ACME, "agent-001", issuer_tenant=XYZ, dns=[])
        await agent.restart(cert_chain_pem=impostor.chain_pem, key_pem=impostor.key_pem)
        agent.reset_records()
        [refused] = await scheduler.run_cycle(worker)
        assert (refused.available, refused.reason, refused.proven) == (False, "tenant_mismatch", False)
        assert agent.count("GetStatus") == 0
    finally:
        await scheduler.stop(grace=1)


async def test_file_sink_writes_per_tenant_and_refuses_odd_tenants(tmp_path, pki, serve):
    a = await serve(pki.agent(ACME))
    x = await serve(pki.agent(XYZ, "agent-007", "site-b"))
    results, _ = await run_once(pki, {"a": agent_entry(a), "x": agent_entry(x, tenant=XYZ)})
    sink = FileSink(tmp_path / "data")
    for r in results:
        await sink.publish(r)
    await sink.close()
    acme = [json.loads(line) for line in (tmp_path / "data" / ACME / "results.jsonl").read_text().splitlines()]
    xyz = [json.loads(line) for line in (tmp_path / "data" / XYZ / "results.jsonl").read_text().splitlines()]
    assert [d["agent"] for d in acme] == ["a"] and [d["agent"] for d in xyz] == ["x"]
    assert acme[0]["identity"]["tenant"] == ACME and xyz[0]["identity"]["tenant"] == XYZ
    with pytest.raises(ValueError):
        sink.path_for("../etc")


def test_a_result_cannot_carry_another_tenants_identity(pki):
    from poller.testing.identity import unverified_tenant_context

    ctx = unverified_tenant_context(tenant=XYZ)
    with pytest.raises(ValueError):
        PollResult(
            tenant=ACME,
            agent="a",
            address="h:1",
            poller_id="p",
            partition="d",
            kind="status",
            service_name="s",
            service_type="t",
            available=True,
            context=ctx,
        )


@pytest.mark.parametrize("failures", [1, 2, 5, 20])
def test_backoff_is_jittered_exponential_and_capped(failures):
    import random

    rng = random.Random(failures)
    for _ in range(100):
        delay = backoff_delay(failures, initial=1.0, cap=30.0, rng=rng)
        expected = min(30.0, 2.0 ** (failures - 1))
        assert expected / 2 <= delay <= expected


async def test_daemon_serves_metrics_and_stops_cleanly(pki, serve):
    import urllib.request

    from poller.daemon.daemon import PollerDaemon

    good = await serve(pki.agent(ACME, "agent-001"))
    impostor = await serve(pki.agent(ACME, "agent-666", issuer_tenant=XYZ, dns=[]))
    settings = make_settings(pki, {"good": agent_entry(good), "impostor": agent_entry(impostor)}, metrics_listen="127.0.0.1:0")
    sink = MemorySink()
    daemon = PollerDaemon(settings, sink=sink)
    task = asyncio.ensure_future(daemon.run(install_signals=False))
    try:
        async with asyncio.timeout(30):
            await sink.wait_for(lambda rs: {r.agent for r in rs} == {"good", "impostor"})
        url = f"http://127.0.0.1:{daemon.metrics_port}/metrics"
        body = (await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())).decode()
    finally:
        daemon.request_stop()
        assert await task == 0
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(body) for s in f.samples
    }
    assert samples[("poller_polls_total", (("outcome", "ok"), ("tenant", ACME)))] >= 1
    assert samples[("poller_identity_refusals_total", (("reason", "tenant_mismatch"), ("tenant", ACME)))] >= 1
    assert samples[("poller_identity_accepts_total", (("tenant", ACME),))] >= 1
    expiry = samples[("poller_certificate_expiry_timestamp_seconds", (("kind", "agent"), ("name", "good"), ("tenant", ACME)))]
    assert expiry > time.time()  # a Unix time in the future, not a count of days
    assert any(name == "poller_certificate_expiry_timestamp_seconds" and ("kind", "poller") in labels for name, labels in samples)
    # The proven agent has a last success; the impostor never has one.
    assert samples[("poller_agent_last_success_timestamp_seconds", (("agent", "good"), ("tenant", ACME)))] > 0
    assert not any(n == "poller_agent_last_success_timestamp_seconds" and ("agent", "impostor") in ls for n, ls in samples)
    # Counters exist at 0 before anything fails, so dashboards show 0, not "No data".
    assert samples[("poller_identity_refusals_total", (("reason", "revoked"), ("tenant", ACME)))] == 0
    assert samples[("poller_polls_total", (("outcome", "unreachable"), ("tenant", ACME)))] == 0
    # The process collectors and the build info, in the daemon's own registry.
    assert samples[("process_cpu_seconds_total", ())] >= 0
    assert any(n == "poller_build_info" and dict(ls)["version"] == poller.__version__ for n, ls in samples)
    assert any(n == "python_info" for n, _ in samples)
    assert any(name == "poller_call_latency_seconds_count" for name, _ in samples)
    # The daemon's own registry: only this daemon's tenant, whatever earlier tests polled
    # (the CRL gauges name every tenant of the trust store, polled or not).
    ours = [labels for name, labels in samples if name.startswith("poller_") and not name.startswith("poller_tenant_crl")]
    assert {dict(labels).get("tenant") for labels in ours} - {None, ""} == {ACME}
    assert REGISTRY.get_sample_value("poller_polls_total", {"outcome": "ok", "tenant": ACME}) is None
    assert sink.closed


async def test_handlers_see_the_proven_tenant_as_current_tenant(pki, serve):
    from poller.identity.context import current_tenant

    agent = await serve(pki.agent(ACME, "agent-001"))
    seen = []

    async def handler(result: PollResult) -> None:
        seen.append((result.tenant, current_tenant().tenant, current_tenant().component_id))

    settings = make_settings(pki, {"a": agent_entry(agent)})
    scheduler = Scheduler(settings, TrustStore(pki.directory), handler)
    scheduler.start(loops=False)
    try:
        await scheduler.run_once()
    finally:
        await scheduler.stop(grace=1)
    assert seen == [(ACME, ACME, "agent-001")]
