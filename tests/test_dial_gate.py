"""The daemon's dial gate (issue 10): concurrent dials sized from how fast
dials finish, and agents still waiting for a slot reported as `pending`, not
as failures. Real mock agents over real mTLS; the gate's clock is the real one
and no assertion depends on how long anything takes, only on what the gate
was told (fast, slow, timed out)."""

from __future__ import annotations

import asyncio

import pytest

from poller.config import parse_config
from poller.daemon.dialgate import DialGate
from poller.daemon.scheduler import Scheduler
from poller.daemon.status import to_json
from poller.identity.reasons import AgentUnreachable, Reason
from poller.testing.memory_sink import MemorySink
from poller.trust.store import TrustStore

ACME = "acme-corp"
CHECK = [{"service_type": "process", "service_name": "nginx"}]


async def test_fast_dials_open_the_gate_and_slow_ones_close_it_by_a_quarter() -> None:
    gate = DialGate(initial=4, low=2, high=10, target=60.0)
    for _ in range(3):
        async with gate.admit():
            pass
    assert gate.limit == 7  # slow start: one more slot per fast dial
    gate._observe(61.0, timed_out=False)  # slower than target: congestion
    assert gate.limit == 5
    gate._observe(0.01, timed_out=True)  # a timed-out handshake counts too, once per target period
    assert gate.limit == 5
    for _ in range(5):
        gate._observe(0.01, timed_out=False)
    assert gate.limit == 6  # after the first cut: one more per `limit` fast dials
    for _ in range(200):
        gate._observe(0.01, timed_out=False)
    assert gate.limit == 10  # never above high


async def test_a_handshake_timeout_inside_the_gate_shrinks_it_and_is_raised() -> None:
    gate = DialGate(initial=8, low=2, target=60.0)
    with pytest.raises(AgentUnreachable):
        async with gate.admit():
            raise AgentUnreachable("TLS handshake timed out", code="DEADLINE_EXCEEDED")
    assert gate.limit == 6
    assert (gate.dials, gate.slow, gate.in_use) == (1, 1, 0)


async def test_the_gate_bounds_dials_in_flight() -> None:
    gate = DialGate(initial=2, low=2, high=2)
    entered, release = asyncio.Queue[int](), asyncio.Event()

    async def dial(i: int) -> None:
        async with gate.admit():
            entered.put_nowait(i)
            await release.wait()

    tasks = [asyncio.create_task(dial(i)) for i in range(5)]
    first = {await entered.get(), await entered.get()}
    assert len(first) == 2 and entered.empty() and gate.in_use == 2
    release.set()
    await asyncio.gather(*tasks)
    assert gate.in_use == 0


async def test_an_agent_still_waiting_for_a_dial_slot_is_pending_not_failed(pki, serve, log_events):
    agent = await serve(pki.agent(ACME))
    settings = parse_config(
        {
            "poller_id": "p",
            "poll_interval": "10s",
            "call_timeout": "1s",
            "cycle_timeout": "2s",
            "certs_dir": str(pki.directory),
            "agents": {"a": {"address": agent.address, "tenant": ACME, "checks": CHECK}},
        }
    )
    scheduler = Scheduler(settings, TrustStore(pki.directory), MemorySink().publish)
    scheduler.dial_gate = DialGate(initial=1, low=1, high=1)
    scheduler.start(loops=False)
    try:
        async with scheduler.dial_gate.admit():  # every slot taken: the agent waits out its cycle
            [result] = await scheduler.run_once()
        assert (result.available, result.reason) == (False, Reason.PENDING)
        [board] = to_json(scheduler.status.snapshot(settings.agents))
        assert (board["state"], board["reason"], board["consecutive_failures"]) == ("pending", "pending", 0)
        assert agent.count("GetStatus") == 0
        [line] = [e for e in log_events() if e["event"] == "agent_pending"]
        assert (line["agent"], line["tenant"]) == ("a", ACME)

        [result] = await scheduler.run_once()  # a slot free: dialed and polled
        assert result.available and result.reason is None
        [board] = to_json(scheduler.status.snapshot(settings.agents))
        assert board["state"] == "proven"
    finally:
        await scheduler.stop(grace=1)
