"""Nothing lost while NATS is down: a real daemon, real agents, a real nats-server stopped and restarted.

The poller keeps polling through the outage and is itself restarted during
it; when the server is back (same port, same store) every result is in its
tenant's stream exactly once, with the Msg-Id it was given when polled.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

from poller.config import parse_config
from poller.daemon.daemon import PollerDaemon
from poller.delivery.result import PollResult
from poller.nats.accounts import creds_path
from poller.nats.messages import result_message
from poller.nats.sink import JetStreamSink, sink_from_config

ACME, XYZ = "acme-corp", "xyz-inc"


class Recorder:
    """The daemon's sink: records each result's Msg-Id when handed over and once durable,
    around the JetStream sink."""

    def __init__(self, inner: JetStreamSink, ids: list[tuple[str, str]], changed: asyncio.Condition) -> None:
        self.inner, self.ids, self.changed = inner, ids, changed
        self.attempted: set[str] = set()

    async def publish(self, result: PollResult) -> None:
        msg_id = result_message(result).msg_id
        self.attempted.add(msg_id)
        # The inner publish returns once the result is durable in the outbox. A
        # daemon stopping mid-publish (or the registry's handler timeout) cancels
        # us, not the write: let the write finish and record what became durable.
        writing = asyncio.ensure_future(self.inner.publish(result))
        try:
            await asyncio.shield(writing)
        except asyncio.CancelledError:
            await asyncio.wait({writing})
            if not writing.cancelled() and writing.exception() is None:
                await self._record(result.tenant, msg_id)
            raise
        await self._record(result.tenant, msg_id)

    async def _record(self, tenant: str, msg_id: str) -> None:
        async with self.changed:
            self.ids.append((tenant, msg_id))
            self.changed.notify_all()

    async def flush(self) -> None:
        await self.inner.flush()

    async def close(self) -> None:
        await self.inner.close()


async def wait_until(changed: asyncio.Condition, predicate: Callable[[], bool], timeout: float = 60) -> None:
    async with asyncio.timeout(timeout), changed:
        await changed.wait_for(predicate)


def outbox_rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


async def test_outage_and_poller_restart_lose_nothing_and_store_each_result_once(
    pki, serve, accounts_nats, nats_layout, tmp_path, stream_result_ids
) -> None:
    acme = await serve(pki.agent(ACME, "agent-001"))
    xyz = await serve(pki.agent(XYZ, "agent-007"))
    checks = [{"service_type": "icmp", "service_name": "ping", "details": "127.0.0.1"}]
    outbox = tmp_path / "state" / "outbox.db"
    settings = parse_config(
        {
            "poller_id": "poller-outage",
            "poll_interval": "500ms",
            "call_timeout": "300ms",
            "certs_dir": str(pki.directory),
            "sink": {
                "type": "nats",
                "url": accounts_nats.url,
                "creds": str(creds_path(nats_layout, None)),
                "outbox": str(outbox),
                "publish_timeout": "1s",
            },
            "agents": {
                "acme-1": {"address": acme.address, "tenant": ACME, "checks": checks},
                "xyz-1": {"address": xyz.address, "tenant": XYZ, "checks": checks},
            },
        }
    )
    ids: list[tuple[str, str]] = []
    attempted: set[str] = set()
    changed = asyncio.Condition()

    async def run_daemon(until: Callable[[], bool], during: Callable[[], None] | None = None) -> JetStreamSink:
        inner = sink_from_config(settings)
        recorder = Recorder(inner, ids, changed)
        recorder.attempted = attempted
        daemon = PollerDaemon(settings, sink=recorder)
        task = asyncio.ensure_future(daemon.run(install_signals=False))
        try:
            await wait_until(changed, until)
            if during is not None:
                during()
                mark = len(ids)
                await wait_until(changed, lambda: len(ids) >= mark + 4)
                assert await inner.wait_drained(60), "the outbox did not drain after NATS came back"
        finally:
            daemon.request_stop()
            assert await task == 0
        return inner

    # 1. NATS up: results flow; then NATS stops while the poller keeps polling.
    await run_daemon(lambda: len(ids) >= 4, during=None)
    before_outage = len(ids)
    accounts_nats.stop()
    # 2. The poller (restarted) keeps polling during the outage: results pile up in the outbox.
    await run_daemon(lambda: len(ids) >= before_outage + 6)
    pending = outbox_rows(outbox)
    assert pending >= 6, f"only {pending} rows waited in the outbox during the outage"
    # 3. Restarted again, still during the outage; NATS comes back with the same store.
    await run_daemon(lambda: len(ids) >= before_outage + 10, during=accounts_nats.start)
    assert outbox_rows(outbox) == 0

    for tenant in (ACME, XYZ):
        stored = await stream_result_ids(accounts_nats.url, nats_layout, tenant)
        polled = [msg_id for t, msg_id in ids if t == tenant]
        assert len(stored) == len(set(stored)), "a result was stored twice"
        # Every result counted delivered (durable) is in the stream; the stream holds
        # nothing else than results handed to the sink (one the handler registry gave
        # up waiting for may still have become durable, and then it is delivered too).
        assert set(polled) <= set(stored), "a delivered result is missing from the stream"
        assert set(stored) <= attempted, "the stream holds a result the poller never produced"
        assert len(polled) >= 5
