"""The daemon's stderr stays one JSON object per line (issue 18 item 6).

grpc's C core writes its own plain-text lines to file descriptor 2
(`I1204 12:00:00.1 123 handshaker.cc:80] ...`), and grpc reads GRPC_VERBOSITY
when it is imported, which `import poller` already does, so the daemon
routes fd 2 instead. A real `run --once` process, with grpc's handshake
tracing on (as an operator debugging TLS would), dials an agent that refuses
the poller's certificate (the handshake fails); every line on its stderr
must parse as JSON, grpc's lines arriving as `grpc_log` events.
"""

from __future__ import annotations

import asyncio
import json
import os

from spawn import spawn_cli

from poller.testing import ForgePki, MockAgent

ACME = "acme-corp"


async def test_grpc_core_lines_become_json_events_on_the_daemon_stderr(pki, tmp_path):
    other = ForgePki.create(tmp_path / "other", tenants=(ACME,))
    who = pki.agent(ACME)
    # The agent trusts another root only: it refuses the poller's client certificate.
    agent = MockAgent(cert_chain_pem=who.chain_pem, key_pem=who.key_pem, client_ca_pem=other.root_pem)
    await agent.start()
    config = tmp_path / "poller.json"
    config.write_text(
        json.dumps(
            {
                "poller_id": "p",
                "certs_dir": str(pki.directory),
                "sink": {"type": "file", "dir": str(tmp_path / "data")},
                "log_format": "json",
                "log_level": "debug",  # grpc's INFO and DEBUG lines are debug events
                "call_timeout": "2s",
                "agents": {
                    "a": {"address": agent.address, "tenant": ACME, "checks": [{"service_type": "icmp", "service_name": "ping"}]}
                },
            }
        )
    )
    env = {**os.environ, "GRPC_VERBOSITY": "DEBUG", "GRPC_TRACE": "handshaker"}
    try:
        proc = await spawn_cli("run", "--config", str(config), "--once", stderr=asyncio.subprocess.PIPE, env=env)
        async with asyncio.timeout(60):
            _, err = await proc.communicate()
    finally:
        await agent.stop()
    lines = err.decode().splitlines()
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line on the daemon's stderr: {line!r}") from None
    assert all(isinstance(e, dict) and "event" in e for e in events)
    grpc_lines = [e for e in events if e["event"] == "grpc_log"]
    assert any(e["source"].startswith("handshaker.cc:") for e in grpc_lines), [e["event"] for e in events]
    assert all(e["level"] in ("debug", "warning", "error", "critical") for e in grpc_lines)
    assert any(e["event"] == "agent_unreachable" for e in events)  # the failed handshake, named
    assert proc.returncode != 0
