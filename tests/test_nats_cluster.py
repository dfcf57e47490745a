"""The NATS sink on a real 3-server JetStream cluster (poller.testing.NatsCluster, TLS and NKeys).

- A stream the sink creates is R3 (replicas unset: the cluster has 3 servers).
- The downgrade regression: a stream made R3 beforehand, with other limits,
  stays R3 when the sink updates its limits, and the log says what changed.
- kill -9 of the leader of a tenant's stream while results flow: nothing is
  lost or duplicated, the stream is still R3, and delivery resumes with two
  servers of three (the outbox drains before the dead one comes back).

Every wait is on a condition with a generous deadline (a loaded 2-core machine).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import nats.errors
import pytest
from nats.js.api import StreamConfig

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
        sub = await js.subscribe(
            f"{tenant}.agents.>", stream=f"tenant-{tenant}", ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )
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


async def test_the_sink_creates_r3_streams_on_a_three_server_cluster(cluster: NatsCluster, tmp_path: Path) -> None:
    await deliver_one(sink_for(cluster, tmp_path))
    info = await stream_state(cluster, ACME)
    assert info.config.num_replicas == 3


async def test_a_precreated_r3_stream_with_other_limits_stays_r3(cluster: NatsCluster, tmp_path: Path, log_events) -> None:
    nc, js = await admin(cluster, ACME)
    try:  # as an operator would, beforehand: R3, other limits
        await js.add_stream(
            StreamConfig(name=f"tenant-{ACME}", subjects=[f"{ACME}.>"], num_replicas=3, max_age=3600, duplicate_window=60)
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
