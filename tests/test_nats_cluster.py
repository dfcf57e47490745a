"""The NATS sink on a real 3-server JetStream cluster (poller.testing.NatsCluster, TLS and NKeys).

- A stream the sink creates is R3 (replicas unset: the cluster has 3 servers).
- The downgrade regression: a stream made R3 beforehand, with other limits,
  stays R3 when the sink updates its limits, and the log says what changed.
- kill -9 of the leader of a tenant's stream while results flow: nothing is
  lost or duplicated, the stream is still R3, and delivery resumes with two
  servers of three (the outbox drains before the dead one comes back).
- kill -9 of the leader of the cluster bucket while two ClusterNodes write
  leases and a compare-and-set writer counts: no agent granted twice in a
  slot, every acknowledged write still in the bucket, writes and clean rounds
  of polling again after the election, and the bucket still R3 (the dead
  server catches up when it comes back).

Every wait is on a condition with a generous deadline (a loaded 2-core machine).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar
from pathlib import Path

import nats.errors
import nats.js.errors
import pytest
from nats.js.api import StreamConfig
from nats.js.kv import KeyValue

from poller.cluster.node import ClusterNode
from poller.cluster.records import LeaseRecord, MemberRecord, lease_key, member_key
from poller.cluster.slots import slot_start
from poller.config import AgentConfig, ClusterConfig, PollerConfig
from poller.nats.accounts import client_target
from poller.nats.connect import connect
from poller.nats.sink import JetStreamSettings, JetStreamSink
from poller.nats.streams import StreamLimits
from poller.testing.forge import ForgePki
from poller.testing.nats_server import NatsCluster
from poller.testing.results import sample_result

ACME, XYZ = "acme-corp", "xyz-inc"
DEADLINE = 120.0


@pytest.fixture
def cluster(pki: ForgePki, tmp_path: Path) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path / "nats", tenants=[ACME, XYZ], certs=pki.directory) as running:
        yield running


def sink_for(cluster: NatsCluster, tmp_path: Path, **settings: object) -> JetStreamSink:
    poller = client_target(cluster.directory, None, cluster.urls)
    return JetStreamSink(
        JetStreamSettings(
            url=cluster.urls,
            creds=poller.creds,
            tls=poller.tls,
            outbox=tmp_path / "outbox.db",
            heartbeat_interval=None,
            publish_timeout=3.0,
            retry_max=2.0,
            **settings,  # type: ignore[arg-type]
        )
    )


async def admin(cluster: NatsCluster, tenant: str):  # type: ignore[no-untyped-def]
    """The poller's connection and its JetStream API for `tenant`'s stream."""
    nc = await connect(client_target(cluster.directory, None, cluster.urls), name="test admin")
    return nc, nc.jetstream(prefix=f"$JS.{tenant}.API", timeout=10)


async def stream_state(cluster: NatsCluster, tenant: str):  # type: ignore[no-untyped-def]
    nc, js = await admin(cluster, tenant)
    try:
        return await js.stream_info(f"tenant-{tenant}")
    finally:
        await nc.close()


async def read_ids(cluster: NatsCluster, tenant: str, expected: int) -> list[str]:
    """Every Msg-Id in the tenant's stream, read with the tenant's own credentials."""
    from nats.js.api import DeliverPolicy

    nc = await connect(client_target(cluster.directory, tenant, cluster.urls), name="test reader")
    try:
        js = nc.jetstream(timeout=10)
        deadline = time.monotonic() + DEADLINE
        while True:
            # Just after a server came back (the kill -9 tests), the one this reader reached
            # may still be catching up and leave the consumer's creation unanswered (seen on a
            # loaded machine): ask again within DEADLINE, as for add_stream_when_placeable.
            try:
                sub = await js.subscribe(
                    f"{tenant}.agents.>", stream=f"tenant-{tenant}", ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
                )
                break
            except nats.errors.TimeoutError:
                if time.monotonic() > deadline:
                    raise
        ids = []
        for _ in range(expected):
            msg = await sub.next_msg(timeout=30)
            ids.append(msg.headers["Nats-Msg-Id"])
        with pytest.raises(nats.errors.TimeoutError):  # nothing beyond the expected count
            await sub.next_msg(timeout=1)
        return ids
    finally:
        await nc.close()


async def deliver_one(sink: JetStreamSink) -> None:
    """One acme-corp result, acknowledged (its stream created or checked on the way)."""
    try:
        await sink.publish(sample_result(ACME))
        assert await sink.wait_drained(DEADLINE)
    finally:
        await sink.close()


async def add_stream_when_placeable(js, config: StreamConfig) -> None:  # type: ignore[no-untyped-def]
    """add_stream, asked again while the cluster cannot place three replicas yet.

    The cluster fixture waits for a metadata leader, and a leader just elected may
    not have heard from every peer: JetStream answers "no suitable peers for
    placement" (err_code 10005) until it has. The server offers nothing to wait
    on without a monitoring port, so this asks again, briefly apart, within DEADLINE.
    """
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            await js.add_stream(config)
            return
        except nats.js.errors.BadRequestError as err:
            if err.err_code != 10005 or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)


async def test_the_sink_creates_r3_streams_on_a_three_server_cluster(cluster: NatsCluster, tmp_path: Path) -> None:
    await deliver_one(sink_for(cluster, tmp_path))
    info = await stream_state(cluster, ACME)
    assert info.config.num_replicas == 3


async def test_a_precreated_r3_stream_with_other_limits_stays_r3(cluster: NatsCluster, tmp_path: Path, log_events) -> None:
    nc, js = await admin(cluster, ACME)
    try:  # as an operator would, beforehand: R3, other limits
        await add_stream_when_placeable(
            js, StreamConfig(name=f"tenant-{ACME}", subjects=[f"{ACME}.>"], num_replicas=3, max_age=3600, duplicate_window=60)
        )
    finally:
        await nc.close()
    limits = StreamLimits(max_age=7 * 86400, duplicate_window=7200)
    await deliver_one(sink_for(cluster, tmp_path, limits=limits))
    info = await stream_state(cluster, ACME)
    assert info.config.num_replicas == 3  # was downgraded to 1 by the old ensure_stream
    assert (info.config.max_age, info.config.duplicate_window) == (7 * 86400, 7200)
    (updated,) = [e for e in log_events() if e["event"] == "stream_updated"]
    assert set(updated["changed"]) == {"max_age", "duplicate_window"} and updated["replicas"] == 3


async def test_kill_9_of_a_stream_leader_loses_nothing_and_duplicates_nothing(cluster: NatsCluster, tmp_path: Path) -> None:
    sink = sink_for(cluster, tmp_path)
    sent = 0
    try:
        for i in range(20):
            await sink.publish(sample_result(ACME, agent=f"edge-{i}", polled_at=1_700_000_000.0 + i))
            sent += 1
        assert await sink.wait_drained(DEADLINE)
        info = await stream_state(cluster, ACME)
        assert info.config.num_replicas == 3 and info.cluster is not None
        leader = cluster.server(info.cluster.leader)
        leader.stop(kill=True)
        # Results keep coming while the stream elects a new leader; all go to the outbox first.
        for i in range(20, 60):
            await sink.publish(sample_result(ACME, agent=f"edge-{i}", polled_at=1_700_000_000.0 + i))
            sent += 1
        assert await sink.wait_drained(DEADLINE), "delivery did not resume with two servers of three"
        after = await stream_state(cluster, ACME)
        assert after.config.num_replicas == 3 and after.cluster is not None and after.cluster.leader != info.cluster.leader
        leader.start()
    finally:
        await sink.close()
    ids = await read_ids(cluster, ACME, sent)
    assert len(ids) == len(set(ids)) == sent  # nothing lost, nothing stored twice


# ---------------------------------------------------------------------------- the cluster bucket
# kill -9 of the bucket's leader while two ClusterNodes write leases and a writer counts with
# compare-and-set. Slots are read from a test clock, so each round of may_poll lands in the next
# slot of every agent; membership, call timeouts and the election run on real time.

BUCKET = "cluster-kv"
INTERVAL = 10.0  # a slot outlasts a JetStream leader election (about 5 s) plus a call timeout
KV_AGENTS = tuple(AgentConfig(f"edge-{i:02d}", f"127.0.0.1:{6000 + i}", (ACME, XYZ)[i % 2]) for i in range(12))
COUNTER = "test.counter"
_instant: ContextVar[float] = ContextVar("instant")


class SlotClock:
    """The wall clock ClusterNode places slots with. Each agent's round runs in its own task with its
    own instant (a context variable, which the renewal tasks may_poll starts inherit), so every
    agent is asked at once, as the scheduler does, each inside its own slot."""

    def __init__(self) -> None:
        self.base = time.time()

    def __call__(self) -> float:
        return _instant.get(self.base)

    def at(self, agent: str, slot: int) -> None:
        _instant.set(slot_start(agent, slot, INTERVAL) + 0.01)


class LeaseRounds:
    """The lease writer: round after round, every agent's next slot asked of every node."""

    def __init__(self, nodes: list[ClusterNode], clock: SlotClock) -> None:
        self.nodes, self.clock = nodes, clock
        self.slot = int(clock.base // INTERVAL) + 2
        self.grants: dict[tuple[str, int], list[str]] = {}  # (agent, slot) -> the nodes that may poll it
        self.rounds: list[tuple[int, float, bool]] = []  # (slot, ended at (monotonic), clean)
        self.changed = asyncio.Condition()
        self.stopping = False

    async def _ask(self, agent: AgentConfig, slot: int) -> list[str]:
        self.clock.at(agent.name, slot)
        return [node.poller_id for node in self.nodes if await node.may_poll(agent)]

    def clean(self, slot: int) -> bool:
        """Every agent polled once in `slot`, by the owner both nodes agree on."""
        for agent in KV_AGENTS:
            owners = {node.owner(agent.name) for node in self.nodes}
            if len(owners) != 1 or self.grants[(agent.name, slot)] != list(owners):
                return False
        return True

    async def one(self) -> bool:
        slot, self.slot = self.slot, self.slot + 1
        granted = await asyncio.gather(*(self._ask(agent, slot) for agent in KV_AGENTS))
        for agent, pollers in zip(KV_AGENTS, granted, strict=True):
            self.grants[(agent.name, slot)] = pollers
        clean = self.clean(slot)
        async with self.changed:
            self.rounds.append((slot, time.monotonic(), clean))
            self.changed.notify_all()
        return clean

    async def run(self) -> None:
        while not self.stopping:
            await self.one()

    async def clean_round_after(self, since: float, timeout: float = DEADLINE) -> None:
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: any(at > since and clean for _, at, clean in self.rounds))

    def doubles(self) -> list[tuple[str, int, list[str]]]:
        return [(agent, slot, who) for (agent, slot), who in self.grants.items() if len(who) > 1]


