"""`kill -9` of a real daemon process during a NATS outage loses nothing it had counted.

The daemon (`serviceradar-poller run`, its own process) publishes to a real
nats-server; the server stops; the daemon keeps polling (its log says so) and
is killed with SIGKILL. Every row its outbox file holds then is delivered,
once, when a poller starts again on that outbox and NATS is back.
Synchronisation is on the daemon's JSON log lines, never on time.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3

from spawn import spawn_cli

from poller.nats.accounts import creds_path
from poller.nats.sink import JetStreamSettings, JetStreamSink

ACME = "acme-corp"


async def next_event(proc: asyncio.subprocess.Process, wanted: str, seen: list[str]) -> None:
    async with asyncio.timeout(60):
        while True:
            raw = await proc.stderr.readline()  # type: ignore[union-attr]
            assert raw, f"daemon exited before {wanted}; saw {seen}"
            try:
                event = json.loads(raw).get("event", "")
            except ValueError:
                continue
            seen.append(event)
            if event == wanted:
                return


async def test_kill_9_during_an_outage_keeps_every_counted_result(
    pki, serve, accounts_nats, nats_layout, tmp_path, stream_result_ids
) -> None:
    agent = await serve(pki.agent(ACME, "agent-001"))
    outbox = tmp_path / "outbox.db"
    config = tmp_path / "poller.json"
    sink = {"type": "nats", "url": accounts_nats.url, "creds": str(creds_path(nats_layout, None)), "outbox": str(outbox)}
    checks = [{"service_type": "icmp", "service_name": "ping"}]
    config.write_text(
        json.dumps(
            {
                "poller_id": "poller-kill",
                "poll_interval": "300ms",
                "call_timeout": "200ms",
                "certs_dir": str(pki.directory),
                "log_format": "json",
                "sink": {
                    "type": "nats",
                    "url": accounts_nats.url,
                    "creds": str(creds_path(nats_layout, None)),
                    "outbox": str(outbox),
                },
                "agents": {
                    "edge-1": {
                        "address": agent.address,
                        "tenant": ACME,
                        "checks": checks,
                    }
                },
            }
        )
    )
    proc = await spawn_cli("run", "--config", str(config), stderr=asyncio.subprocess.PIPE)
    seen: list[str] = []
    try:
        await next_event(proc, "nats_connected", seen)
        await next_event(proc, "poll_summary", seen)
        accounts_nats.stop()
        await next_event(proc, "nats_disconnected", seen)
        for _ in range(3):  # three more intervals polled while NATS is away
            await next_event(proc, "poll_summary", seen)
        proc.send_signal(signal.SIGKILL)
        assert await proc.wait() == -signal.SIGKILL
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    with sqlite3.connect(outbox) as db:
        kept = [row[0] for row in db.execute("SELECT msg_id FROM outbox WHERE subject = 'acme-corp.agents.status'")]
    assert len(kept) >= 3, f"only {len(kept)} results waited in the outbox"

    accounts_nats.start()
    sink = JetStreamSink(
        JetStreamSettings(url=accounts_nats.url, creds=creds_path(nats_layout, None), outbox=outbox, heartbeat_interval=None)
    )
    try:
        await sink.start()
        assert await sink.wait_drained(60)
    finally:
        await sink.close()
    stored = await stream_result_ids(accounts_nats.url, nats_layout, ACME)
    assert len(stored) == len(set(stored)), "a result was stored twice"
    assert set(kept) <= set(stored), "a result the killed daemon had kept never reached the stream"
