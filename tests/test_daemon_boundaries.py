"""Regression tests for the daemon's boundaries: no failure may end in silence.

Each agent, each cycle yields a result per due check (or a named refusal) and
a log line naming tenant and agent, whatever goes wrong: a tenant without a CA,
a check hanging past the cycle deadline, a bug in the poller, a failing sink.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from spawn import spawn_cli

from poller.config import parse_config
from poller.daemon.scheduler import Limiter, Scheduler
from poller.daemon.worker import AgentWorker
from poller.identity.reasons import Reason
from poller.testing.memory_sink import MemorySink
from poller.trust.store import TrustStore

ACME, XYZ = "acme-corp", "xyz-inc"
STATUS = {"service_type": "process", "service_name": "nginx"}
SWEEP = {"service_type": "sweep", "service_name": "net", "results_interval": "1m"}


def settings_for(pki, agents: dict, **top):
    return parse_config(
        {
            "poller_id": "poller-test",
            "poll_interval": "10s",
            "call_timeout": "1s",
            "certs_dir": str(pki.directory),
            "agents": agents,
            **top,
        }
    )


def entry(agent, tenant=ACME, checks=(STATUS,), **extra) -> dict:
    return {"address": agent.address, "tenant": tenant, "checks": list(checks), **extra}


async def test_agent_of_a_tenant_without_a_ca_pinned_by_name_is_refused_not_lost(pki, serve, log_events):
    agent = await serve(pki.agent(ACME, "agent-001"))
    settings = settings_for(pki, {"lost": entry(agent, tenant="nobody-inc", component_id="agent-001", partition="default")})
    sink = MemorySink()
    scheduler = Scheduler(settings, TrustStore(pki.directory), sink.publish)
    scheduler.start(loops=False)
    try:
        [result] = await scheduler.run_once()
    finally:
        await scheduler.stop(grace=1)
    assert (result.available, result.reason, result.proven) == (False, Reason.UNTRUSTED_CHAIN, False)
    assert sink.results == [result]
    refused = [e for e in log_events() if e["event"] == "agent_refused"]
    assert [(e["agent"], e["tenant"], e["reason"]) for e in refused] == [("lost", "nobody-inc", Reason.UNTRUSTED_CHAIN)]
    assert "no CA for tenant 'nobody-inc'" in refused[0]["detail"]


async def test_a_results_check_hanging_past_the_cycle_deadline_yields_a_timeout(pki, serve):
    agent = await serve(pki.agent(ACME, "agent-001"))
    agent.behaviour.fault_methods = frozenset({"StreamResults"})
    agent.behaviour.hang = True
    # call_timeout above cycle_timeout: the cycle deadline, not the call's, cuts the sweep short.
    settings = settings_for(pki, {"a": entry(agent, checks=(STATUS, SWEEP))}, cycle_timeout="500ms", call_timeout="5s")
    sink = MemorySink()
    scheduler = Scheduler(settings, TrustStore(pki.directory), sink.publish)
    scheduler.start(loops=False)
    try:
        results = await scheduler.run_once()
    finally:
        await scheduler.stop(grace=1)
    by_kind = {r.kind: r for r in results}
    assert set(by_kind) == {"status", "stream"}, results
    assert by_kind["status"].available and by_kind["status"].proven  # the check that finished keeps its answer
    assert (by_kind["stream"].available, by_kind["stream"].reason) == (False, Reason.TIMEOUT)
    assert agent.count("StreamResults") == 1
    assert scheduler.take_tally() == {ACME: {"timeout": 1}}


async def test_a_bug_in_a_cycle_is_an_internal_error_result_and_the_loop_keeps_running(pki, serve, log_events, monkeypatch):
    good = await serve(pki.agent(ACME, "agent-001"))
    buggy = await serve(pki.agent(ACME, "agent-002"))
    settings = settings_for(pki, {"good": entry(good), "buggy": entry(buggy)}, poll_interval="1s")
    original = AgentWorker._connect

    # Fault injection of a bug inside the poller (nothing outside the project can cause one).
    async def broken_connect(self: AgentWorker):  # type: ignore[no-untyped-def]
        if self.agent.name == "buggy":
            raise KeyError("a bug")
        return await original(self)

    monkeypatch.setattr(AgentWorker, "_connect", broken_connect)
    sink = MemorySink()
    scheduler = Scheduler(settings, TrustStore(pki.directory), sink.publish)
    scheduler.start()
    try:
        async with asyncio.timeout(30):
            await sink.wait_for(lambda rs: sum(r.agent == "buggy" for r in rs) >= 2 and any(r.agent == "good" for r in rs))
    finally:
        await scheduler.stop(grace=1)
    buggy_results = [r for r in sink.results if r.agent == "buggy"]
    assert all((r.available, r.reason) == (False, Reason.INTERNAL_ERROR) for r in buggy_results)
    assert all(r.available for r in sink.results if r.agent == "good")
    failures = [e for e in log_events() if e["event"] == "agent_cycle_failed"]
    assert len(failures) >= 2 and all((e["agent"], e["tenant"]) == ("buggy", ACME) for e in failures)
    assert all(e["level"] == "error" for e in failures)


async def test_a_failing_sink_is_logged_and_the_agent_is_polled_again(pki, serve, log_events):
    agent = await serve(pki.agent(ACME, "agent-001"))
    settings = settings_for(pki, {"a": entry(agent)}, poll_interval="1s")
    sink = MemorySink()
    calls = 0

    async def publish(result) -> None:  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("disk full")
        await sink.publish(result)

    scheduler = Scheduler(settings, TrustStore(pki.directory), publish)
    scheduler.start()
    try:
        async with asyncio.timeout(30):
            await sink.wait_for(lambda rs: len(rs) >= 1)
    finally:
        await scheduler.stop(grace=1)
    [failure] = [e for e in log_events() if e["event"] == "agent_cycle_failed"]
    assert (failure["agent"], failure["tenant"], failure["level"]) == ("a", ACME, "error")


async def test_max_concurrent_polls_is_resized_on_reload(pki, serve):
    agent = await serve(pki.agent(ACME, "agent-001"))
    settings = settings_for(pki, {"a": entry(agent)}, max_concurrent_polls=3)
    scheduler = Scheduler(settings, TrustStore(pki.directory), MemorySink().publish)
    scheduler.start(loops=False)
    try:
        assert scheduler.limiter.limit == 3
        await scheduler.apply(settings_for(pki, {"a": entry(agent)}, max_concurrent_polls=7))
        assert scheduler.limiter.limit == 7
    finally:
        await scheduler.stop(grace=1)


async def test_limiter_lets_waiters_in_when_it_grows_and_holds_them_when_it_shrinks():
    limiter = Limiter(1)
    trying = {1: asyncio.Event(), 2: asyncio.Event()}
    entered = {1: asyncio.Event(), 2: asyncio.Event()}
    release = asyncio.Event()

    async def hold(n: int) -> None:
        trying[n].set()
        async with limiter:
            entered[n].set()
            await release.wait()

    first = asyncio.ensure_future(hold(1))
    async with asyncio.timeout(5):
        await entered[1].wait()
    second = asyncio.ensure_future(hold(2))
    async with asyncio.timeout(5):
        await trying[2].wait()  # by now the second task is parked in the limiter
    assert not entered[2].is_set() and limiter.in_use == 1  # it waits at limit 1
    limiter.resize(2)
    async with asyncio.timeout(5):
        await entered[2].wait()
    assert limiter.in_use == 2
    limiter.resize(1)
    release.set()
    await asyncio.gather(first, second)
    assert limiter.in_use == 0


async def test_a_cancelled_waiter_gives_its_slot_back():
    limiter = Limiter(1)
    async with limiter:
        waiter = asyncio.ensure_future(limiter.__aenter__())
        await asyncio.wait([waiter], timeout=0)  # let it park
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert limiter.in_use == 0
    async with asyncio.timeout(5), limiter:
        assert limiter.in_use == 1


async def test_an_agent_without_checks_is_counted_by_what_its_cycle_found(pki, serve):
    # An outside review: an impostor listed with "checks": [] was refused, logged
    # agent_refused, and counted ok (no results: nothing to judge by), so run --once exited 0.
    a = await serve(pki.agent(ACME, "agent-001"))
    impostor = await serve(pki.agent(ACME, "agent-666", issuer_tenant=XYZ, dns=[]))
    settings = settings_for(pki, {"a": entry(a, checks=()), "impostor": entry(impostor, checks=())})
    scheduler = Scheduler(settings, TrustStore(pki.directory), MemorySink().publish)
    scheduler.start(loops=False)
    try:
        assert await scheduler.run_once() == []
    finally:
        await scheduler.stop(grace=1)
    assert scheduler.take_tally() == {ACME: {"ok": 1, "refused": 1}}


async def test_poll_summary_counts_agents_not_checks(pki, serve):
    a = await serve(pki.agent(ACME, "agent-001"))
    b = await serve(pki.agent(ACME, "agent-002"))
    impostor = await serve(pki.agent(ACME, "agent-666", issuer_tenant=XYZ, dns=[]))
    x = await serve(pki.agent(XYZ, "agent-007"))
    two_checks = (STATUS, {"service_type": "icmp", "service_name": "ping"})
    settings = settings_for(
        pki,
        {
            "a": entry(a, checks=two_checks),
            "b": entry(b, checks=two_checks),
            "impostor": entry(impostor, checks=two_checks),
            "x": entry(x, tenant=XYZ),
        },
    )
    scheduler = Scheduler(settings, TrustStore(pki.directory), MemorySink().publish)
    scheduler.start(loops=False)
    try:
        await scheduler.run_once()
    finally:
        await scheduler.stop(grace=1)
    assert scheduler.take_tally() == {ACME: {"ok": 2, "refused": 1}, XYZ: {"ok": 1}}
    assert scheduler.take_tally() == {}  # taken: the next interval starts from zero


# ---------------------------------------------------------------- run --once as a process


async def run_once_process(pki, tmp_path: Path, agents: dict, **top) -> tuple[int, str, list[dict]]:
    config = tmp_path / "poller.json"
    doc = {
        "poller_id": "poller-once",
        "poll_interval": "10s",
        "call_timeout": "2s",
        "certs_dir": str(pki.directory),
        "sink": {"type": "file", "dir": str(tmp_path / "data")},
        "log_format": "json",
        "agents": agents,
        **top,
    }
    config.write_text(json.dumps(doc))
    proc = await spawn_cli(
        "run",
        "--config",
        str(config),
        "--once",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    lines = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    assert proc.returncode is not None
    return proc.returncode, out.decode(), lines


async def test_run_once_exits_3_when_an_identity_was_refused(pki, serve, tmp_path, unused_tcp_port):
    good = await serve(pki.agent(ACME, "agent-001"))
    impostor = await serve(pki.agent(ACME, "agent-666", issuer_tenant=XYZ, dns=[]))
    down = {"address": f"127.0.0.1:{unused_tcp_port}", "tenant": XYZ, "checks": [STATUS]}
    code, out, _ = await run_once_process(pki, tmp_path, {"good": entry(good), "impostor": entry(impostor), "down": down})
    assert code == 3
    assert out.splitlines() == [
        f"summary tenant={ACME} agents=2 ok=1 refused=1",
        f"summary tenant={XYZ} agents=1 unreachable=1",
    ]


async def test_run_once_exits_4_when_unreachable_and_none_refused_and_logs_config_warnings(pki, serve, tmp_path, unused_tcp_port):
    good = await serve(pki.agent(ACME, "agent-001"))
    down = {"address": f"127.0.0.1:{unused_tcp_port}", "tenant": ACME, "checks": [STATUS]}
    code, out, lines = await run_once_process(pki, tmp_path, {"good": entry(good), "down": down}, core_address="x:1")
    assert code == 4
    assert out.splitlines() == [f"summary tenant={ACME} agents=2 ok=1 unreachable=1"]
    warnings = [line for line in lines if line["event"] == "config_warning"]
    assert [w["path"] for w in warnings] == ["core_address"]
    assert warnings[0]["level"] == "warning"


async def test_run_once_exits_0_when_every_agent_answered(pki, serve, tmp_path):
    good = await serve(pki.agent(ACME, "agent-001"))
    other = await serve(pki.agent(XYZ, "agent-007"))
    code, out, lines = await run_once_process(pki, tmp_path, {"a": entry(good), "b": entry(other, tenant=XYZ)})
    assert code == 0
    assert out.splitlines() == [f"summary tenant={ACME} agents=1 ok=1", f"summary tenant={XYZ} agents=1 ok=1"]
    accepted = [line for line in lines if line["event"] == "identity_accepted"]
    assert sorted(line["agent"] for line in accepted) == ["a", "b"]  # one line per acceptance
    assert not [line for line in lines if line["event"] == "agent_accepted"]
    [summary] = [line for line in lines if line["event"] == "poll_summary"]
    assert summary["tenants"] == {ACME: {"ok": 1}, XYZ: {"ok": 1}}


async def test_run_once_survives_a_sink_failing_for_one_agent(pki, serve, log_events):
    a = await serve(pki.agent(ACME, "agent-001"))
    b = await serve(pki.agent(ACME, "agent-002"))
    settings = settings_for(pki, {"a": entry(a), "b": entry(b)})
    sink = MemorySink()

    async def publish(result) -> None:  # type: ignore[no-untyped-def]
        if result.agent == "a":
            raise OSError("disk full")
        await sink.publish(result)

    scheduler = Scheduler(settings, TrustStore(pki.directory), publish)
    scheduler.start(loops=False)
    try:
        results = await scheduler.run_once()
    finally:
        await scheduler.stop(grace=1)
    assert [r.agent for r in results] == ["b"] == [r.agent for r in sink.results]
    [failure] = [e for e in log_events() if e["event"] == "agent_cycle_failed"]
    assert (failure["agent"], failure["tenant"]) == ("a", ACME)
    assert scheduler.take_tally() == {ACME: {"ok": 2}}  # both agents answered; the sink is not theirs to blame


class _FaultyGate:
    """A PollGate (the cluster's seam) that fails once in the given way, then lets one poll through."""

    def __init__(self, fault: str) -> None:
        self.fault = fault
        self.failed = False
        self.slots = 0

    def _fail(self, where: str) -> None:
        if self.fault.startswith(where) and not self.failed:
            self.failed = True
            if self.fault.endswith("cancel"):
                raise asyncio.CancelledError()  # as grpc.aio raises in a call whose channel closed
            raise RuntimeError("a bug in the gate")

    def next_slot(self, agent: str) -> float:
        import time

        self.slots += 1
        self._fail("next_slot")
        return time.monotonic() + (0.0 if self.slots <= 2 else 3600.0)  # the loop before and after its restart

    def slot_deadline(self, agent: str) -> float:
        import time

        return time.monotonic() + 5.0

    async def may_poll(self, agent) -> bool:
        self._fail("may_poll")
        return True


@pytest.mark.parametrize("fault", ["next_slot-error", "may_poll-cancel"])
async def test_an_agent_loop_that_ends_is_logged_with_its_traceback_and_restarted(pki, serve, log_events, caplog, fault):
    agent = await serve(pki.agent(ACME, "agent-001"))
    settings = settings_for(pki, {"a": entry(agent)}, poll_interval="1s")
    sink = MemorySink()
    gate = _FaultyGate(fault)
    scheduler = Scheduler(settings, TrustStore(pki.directory), sink.publish, gate=gate)
    scheduler.start()
    try:
        async with asyncio.timeout(30):
            [result] = await sink.wait_for(lambda results: len(results) >= 1)
    finally:
        await scheduler.stop(grace=1)
    assert gate.failed and result.available and result.agent == "a"
    [failed] = [e for e in log_events() if e["event"] == "agent_loop_failed"]
    assert (failed["agent"], failed["tenant"], failed["level"]) == ("a", ACME, "error")
    [record] = [r for r in caplog.records if "agent_loop_failed" in r.getMessage()]
    assert record.exc_info is not None  # the traceback
    assert [e["agent"] for e in log_events() if e["event"] == "agent_loop_restarted"] == ["a"]


async def test_stopping_the_scheduler_still_cancels_a_hung_cycle(pki, serve):
    agent = await serve(pki.agent(ACME, "agent-001"))
    agent.behaviour.hang = True
    settings = settings_for(pki, {"a": entry(agent)}, poll_interval="10s", call_timeout="5s")
    scheduler = Scheduler(settings, TrustStore(pki.directory), MemorySink().publish)
    scheduler.start()
    async with asyncio.timeout(30):
        await agent.wait_for_calls("GetStatus")
        await scheduler.stop(grace=0.1)  # the supervisor does not restart a loop the scheduler cancels
    assert all(task.done() for task in scheduler._tasks.values()) and not scheduler._tasks
