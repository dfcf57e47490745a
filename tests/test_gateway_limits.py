"""TenantLimits' connection count, on an injected clock (the gateway tests
exercise it over real TLS; these pin the edges no loopback run reaches)."""

from __future__ import annotations

import asyncio

import pytest

from poller.gateway import bounds as bounds_module
from poller.gateway.bounds import GatewayBounds, TenantLimits
from poller.gateway.reads import AgentReads
from poller.identity.reasons import InvalidArgument

ACME, XYZ = "acme-corp", "xyz-inc"


def limits(**bounds) -> TenantLimits:
    return TenantLimits(GatewayBounds(**({"max_connections_per_tenant": 2, "connection_idle": 60.0} | bounds)))


def test_a_connection_counts_until_it_has_been_idle_for_connection_idle():
    lim = limits()
    for i, peer in enumerate(("10.0.0.1:1", "10.0.0.2:1")):
        assert lim.enter_call(ACME, peer, f"agent-{i}", now=0.0) is None
        lim.leave_call(ACME, peer, now=0.0)
    assert lim.enter_call(ACME, "10.0.0.3:1", "agent-3", now=59.0) == "tenant acme-corp holds 2 connections (at most 2)"
    assert lim.connections(ACME, now=59.0) == 2
    assert lim.enter_call(ACME, "10.0.0.3:1", "agent-3", now=61.0) is None  # both idle past 60 s: forgotten
    assert lim.connections(ACME, now=61.0) == 1


def test_a_connection_with_a_call_in_flight_never_expires():
    lim = limits()
    assert lim.enter_call(ACME, "10.0.0.1:1", "agent-1", now=0.0) is None  # a ControlStream, held
    assert lim.enter_call(ACME, "10.0.0.2:1", "agent-2", now=0.0) is None
    lim.leave_call(ACME, "10.0.0.2:1", now=0.0)
    assert lim.enter_call(ACME, "10.0.0.3:1", "agent-3", now=1000.0) is None  # agent-2's went idle
    assert lim.enter_call(ACME, "10.0.0.4:1", "agent-4", now=2000.0) is not None  # agent-1's is still held
    assert lim.connections(ACME, now=2000.0) == 2


def test_a_reconnect_replaces_the_idle_connection_it_left_but_not_a_busy_one():
    lim = limits(max_connections_per_tenant=1)
    assert lim.enter_call(ACME, "10.0.0.1:1", "agent-1", now=0.0) is None
    assert lim.enter_call(ACME, "10.0.0.1:2", "agent-1", now=1.0) is not None  # the first still has its call
    lim.leave_call(ACME, "10.0.0.1:1", now=2.0)
    assert lim.enter_call(ACME, "10.0.0.1:2", "agent-1", now=3.0) is None  # now it replaces it
    assert lim.connections(ACME, now=3.0) == 1
    assert lim.enter_call(ACME, "10.0.0.9:1", "agent-9", now=4.0) is not None  # another agent is not a reconnect


def test_tenants_hold_their_own_connections_and_refusals_count_nothing():
    lim = limits(max_connections_per_tenant=1)
    assert lim.enter_call(ACME, "10.0.0.1:1", "agent-1", now=0.0) is None
    assert lim.enter_call(ACME, "10.0.0.2:1", "agent-2", now=0.0) is not None
    assert lim.calls(ACME) == 1 and lim.connections(ACME, now=0.0) == 1
    assert lim.enter_call(XYZ, "10.0.0.2:1", "agent-7", now=0.0) is None


def test_calls_without_a_peer_count_no_connection():
    lim = limits(max_connections_per_tenant=1, max_calls_per_tenant=3)
    assert [lim.enter_call(ACME, now=0.0) for _ in range(4)] == [None, None, None, "tenant acme-corp has 3 calls in flight"]
    assert lim.connections(ACME, now=0.0) == 0


def test_one_agent_holds_at_most_its_share_of_its_tenants_calls():
    lim = limits(max_calls_per_tenant=10, max_calls_per_agent=3, max_connections_per_tenant=10)
    held = [lim.enter_call(ACME, "10.0.0.1:1", "agent-1", "p", now=0.0) for _ in range(4)]
    assert held[:3] == [None] * 3
    assert held[3] == "agent agent-1 of tenant acme-corp (partition 'p') has its 3 calls in flight"
    assert lim.calls(ACME) == 3 and lim.calls(ACME, "agent-1", "p") == 3  # the refused one counted nothing
    # Its siblings still have the rest of the tenant's places; the same component in
    # another partition is another agent.
    assert lim.enter_call(ACME, "10.0.0.2:1", "agent-2", "p", now=0.0) is None
    assert lim.enter_call(ACME, "10.0.0.3:1", "agent-1", "q", now=0.0) is None
    lim.leave_call(ACME, "10.0.0.1:1", "agent-1", "p", now=1.0)
    assert lim.calls(ACME, "agent-1", "p") == 2
    assert lim.enter_call(ACME, "10.0.0.1:1", "agent-1", "p", now=1.0) is None  # its place back
    for _ in range(3):
        lim.leave_call(ACME, "10.0.0.1:1", now=2.0)  # agent None: the connection's own agent
    assert lim.calls(ACME, "agent-1", "p") == 0 and lim.calls(ACME) == 2


