"""ClusterNode against a real nats-server: leases, handover, outage, refusals,
and `cluster status`. Nothing of NATS is mocked.

The wall clock that places slots is a test clock here, so each step lands in
a chosen slot of each agent; membership still runs on real time (heartbeats),
and every wait is on the node's own change signal, bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import nats
import nats.errors
import pytest
from spawn import spawn_cli

from poller.cluster.node import ClusterNode
from poller.cluster.records import lease_key
from poller.cluster.slots import slot_start
from poller.cluster.status import read_status
from poller.config import AgentConfig, ClusterConfig, PollerConfig
from poller.testing import NatsServer

INTERVAL = 1.0
BUCKET = "node-test"
AGENTS = tuple(AgentConfig(f"edge-{i:02d}", f"127.0.0.1:{5000 + i}", ("acme-corp", "xyz-inc")[i % 2]) for i in range(20))


class Clock:
    """The wall clock slots are computed from; moved by the test."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def at(self, agent: str, slot: int) -> None:
        self.now = slot_start(agent, slot, INTERVAL) + 0.01


@pytest.fixture
def nats_server(tmp_path: Path):
    server = NatsServer(store_dir=tmp_path / "js").start()
    yield server
    server.stop()


@pytest.fixture
async def nodes(nats_server: NatsServer) -> AsyncIterator[Callable[..., ClusterNode]]:
    started: list[ClusterNode] = []

    def make(poller_id: str, clock: Clock, *, tenants: tuple[str, ...] | None = None) -> ClusterNode:
        settings = PollerConfig(
            poller_id=poller_id,
            agents=AGENTS,
            poll_interval=INTERVAL,
            cluster=ClusterConfig(nats=nats_server.url, bucket=BUCKET, tenants=tenants),
        )
        node = ClusterNode(settings, clock=clock)
        node.start()
        started.append(node)
        return node

    yield make
    for node in started:
        await node.stop(timeout=2)