class CasCounter:
    """A writer in the bucket that counts with compare-and-set: every increment it was told
    landed is kept in `acked`; one whose answer was lost is recognised by reading the key back."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv
        self.acked: list[int] = []
        self.unanswered = 0
        self.changed = asyncio.Condition()
        self.stopping = False
        self.ended = False  # run() returned or raised: wait_acked must not wait out its deadline for it

    async def run(self) -> None:
        try:
            await self._count()
        finally:
            async with self.changed:
                self.ended = True
                self.changed.notify_all()

    async def _count(self) -> None:
        revision = await self.kv.create(COUNTER, b"0")
        while not self.stopping:
            attempt = len(self.acked) + 1
            landed = await self._write(attempt, revision)
            if landed is None:
                await asyncio.sleep(0.1)  # retry pacing: no leader answers yet, or a replica lags
                continue
            revision = landed
            async with self.changed:
                self.acked.append(attempt)
                self.changed.notify_all()

    async def _write(self, attempt: int, revision: int) -> int | None:
        """The counter's revision once it holds `attempt`, or None: try again later."""
        try:
            async with asyncio.timeout(2):
                return await self.kv.update(COUNTER, str(attempt).encode(), last=revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            pass  # our own earlier try landed after all, or someone else wrote it: read it back
        except (nats.errors.Error, TimeoutError, OSError):
            self.unanswered += 1
            return None
        try:
            async with asyncio.timeout(2):
                entry = await self.kv.get(COUNTER)
        except (nats.errors.Error, TimeoutError, OSError):
            self.unanswered += 1
            return None
        if entry.value is not None and entry.value.isdigit() and int(entry.value) < attempt:
            # A direct get may be answered by a replica that has not caught up (a server
            # just restarted): an older value, not an answer. Ask again.
            return None
        assert entry.value == str(attempt).encode(), f"the counter holds {entry.value!r}, expected {attempt}"
        return entry.revision or 0

    async def wait_acked(self, count: int, timeout: float = DEADLINE) -> None:
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: len(self.acked) >= count or self.ended)
        assert len(self.acked) >= count, f"the counter stopped after {len(self.acked)} acknowledged writes"