def test_a_per_agent_rate_is_taken_before_the_tenants_and_is_off_by_default():
    assert all(limits().take_agent(ACME, "agent-1", "p", now=0.0) for _ in range(1000))  # no per-agent rate
    lim = limits(push_rate=1.0, push_burst=5, push_rate_per_agent=1.0, push_burst_per_agent=2)
    hog = [lim.take_agent(ACME, "agent-1", "p", now=0.0) and lim.take_push(ACME, now=0.0) for _ in range(6)]
    assert hog == [True, True, False, False, False, False]  # its own two; the refused took no tenant token
    assert [lim.take_agent(ACME, "agent-2", "p", now=0.0) and lim.take_push(ACME, now=0.0) for _ in range(3)] == [
        True,
        True,
        False,
    ]  # a sibling's own two, from the tenant's three left
    assert lim.take_agent(ACME, "agent-1", "p", now=1.0)  # a token back after a second
    assert GatewayBounds(push_rate_per_agent=0.5).agent_burst == 5  # burst 0: ten seconds of the rate


@pytest.mark.parametrize(
    "bounds",
    [
        {"push_rate": float("nan")},
        {"push_rate_per_agent": float("inf")},
        {"push_rate_per_agent": 1e308},
        {"push_burst_per_agent": 5},  # a burst of no rate
        {"max_results_bytes": 2**31},
        {"max_connections": 2**31},
    ],
)
def test_bounds_that_cannot_work_are_refused_when_made(bounds):
    with pytest.raises(InvalidArgument):
        GatewayBounds(**bounds)


def test_per_agent_buckets_that_filled_up_again_are_forgotten(monkeypatch):
    monkeypatch.setattr(bounds_module, "AGENT_BUCKETS", 10)
    lim = limits(push_rate_per_agent=1.0, push_burst_per_agent=2)
    for n in range(10):
        lim.take_agent(ACME, f"agent-{n}", "p", now=0.0)
    assert len(lim._agent_buckets) == 10
    lim.take_agent(ACME, "late", "p", now=100.0)  # past the mark: the ones full again go
    assert list(lim._agent_buckets) == [(ACME, "late", "p")]
    assert lim.take_agent(ACME, "agent-0", "p", now=100.0) and lim.take_agent(ACME, "agent-0", "p", now=100.0)
    assert not lim.take_agent(ACME, "agent-0", "p", now=100.0)  # as it was: full, its burst, then spent


def call(lim: TenantLimits, peer: str, agent: str = "agent-1", partition: str = "p", *, now: float) -> str | None:
    """One call, ended at once when admitted (the connection then sits between calls)."""
    over = lim.enter_call(ACME, peer, agent, partition, now=now)
    if over is None:
        lim.leave_call(ACME, peer, agent, partition, now=now)
    return over


def test_an_agent_reconnecting_again_and_again_is_never_refused():
    # Each drop leaves a connection grpc has not closed yet (it waits connection_idle).
    lim = limits(max_connections_per_tenant=1)
    for port in range(1, 21):
        assert call(lim, f"10.0.0.1:{port}", now=float(port)) is None
        assert call(lim, "10.0.0.2:1", "agent-2", now=float(port)) is not None  # the tenant's one connection is held
        assert lim.connections(ACME, now=float(port)) == 1


def test_one_certificate_calling_on_many_connections_has_each_counted():
    lim = limits(max_connections_per_tenant=2)
    peers = [f"10.0.0.1:{port}" for port in range(1, 7)]
    assert [call(lim, peer, now=0.0) for peer in peers] == [None] * 6  # each looks like a reconnect
    # Called on again: the agent keeps them all alive. Each counts, up to the tenant's limit.
    outcomes = [call(lim, peer, now=1.0) for peer in peers]
    assert [o is None for o in outcomes] == [True, False, False, False, False, True]
    assert outcomes[1] == "tenant acme-corp holds 2 connections (at most 2)"
    assert lim.connections(ACME, now=1.0) == 2
    assert call(lim, "10.0.0.1:7", now=2.0) is not None  # and a new one no longer replaces any
    assert call(lim, "10.0.0.2:1", "agent-2", now=2.0) is not None
    # All idle for connection_idle: closed by grpc, forgotten, and the agent is new again.
    assert call(lim, "10.0.0.1:8", now=62.0) is None
    assert call(lim, "10.0.0.1:9", now=63.0) is None and lim.connections(ACME, now=63.0) == 1