async def until(node: ClusterNode, predicate: Callable[[ClusterNode], bool], timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        await node.wait_for(predicate)


async def test_a_joining_replica_takes_its_share_in_the_next_slot_and_nothing_else_moves(nodes) -> None:
    clock = Clock()
    a = nodes("poller-a", clock)
    await until(a, lambda n: n.members == ["poller-a"])
    k = int(clock.now // INTERVAL) + 5
    for agent in AGENTS:  # alone, a holds every agent
        clock.at(agent.name, k)
        assert await a.may_poll(agent), agent.name
        assert not await a.may_poll(agent)  # never twice in one slot

    b = nodes("poller-b", clock)
    await until(a, lambda n: n.members == ["poller-a", "poller-b"])
    await until(b, lambda n: n.members == ["poller-a", "poller-b"])
    moving = [agent for agent in AGENTS if b.owner(agent.name) == "poller-b"]
    staying = [agent for agent in AGENTS if agent not in moving]
    assert 5 <= len(moving) <= 15 and all(a.owner(x.name) == "poller-a" for x in staying)
    for agent in moving:
        clock.at(agent.name, k)  # a polled slot k: b must not
        assert not await b.may_poll(agent), agent.name
        clock.at(agent.name, k + 1)  # the next slot is b's, and only b's
        assert not await a.may_poll(agent), agent.name
        assert await b.may_poll(agent), agent.name
    for agent in staying:
        clock.at(agent.name, k + 1)
        assert await a.may_poll(agent), agent.name
        assert not await b.may_poll(agent), agent.name
    assert sorted(a.held) == sorted(x.name for x in staying)
    assert sorted(b.held) == sorted(x.name for x in moving)


async def test_during_a_nats_outage_held_agents_are_polled_until_their_lease_ends_then_not(nodes, nats_server) -> None:
    clock = Clock()
    a = nodes("poller-a", clock)
    await until(a, lambda n: n.members == ["poller-a"])
    agent = AGENTS[0]
    k = int(clock.now // INTERVAL) + 5
    clock.at(agent.name, k)
    assert await a.may_poll(agent)  # acquired: this slot and the next

    nats_server.stop()
    clock.at(agent.name, k + 1)
    assert await a.may_poll(agent)  # still covered by the lease NATS confirmed
    clock.at(agent.name, k + 2)
    assert not await a.may_poll(agent)  # the lease would have ended: stop, never guess
    assert a.held == []

    nats_server.start()  # same port, same store: the client reconnects by itself
    async with asyncio.timeout(30):
        slot = k + 3
        while True:
            clock.at(agent.name, slot)
            if await a.may_poll(agent):
                break
            slot += 1
    assert a.held == [agent.name]


async def test_a_second_live_process_with_the_same_poller_id_is_refused(nodes) -> None:
    clock = Clock()
    first = nodes("poller-a", clock)
    await until(first, lambda n: n.members == ["poller-a"])
    second = nodes("poller-a", clock)
    await until(second, lambda n: n.state == "duplicate_poller_id")
    agent = AGENTS[0]
    clock.at(agent.name, int(clock.now // INTERVAL) + 5)
    assert not await second.may_poll(agent)
    assert await first.may_poll(agent)


async def test_a_bucket_whose_ttl_could_drop_live_leases_is_refused(nodes, nats_server) -> None:
    nc = await nats.connect(nats_server.url)
    await nc.jetstream().create_key_value(bucket=BUCKET, history=1, ttl=2)
    await nc.close()
    node = nodes("poller-a", Clock())
    await until(node, lambda n: n.state == "refused")
    assert not node.ready.is_set()


async def test_an_unreadable_lease_is_never_taken_over(nodes, nats_server) -> None:
    clock = Clock()
    a = nodes("poller-a", clock)
    await until(a, lambda n: n.members == ["poller-a"])
    nc = await nats.connect(nats_server.url)
    kv = await nc.jetstream().key_value(BUCKET)
    agent = AGENTS[3]
    await kv.put(lease_key(agent.tenant, agent.name), b'{"owner": "someone", "until": "soon"}')
    await nc.close()
    clock.at(agent.name, int(clock.now // INTERVAL) + 5)
    assert not await a.may_poll(agent)  # its end is unknown: fail closed
    assert await a.may_poll(AGENTS[4])


async def test_status_shows_members_counts_per_tenant_and_agents_no_member_serves(nodes, nats_server) -> None:
    clock = Clock()
    a = nodes("poller-acme", clock, tenants=("acme-corp",))
    await until(a, lambda n: n.members == ["poller-acme"])
    k = int(clock.now // INTERVAL) + 5
    for agent in AGENTS:
        clock.at(agent.name, k)
        assert await a.may_poll(agent) == (agent.tenant == "acme-corp")
    # The heartbeat begun after the assignment carries the unowned list; heartbeats are
    # sequential, so once the one after it has begun, that one's write has completed.
    begun = a.beats
    await until(a, lambda n: n.beats > begun + 1)

    nc = await nats.connect(nats_server.url)
    status = await read_status(nc.jetstream(), BUCKET)
    await nc.close()
    [member] = status.members
    assert (member.record.poller_id, member.record.tenants, member.agents) == ("poller-acme", ("acme-corp",), {"acme-corp": 10})
    assert sorted(u.agent for u in status.unowned) == sorted(x.name for x in AGENTS if x.tenant == "xyz-inc")

    # The command line: the same, as one JSON object; exit 4 when NATS does not answer.
    proc = await spawn_cli(
        "cluster",
        "status",
        "--nats",
        nats_server.url,
        "--bucket",
        BUCKET,
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    doc = json.loads(out)
    assert [m["poller_id"] for m in doc["members"]] == ["poller-acme"]
    assert doc["tenants"]["xyz-inc"]["unowned"] == 10
    proc = await spawn_cli(
        "cluster",
        "status",
        "--bucket",
        "nope",
        "--nats",
        nats_server.url,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2 and b"no bucket named nope" in err


async def test_one_nats_config_credentials_file_serves_the_sink_and_the_cluster(tmp_path: Path) -> None:
    """nats-config --cluster-bucket lets the poller's user (the NATS sink's
    credentials) use the bucket; a tenant's user still cannot write a lease."""
    from poller.cli.main import main
    from poller.testing import ForgePki

    pki = ForgePki.create(tmp_path / "certs", tenants=("acme-corp", "xyz-inc"))
    out = tmp_path / "nats"
    assert (
        main(
            [
                "nats-config",
                "--certs",
                str(pki.directory),
                "--out",
                str(out),
                "--listen",
                "127.0.0.1:0",
                "--cluster-bucket",
                BUCKET,
                "--plaintext-dev",
            ]
        )
        == 0
    )
    server = NatsServer(config=out / "nats-server.conf").start()
    clock = Clock()
    settings = PollerConfig(
        poller_id="poller-a",
        agents=AGENTS,
        poll_interval=INTERVAL,
        cluster=ClusterConfig(nats=server.url, creds=out / "poller.nk", bucket=BUCKET),
    )
    node = ClusterNode(settings, clock=clock)
    node.start()
    try:
        await until(node, lambda n: n.members == ["poller-a"])
        agent = AGENTS[0]
        clock.at(agent.name, int(clock.now // INTERVAL) + 5)
        assert await node.may_poll(agent)

        # The attacker: acme-corp's own credentials, trying to take the lease.
        from poller.nats.creds import load_credentials

        tenant = load_credentials(out / "tenant-acme-corp.nk")
        nc = await nats.connect(server.url, **tenant.connect_options())
        with pytest.raises((nats.errors.Error, TimeoutError)):  # no way into the platform account's JetStream
            kv = await nc.jetstream(timeout=1).key_value(BUCKET)
            await kv.put(lease_key(agent.tenant, agent.name), b'{"owner": "evil", "instance": "x", "until": 1e12}')
        await nc.close()
        clock.at(agent.name, int(clock.now // INTERVAL) + 1)
        assert await node.may_poll(agent)  # still ours
    finally:
        await node.stop(timeout=2)
        server.stop()


async def test_a_replica_that_stops_cleanly_hands_its_agents_over_in_the_next_slot(nodes) -> None:
    clock = Clock()
    a = nodes("poller-a", clock)
    b = nodes("poller-b", clock)
    await until(a, lambda n: n.members == ["poller-a", "poller-b"])
    await until(b, lambda n: n.members == ["poller-a", "poller-b"])
    k = int(clock.now // INTERVAL) + 5
    mine = [agent for agent in AGENTS if a.owner(agent.name) == "poller-a"]
    for agent in mine:
        clock.at(agent.name, k)
        assert await a.may_poll(agent)
    await a.stop()  # SIGTERM: leases released, member record deleted
    await until(b, lambda n: n.members == ["poller-b"])  # its record is gone: no member timeout to wait for
    for agent in mine:
        clock.at(agent.name, k)
        assert not await b.may_poll(agent)  # a polled this slot
        clock.at(agent.name, k + 1)
        assert await b.may_poll(agent), agent.name


async def test_a_lease_a_year_ahead_held_by_no_member_is_bounded_and_said(nodes, nats_server, log_events) -> None:
    """Issue 18 item 15: a record another process wrote is not taken at its word."""
    from poller.cluster.node import CLOCK_SKEW
    from poller.cluster.records import LeaseRecord

    clock = Clock()
    a = nodes("poller-a", clock)
    await until(a, lambda n: n.members == ["poller-a"])
    agent = AGENTS[5]
    nc = await nats.connect(nats_server.url)
    kv = await nc.jetstream().key_value(BUCKET)
    await kv.put(lease_key(agent.tenant, agent.name), LeaseRecord("ghost", "x", clock.now + 365 * 86400).dump())
    await nc.close()
    k = int(clock.now // INTERVAL) + 5
    clock.at(agent.name, k)
    assert not await a.may_poll(agent)  # held, for now
    events = {e["event"]: e for e in log_events() if e.get("agent") == agent.name}
    assert events["lease_held_by_non_member"]["level"] == "warning" and events["lease_held_by_non_member"]["holder"] == "ghost"
    assert events["lease_until_ignored"]["level"] == "warning"
    # No replica writes a lease ending more than two intervals (plus skew) after it was stored.
    later = k + int((2 * INTERVAL + CLOCK_SKEW) / INTERVAL) + 2
    clock.at(agent.name, later)
    assert await a.may_poll(agent)  # without the bound: never again for a year


async def test_a_member_claiming_a_huge_capacity_is_capped(nats_server, log_events) -> None:
    """Issue 18 item 15: a fake member with capacity 1e8 took every agent."""
    from poller.cluster.assign import MAX_CAPACITY
    from poller.cluster.node import fleet_digest
    from poller.cluster.records import MemberRecord, member_key

    fleet = tuple(AgentConfig(f"agent-{i:04d}", f"127.0.0.1:{6000 + i % 1000}", "acme-corp") for i in range(2000))
    settings = PollerConfig(
        poller_id="poller-a", agents=fleet, poll_interval=INTERVAL, cluster=ClusterConfig(nats=nats_server.url, bucket=BUCKET)
    )
    node = ClusterNode(settings, clock=Clock())
    node.start()
    nc = await nats.connect(nats_server.url)
    stop = asyncio.Event()

    async def fake_member() -> None:  # an attacker with the poller's credentials, heartbeating
        kv = await nc.jetstream().key_value(BUCKET)
        beat = 0
        while not stop.is_set():
            beat += 1
            record = MemberRecord("fake", "f", 1e8, "x", INTERVAL, fleet_digest(fleet), beat=beat)
            await kv.put(member_key("fake"), record.dump())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(INTERVAL / 10):
                    await stop.wait()

    await until(node, lambda n: n.state == "member")
    faker = asyncio.ensure_future(fake_member())
    try:
        await until(node, lambda n: n.members == ["fake", "poller-a"], timeout=30)
        mine = sum(1 for a in fleet if node.owner(a.name) == "poller-a")
        assert mine >= len(fleet) / (MAX_CAPACITY + 1) / 3  # about 20 of 2000; uncapped: none
        (capped,) = [e for e in log_events() if e["event"] == "cluster_member_capacity_capped"]
        assert capped["member"] == "fake" and capped["level"] == "warning"
    finally:
        stop.set()
        await faker
        await nc.close()
        await node.stop(timeout=2)


async def test_an_outage_gives_one_unreachable_line_and_one_expiry_summary(nodes, nats_server, log_events) -> None:
    clock = Clock()
    a = nodes("poller-a", clock)
    await until(a, lambda n: n.members == ["poller-a"])
    k = int(clock.now // INTERVAL) + 5
    held = [agent for agent in AGENTS if a.owner(agent.name) == "poller-a"][:6]
    for agent in held:
        clock.at(agent.name, k)
        assert await a.may_poll(agent)
    nats_server.stop()
    for agent in held:
        clock.at(agent.name, k + 2)
        assert not await a.may_poll(agent)  # lapsed
    seen = ("lease_expired", "cluster_unreachable")
    await until(a, lambda n: all(any(e["event"] == name for e in log_events()) for name in seen), timeout=60)
    nats_server.start()
    await until(a, lambda n: any(e["event"] == "cluster_reachable" for e in log_events()), timeout=60)
    events = [e["event"] for e in log_events()]
    assert events.count("cluster_unreachable") == 1
    (summary,) = [e for e in log_events() if e["event"] == "lease_expired"]
    assert summary["count"] == len(held) and summary["level"] == "warning"