@pytest.fixture
def bucket_cluster(pki: ForgePki, tmp_path: Path) -> Iterator[NatsCluster]:
    """A 3-server cluster whose poller user may use the cluster bucket."""
    with NatsCluster(tmp_path / "nats-kv", tenants=[ACME, XYZ], certs=pki.directory, cluster_bucket=BUCKET) as running:
        yield running


@pytest.fixture
async def lease_nodes(bucket_cluster: NatsCluster) -> AsyncIterator[tuple[list[ClusterNode], SlotClock]]:
    """Two replicas (poller-a, poller-b) sharing KV_AGENTS; bucket replicas unset (the cluster decides)."""
    poller = client_target(bucket_cluster.directory, None, bucket_cluster.urls)
    clock = SlotClock()
    nodes = []
    for name in ("poller-a", "poller-b"):
        settings = PollerConfig(
            poller_id=name,
            agents=KV_AGENTS,
            poll_interval=INTERVAL,
            cluster=ClusterConfig(nats=",".join(bucket_cluster.urls), creds=poller.creds, tls=poller.tls, bucket=BUCKET),
        )
        node = ClusterNode(settings, clock=clock)
        node.start()
        nodes.append(node)
    try:
        yield nodes, clock
    finally:
        for node in nodes:
            await node.stop(timeout=5)