def test_one_component_in_two_partitions_is_two_agents():
    lim = limits(max_connections_per_tenant=2)
    assert call(lim, "10.0.0.1:1", "agent-1", "site-a", now=0.0) is None
    assert call(lim, "10.0.0.2:1", "agent-1", "site-b", now=1.0) is None  # not a reconnect of site-a
    assert call(lim, "10.0.0.1:1", "agent-1", "site-a", now=2.0) is None
    assert lim.connections(ACME, now=2.0) == 2
    lim = limits(max_connections_per_tenant=1)
    assert call(lim, "10.0.0.1:1", "agent-1", "site-a", now=0.0) is None
    assert call(lim, "10.0.0.2:1", "agent-1", "site-b", now=1.0) is not None


def test_another_agent_on_a_known_address_is_a_new_connection():
    # The same host:port again, for another identity: the old connection is closed (one
    # TLS identity per connection), its place is the newcomer's; the old agent's is gone.
    lim = limits(max_connections_per_tenant=1)
    assert call(lim, "10.0.0.1:1", "agent-1", now=0.0) is None
    assert call(lim, "10.0.0.1:1", "agent-2", now=1.0) is None
    assert lim.connections(ACME, now=1.0) == 1
    assert call(lim, "10.0.0.3:1", "agent-1", now=2.0) is not None


def test_an_address_reused_while_the_old_call_runs_leaves_the_newcomer_counted_right():
    # Behind one NAT, a closed connection's host:port is reused by another agent of the
    # tenant while the old connection's call is still ending: the old call's end must not
    # be counted against the newcomer's connection (it would never expire, a slot lost).
    lim = limits(max_connections_per_tenant=2)
    assert lim.enter_call(ACME, "10.0.0.1:1", "agent-1", "p", now=0.0) is None  # in flight
    assert lim.enter_call(ACME, "10.0.0.1:1", "agent-2", "p", now=1.0) is None  # the address reused
    lim.leave_call(ACME, "10.0.0.1:1", "agent-1", "p", now=2.0)  # the old call ends
    lim.leave_call(ACME, "10.0.0.1:1", "agent-2", "p", now=3.0)
    assert lim.connections(ACME, now=3.0) == 1
    # Idle for connection_idle: gone, and the tenant has both places again.
    assert call(lim, "10.0.0.2:1", "agent-3", now=64.0) is None
    assert call(lim, "10.0.0.3:1", "agent-4", now=65.0) is None


def test_a_certificate_making_a_connection_per_call_keeps_few_records():
    from poller.gateway.bounds import LEFT_REMEMBERED

    lim = limits(max_connections_per_tenant=10, connection_idle=300.0)
    for i in range(5000):
        assert call(lim, f"10.0.{i // 250}.{i % 250}:1", "agent-1", now=i * 0.01) is None
    assert lim.connections(ACME, now=50.0) == 1
    assert lim.tracked(ACME) <= LEFT_REMEMBERED + 1


async def test_a_read_waits_its_turn_and_a_cancelled_wait_takes_no_place():
    reads = AgentReads(places=1)
    async with reads.place("agent-001"):
        first = asyncio.ensure_future(reads.place("agent-001").__aenter__())
        second = asyncio.ensure_future(reads.place("agent-001").__aenter__())
        await asyncio.wait([first, second], timeout=0)  # both parked behind the held place
        assert reads.waiting("agent-001") == 2 and not first.done()
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert reads.waiting("agent-001") == 1
    await second  # the freed place went to the one still waiting
    assert reads.reading("agent-001") == 1 and reads.waiting("agent-001") == 0
    await reads.place("agent-001").__aexit__(None, None, None)
    assert reads.reading("agent-001") == 0 and "agent-001" not in reads._agents  # no record left behind


async def test_a_place_handed_to_a_wait_being_cancelled_is_handed_on():
    reads = AgentReads(places=1)
    holding = reads.place("agent-001")
    await holding.__aenter__()
    handed = asyncio.ensure_future(reads.place("agent-001").__aenter__())
    after = asyncio.ensure_future(reads.place("agent-001").__aenter__())
    await asyncio.wait([handed, after], timeout=0)
    await holding.__aexit__(None, None, None)  # hands its place to `handed` ...
    handed.cancel()  # ... which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await handed
    await after  # the place went on to the next in turn, not lost
    assert reads.reading("agent-001") == 1


async def test_a_wait_cancelled_in_the_turn_its_place_is_given_back_ends_cancelled():
    # An outside review: a reload (or a revocation) cut a holder and a waiter in one turn;
    # the holder's give-back dropped the waiter's cancelled turn, and the waiter's own
    # cleanup then raised ValueError instead of its cancellation (the call ended UNKNOWN).
    reads = AgentReads(places=1)
    holding = reads.place("agent-001")
    await holding.__aenter__()
    waiter = asyncio.ensure_future(reads.place("agent-001").__aenter__())
    await asyncio.wait([waiter], timeout=0)
    waiter.cancel()
    await holding.__aexit__(None, None, None)  # the same turn: before the waiter runs
    newer = reads.place("agent-001")
    await newer.__aenter__()  # a read that comes meanwhile makes the record again
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert reads.reading("agent-001") == 1 and reads.waiting("agent-001") == 0  # the newer one's, untouched
    await newer.__aexit__(None, None, None)
    assert reads.reading("agent-001") == 0
