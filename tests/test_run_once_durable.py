"""`run --once` says when results were not durably handed over (issue 18, item 4).

Real processes: the CLI as a user runs it, a real agent on mTLS, a real
nats-server that is started and then stopped (NATS down, its port known).
With the outbox, a result committed there is durable, so NATS down is exit 0
with the rows kept for the next start. With `outbox: null`, a result JetStream
never acknowledged is lost: exit 5 and a `results_not_durable` log line.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from spawn import spawn_cli

from poller.cli.common import EXIT_OK, EXIT_UNDELIVERED

ACME = "acme-corp"


def write_config(path: Path, pki, agent, url: str, outbox: str | None) -> None:
    path.write_text(
        json.dumps(
            {
                "poller_id": "poller-once",
                "poll_interval": "30s",
                "call_timeout": "2s",
                "certs_dir": str(pki.directory),
                "sink": {"type": "nats", "url": url, "outbox": outbox, "publish_timeout": "1s"},
                "crl_state": None,
                "log_format": "json",
                "agents": {
                    "a": {"address": agent.address, "tenant": ACME, "checks": [{"service_type": "process", "service_name": "p"}]}
                },
            }
        )
    )


async def run_once(config: Path) -> tuple[int, str, list[dict]]:
    proc = await spawn_cli(
        "run", "--config", str(config), "--once", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    lines = []
    for raw in err.decode().splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            lines.append({"text": raw})
    assert proc.returncode is not None
    return proc.returncode, out.decode(), lines


def events(lines: list[dict], name: str) -> list[dict]:
    return [line for line in lines if line.get("event") == name]


async def test_nats_down_without_outbox_exits_5_and_says_how_many(pki, serve, nats_server, tmp_path):
    agent = await serve(pki.agent(ACME, "agent-001"))
    url = nats_server.url
    nats_server.stop()  # NATS down: nothing listens on its port any more
    config = tmp_path / "poller.json"
    write_config(config, pki, agent, url, outbox=None)

    rc, out, lines = await run_once(config)

    assert rc == EXIT_UNDELIVERED, lines
    assert f"summary tenant={ACME} agents=1 ok=1" in out  # the agent answered; the bus lost it
    [failed, *_] = events(lines, "handler_failed")
    assert failed["tenant"] == ACME and failed["agent"] == "a"
    [summary] = events(lines, "results_not_durable")
    assert summary["undelivered"] >= 1
    assert "not durably handed over to the nats sink" in summary["detail"]


async def test_nats_down_with_the_outbox_exits_0_and_keeps_the_result(pki, serve, nats_server, tmp_path):
    agent = await serve(pki.agent(ACME, "agent-001"))
    url = nats_server.url
    nats_server.stop()
    config, outbox = tmp_path / "poller.json", tmp_path / "outbox.db"
    write_config(config, pki, agent, url, outbox=str(outbox))

    rc, _, lines = await run_once(config)

    assert rc == EXIT_OK, lines
    assert not events(lines, "results_not_durable")
    with sqlite3.connect(outbox) as db:
        [(rows,)] = db.execute("SELECT COUNT(*) FROM outbox").fetchall()
    assert rows >= 1  # durable: waiting for the next start, not lost


async def test_nats_up_without_outbox_exits_0(pki, serve, nats_server, tmp_path):
    agent = await serve(pki.agent(ACME, "agent-001"))
    config = tmp_path / "poller.json"
    write_config(config, pki, agent, nats_server.url, outbox=None)

    rc, _, lines = await run_once(config)

    assert rc == EXIT_OK, lines
    assert not events(lines, "handler_failed")