async def bucket_info(cluster: NatsCluster):  # type: ignore[no-untyped-def]
    nc = await connect(client_target(cluster.directory, None, cluster.urls), name="test bucket admin")
    try:
        return await nc.jetstream(timeout=10).stream_info(f"KV_{BUCKET}")
    finally:
        await nc.close()


async def test_kill_9_of_the_bucket_leader_loses_no_lease_and_grants_none_twice(
    bucket_cluster: NatsCluster, lease_nodes: tuple[list[ClusterNode], SlotClock]
) -> None:
    nodes, clock = lease_nodes
    async with asyncio.timeout(DEADLINE):
        for node in nodes:
            await node.wait_for(lambda n: n.members == ["poller-a", "poller-b"])
    rounds = LeaseRounds(nodes, clock)
    for _ in range(5):  # the first slot is a handover from nobody: clean within a few
        if await rounds.one():
            break
    assert rounds.rounds[-1][2], f"no clean round before the kill: {rounds.grants}"
    info = await bucket_info(bucket_cluster)
    assert info.config.num_replicas == 3 and info.cluster is not None and info.cluster.leader  # R3 unasked (3 servers)
    old_leader = info.cluster.leader

    nc = await connect(client_target(bucket_cluster.directory, None, bucket_cluster.urls), name="test counter")
    counter = CasCounter(await nc.jetstream(timeout=5).key_value(BUCKET))
    writers = [asyncio.ensure_future(counter.run()), asyncio.ensure_future(rounds.run())]
    try:
        await counter.wait_acked(20)
        await rounds.clean_round_after(time.monotonic())
        acked_before = len(counter.acked)
        bucket_cluster.server(old_leader).stop(kill=True)
        killed = time.monotonic()

        # Usable again: writes are acknowledged after the election, and every agent is
        # polled once, by its owner, in a round that began after them.
        await counter.wait_acked(acked_before + 20)
        elected = time.monotonic()
        await rounds.clean_round_after(elected)
        info = await bucket_info(bucket_cluster)
        assert info.cluster is not None and info.cluster.leader not in (None, old_leader)
        assert info.config.num_replicas == 3
        peers = [info.cluster.leader, *(p.name for p in info.cluster.replicas or [])]
        assert sorted(peers) == ["nats-1", "nats-2", "nats-3"]  # still three peers, the dead one among them

        # The lease writer has shown the failover. It writes as fast as NATS answers, which on two
        # shared cores can outrun a replica catching up; the counter's paced writes remain.
        rounds.stopping = True
        await asyncio.wait([writers[1]], timeout=DEADLINE)

        # The dead server comes back and catches up: three current replicas again.
        bucket_cluster.server(old_leader).start()

        async def all_current() -> bool:
            state = await bucket_info(bucket_cluster)
            replicas = (state.cluster.replicas or []) if state.cluster else []
            return len(replicas) == 2 and all(p.current and not p.offline for p in replicas)

        async with asyncio.timeout(DEADLINE):
            while not await all_current():
                await counter.wait_acked(len(counter.acked) + 1)  # paced by writes the replicas must copy
    finally:
        counter.stopping = rounds.stopping = True
        done, _ = await asyncio.wait(writers, timeout=DEADLINE)
        await nc.close()
    for task in done:
        task.result()  # a writer's own assertion (e.g. the counter changed by someone else) fails the test
    assert len(done) == 2

    # Nothing duplicated: no agent was granted to two nodes in one slot, before, during or after.
    assert not rounds.doubles(), rounds.doubles()[:10]
    assert any(at > killed for _, at, _ in rounds.rounds)  # the lease writer ran through the failover
    assert counter.unanswered > 0  # and the writers did meet a bucket without a leader
    # Nothing lost: every acknowledged write is in the bucket, read from the new set of servers.
    nc = await connect(client_target(bucket_cluster.directory, None, bucket_cluster.urls), name="test reader")
    try:
        kv = await nc.jetstream(timeout=10).key_value(BUCKET)
        assert (await kv.get(COUNTER)).value == str(len(counter.acked)).encode()
        last = max(slot for slot, _, clean in rounds.rounds if clean)
        by_id = {node.poller_id: node for node in nodes}
        for agent in KV_AGENTS:
            (holder,) = rounds.grants[(agent.name, last)]
            record = LeaseRecord.parse((await kv.get(lease_key(agent.tenant, agent.name))).value or b"")
            assert (record.owner, record.instance) == (holder, by_id[holder].instance)
            # may_poll said yes only on an acknowledged lease covering the slot: it is still stored
            assert record.until >= slot_start(agent.name, last + 1, INTERVAL) - 1e-6
        for node in nodes:
            member = MemberRecord.parse((await kv.get(member_key(node.poller_id))).value or b"")
            assert member.instance == node.instance
    finally:
        await nc.close()
