"""The JetStream sink against a real nats-server: dedup by Msg-Id, heartbeats, health
transitions, and failures that are counted and logged rather than silent or blocking."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import nats
import pytest
from nats.js.api import DeliverPolicy

from poller.delivery.result import PollResult
from poller.identity.reasons import Reason
from poller.nats.accounts import creds_path
from poller.nats.creds import load_credentials
from poller.nats.health import HealthTracker
from poller.nats.messages import result_message
from poller.nats.sink import DeliveryError, JetStreamSettings, JetStreamSink
from poller.testing.identity import unverified_tenant_context
from poller.testing.nats_server import NatsServer

ACME, XYZ = "acme-corp", "xyz-inc"


def result(tenant: str = ACME, agent: str = "edge-1", **fields: object) -> PollResult:
    base: dict[str, object] = dict(
        tenant=tenant,
        agent=agent,
        address="127.0.0.1:50051",
        poller_id="p1",
        partition="dc-1",
        kind="status",
        service_name="ping",
        service_type="icmp",
        available=True,
    )
    base.update(fields)
    return PollResult(**base)  # type: ignore[arg-type]


def sink_for(server: NatsServer, layout: Path, tmp_path: Path, **overrides: object) -> JetStreamSink:
    settings = JetStreamSettings(
        url=server.url, creds=creds_path(layout, None), outbox=tmp_path / "outbox.db", heartbeat_interval=None, poller_id="p1"
    )
    return JetStreamSink(replace(settings, **overrides))  # type: ignore[arg-type]


async def stream_messages(server: NatsServer, layout: Path, tenant: str, subject: str | None = None) -> list[nats.aio.msg.Msg]:
    creds = load_credentials(creds_path(layout, tenant))
    nc = await nats.connect(server.url, allow_reconnect=False, **creds.connect_options())
    try:
        js = nc.jetstream()
        filt = subject or f"{tenant}.>"
        info = await js.stream_info(f"tenant-{tenant}", subjects_filter=filt)
        total = sum((info.state.subjects or {}).values())
        sub = await js.subscribe(filt, stream=f"tenant-{tenant}", ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
        return [await sub.next_msg(timeout=10) for _ in range(total)]
    finally:
        await nc.close()


def sample(sink: JetStreamSink, name: str, **labels: str) -> float:
    return sink.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_a_republished_result_is_stored_once(accounts_nats, nats_layout, tmp_path) -> None:
    sink = sink_for(accounts_nats, nats_layout, tmp_path, outbox=None)
    one = result()
    before = sample(sink, "poller_nats_duplicates_total", tenant=ACME)
    try:
        await sink.publish(one)
        await sink.publish(one)  # a retry after a lost ack: same Msg-Id
    finally:
        await sink.close()
    msgs = await stream_messages(accounts_nats, nats_layout, ACME, "acme-corp.agents.status")
    assert [m.headers["Nats-Msg-Id"] for m in msgs] == [result_message(one).msg_id]
    assert json.loads(msgs[0].data) == one.to_json()
    assert sample(sink, "poller_nats_duplicates_total", tenant=ACME) == before + 1


async def test_results_go_to_their_channels_and_heartbeats_to_each_tenant_served(accounts_nats, nats_layout, tmp_path) -> None:
    sink = sink_for(accounts_nats, nats_layout, tmp_path, heartbeat_interval=3600.0)
    try:
        await sink.publish(result(kind="results", service_type="sweep", service_name="network_sweep", current_sequence="7"))
        await sink.publish(result(XYZ, "edge-9"))
        assert await sink.wait_drained(30)
        await sink._heartbeat()  # the loop's body, once, rather than waiting an interval
    finally:
        await sink.close()
    acme = await stream_messages(accounts_nats, nats_layout, ACME)
    assert sorted(m.subject for m in acme) == ["acme-corp.agents.results.sweep", "acme-corp.pollers.heartbeat"]
    (beat,) = [json.loads(m.data) for m in acme if m.subject.endswith("heartbeat")]
    assert beat["tenant"] == ACME and beat["poller_id"] == "p1" and beat["agents"] == 1
    xyz = await stream_messages(accounts_nats, nats_layout, XYZ)
    assert sorted(m.subject for m in xyz) == ["xyz-inc.agents.status", "xyz-inc.pollers.heartbeat"]


async def test_one_tenant_that_cannot_be_served_does_not_hold_back_the_others(accounts_nats, nats_layout, tmp_path) -> None:
    # "other-co" is not in the server's layout: the poller may not publish there.
    sink = sink_for(accounts_nats, nats_layout, tmp_path, publish_timeout=0.5)
    try:
        await sink.publish(result("other-co"))
        await sink.publish(result(ACME))
        acme = await stream_messages_eventually(accounts_nats, nats_layout, sink)
        assert [m.subject for m in acme] == ["acme-corp.agents.status"]
        assert sink.outbox is not None and sink.outbox.rows == 1  # other-co's result waits, durable
        assert sample(sink, "poller_nats_publish_failures_total", tenant="other-co", reason="stream_unavailable") >= 1
    finally:
        await sink.close()


async def stream_messages_eventually(server: NatsServer, layout: Path, sink: JetStreamSink) -> list[nats.aio.msg.Msg]:
    import asyncio

    async with asyncio.timeout(30), sink._acked:
        await sink._acked.wait_for(lambda: sink.acked >= 1)
    return await stream_messages(server, layout, ACME, "acme-corp.agents.status")


async def test_undeliverable_results_are_counted_never_silent(accounts_nats, nats_layout, tmp_path) -> None:
    sink = sink_for(accounts_nats, nats_layout, tmp_path)
    before = sample(sink, "poller_nats_undeliverable_total", tenant=ACME, reason="invalid_channel")
    big_before = sample(sink, "poller_nats_undeliverable_total", tenant=ACME, reason="too_large")
    try:
        await sink.publish(result(kind="results", service_type="has.dot"))  # no subject can carry it
        await sink.publish(result(payload=b"\xff" * (9 * 1024 * 1024)))  # over the server's max_payload
        await sink.publish(result(agent="edge-2"))
        assert await sink.wait_drained(30)  # the too-large one is dropped, not retried forever
    finally:
        await sink.close()
    assert sample(sink, "poller_nats_undeliverable_total", tenant=ACME, reason="invalid_channel") == before + 1
    assert sample(sink, "poller_nats_undeliverable_total", tenant=ACME, reason="too_large") == big_before + 1
    msgs = await stream_messages(accounts_nats, nats_layout, ACME, "acme-corp.agents.status")
    assert [json.loads(m.data)["agent"] for m in msgs] == ["edge-2"]


async def test_without_an_outbox_an_unacknowledged_publish_raises(tmp_path, unused_tcp_port) -> None:
    sink = JetStreamSink(
        JetStreamSettings(url=f"nats://127.0.0.1:{unused_tcp_port}", outbox=None, heartbeat_interval=None, publish_timeout=0.3)
    )
    try:
        with pytest.raises(DeliveryError):
            await sink.publish(result())
    finally:
        await sink.close()


async def test_a_full_outbox_drops_the_oldest_and_counts_it(tmp_path, unused_tcp_port) -> None:
    # NATS is not there at all: everything stays in the outbox, bounded.
    sink = JetStreamSink(
        JetStreamSettings(
            url=f"nats://127.0.0.1:{unused_tcp_port}", outbox=tmp_path / "o.db", outbox_max_rows=3, heartbeat_interval=None
        )
    )
    before = sample(sink, "poller_outbox_dropped_total", tenant=XYZ)
    try:
        for i in range(5):
            await sink.publish(result(XYZ, f"edge-{i}"))
        assert sink.outbox is not None
        rows = await sink.outbox.peek(10)
    finally:
        await sink.close()
    # (these results carry no identity and no reason, so they make no health events)
    assert [json.loads(r.payload)["agent"] for r in rows] == ["edge-2", "edge-3", "edge-4"]
    assert sample(sink, "poller_outbox_dropped_total", tenant=XYZ) == before + 2


def test_health_transitions_are_emitted_once_per_change() -> None:
    tracker = HealthTracker()
    ctx = unverified_tenant_context(ACME)
    rotated = replace(ctx, fingerprint_sha256="1" * 64)

    def events(*rs: PollResult) -> list[str]:
        return [json.loads(m.payload)["event"] for r in rs for m in tracker.observe(r)]

    assert events(result(context=ctx), result(context=ctx)) == ["accepted"]
    assert events(result(available=False, reason=Reason("unreachable")), result(available=False, reason=Reason("timeout"))) == [
        "unreachable"
    ]
    assert events(result(context=ctx)) == ["recovered"]
    assert events(result(available=False, reason=Reason("revoked"))) == ["refused"]
    assert events(result(available=False, reason=Reason("tenant_mismatch"))) == ["refused"]
    assert events(result(available=False, reason=Reason("invalid_payload"))) == []  # a call problem, not a connection state
    assert events(result(context=ctx), result(context=rotated)) == ["recovered", "rotated"]
    (msg,) = HealthTracker().observe(result(available=False, reason=Reason("revoked")))
    assert msg.subject == "acme-corp.events.poller.health"
    doc = json.loads(msg.payload)
    assert doc["reason"] == "revoked" and doc["proven"] is False and doc["agent"] == "edge-1"


async def test_a_tampered_outbox_row_cannot_cross_tenants(accounts_nats, nats_layout, tmp_path) -> None:
    import sqlite3

    from poller.nats.messages import Message
    from poller.nats.outbox import Outbox

    # The attacker edits the outbox file: an acme-corp row aimed at xyz-inc's subject.
    box = await Outbox.open(tmp_path / "outbox.db")
    await box.put([Message(tenant=ACME, subject="xyz-inc.agents.status", msg_id="forged", payload=b'{"tenant":"xyz-inc"}')])
    honest = result_message(result(XYZ))
    await box.put([honest])
    await box.close()
    with sqlite3.connect(tmp_path / "outbox.db") as db:
        assert db.execute("SELECT COUNT(*) FROM outbox").fetchone() == (2,)

    sink = sink_for(accounts_nats, nats_layout, tmp_path)
    try:
        await sink.start()
        assert await sink.wait_drained(30)
        assert sample(sink, "poller_nats_undeliverable_total", tenant=ACME, reason="invalid_subject") == 1
    finally:
        await sink.close()
    msgs = await stream_messages(accounts_nats, nats_layout, XYZ, "xyz-inc.agents.status")
    assert [m.headers["Nats-Msg-Id"] for m in msgs] == [honest.msg_id]
