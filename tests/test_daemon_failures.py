"""Failures under a running `serviceradar-poller run` (a real child process), issue 18
items 1 and 2: a call cut by the poller's own channel close becomes a result and
a log line and the agent's loop goes on; an agent that stops answering is named
in one log line with the cause, and /status says why.

The agents are real mTLS grpc.aio servers in this process; synchronisation is on
the daemon's JSON log lines and the agents' records, never on time.
"""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.request
from pathlib import Path

from test_daemon_process import Daemon, start
from test_live_identity import _issue_poller

from poller.testing.mock_agent import AgentBehaviour

ACME = "acme-corp"


def write_config(path: Path, pki, agents: dict[str, object], data_dir: Path) -> None:
    path.write_text(
        json.dumps(
            {
                "poller_id": "poller-failures",
                # The issue's shape: a call may last most of an interval.
                "poll_interval": "4s",
                "cycle_timeout": "3.5s",
                "call_timeout": "3.5s",
                "backoff_initial": "100ms",
                "certs_dir": str(pki.directory),
                "sink": {"type": "file", "dir": str(data_dir)},
                "metrics_listen": "127.0.0.1:0",
                "log_format": "json",
                "agents": {
                    name: {"address": agent.address, "tenant": ACME, "checks": [{"service_type": "icmp", "service_name": "ping"}]}
                    for name, agent in agents.items()
                },
            }
        )
    )


def hanging_status() -> AgentBehaviour:
    """GetStatus never answers (until the behaviour changes); health answers at once."""
    return AgentBehaviour(hang=True, fault_methods=frozenset({"GetStatus"}))


async def status_of(daemon: Daemon, name: str) -> dict:
    listening = await daemon.wait_for("metrics_listening")
    url = f"http://{listening['address']}/status"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
    [entry] = [e for e in json.loads(body) if e["name"] == name]
    return entry


async def summaries_with(daemon: Daemon, outcome: str, n: int) -> None:
    """Wait for n poll_summary lines counting an acme-corp agent with this outcome.
    Each summary counts only cycles since the one before: n of them need n cycles."""
    seen = 0
    while seen < n:
        line = await daemon.wait_for("poll_summary")
        daemon.lines.remove(line)  # the next wait reads a newer one
        if line["tenants"].get(ACME, {}).get(outcome):
            seen += 1


async def stopped(daemon: Daemon) -> None:
    if daemon.proc.returncode is None:
        daemon.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(30):
                while await daemon.proc.stderr.readline():
                    pass
                await daemon.proc.wait()
        except TimeoutError:
            daemon.proc.kill()
            await daemon.proc.wait()


async def test_a_call_cut_by_a_revocation_is_a_revoked_result_and_the_loop_goes_on(pki, serve, tmp_path):
    cert = pki.agent(ACME, "agent-001")
    agent = await serve(cert, behaviour=hanging_status())
    config = tmp_path / "poller.json"
    write_config(config, pki, {"slow": agent}, tmp_path / "data")
    daemon = await start(config)
    try:
        async with asyncio.timeout(30):
            await agent.wait_for_calls("GetStatus")  # the call is in flight
        pki.revoke(ACME, cert)
        daemon.proc.send_signal(signal.SIGHUP)
        refused = await daemon.wait_for("agent_refused", agent="slow")
        assert (refused["tenant"], refused["reason"], refused["cause"]) == (ACME, "revoked", "identity refused")
        assert "CRL" in refused["detail"]
        entry = await status_of(daemon, "slow")
        assert (entry["state"], entry["reason"]) == ("refused", "revoked")
        assert "CRL" in entry["detail"]
        # The loop lives on: later cycles are refused again (no further log line: same state).
        await summaries_with(daemon, "refused", 2)
        assert daemon.count("agent_refused", agent="slow") == 1
        assert not daemon.count("agent_loop_failed")
    finally:
        await stopped(daemon)
    results = [json.loads(l) for l in (tmp_path / "data" / ACME / "results.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in results][:2] == ["revoked", "revoked"]


async def test_a_call_cut_by_a_poller_certificate_rotation_is_unreachable_then_recovers(pki, serve, tmp_path):
    agent = await serve(pki.agent(ACME, "agent-001"), behaviour=hanging_status())
    config = tmp_path / "poller.json"
    write_config(config, pki, {"slow": agent}, tmp_path / "data")
    daemon = await start(config)
    try:
        async with asyncio.timeout(30):
            await agent.wait_for_calls("GetStatus")
        assert agent.peers[-1] == "poller-1.serviceradar"
        _issue_poller(pki, "2")
        daemon.proc.send_signal(signal.SIGHUP)
        await daemon.wait_for("trust_reloaded")
        agent.behaviour.hang = False  # the next call answers, over the channel with the new certificate
        cut = await daemon.wait_for("agent_unreachable", agent="slow")
        assert (cut["tenant"], cut["reason"], cut["cause"]) == (ACME, "unreachable", "call cut")
        assert "rotation" in cut["detail"]
        recovered = await daemon.wait_for("agent_recovered", agent="slow")
        assert recovered["previous"] == "unreachable"
        assert agent.peers[-1] == "poller-2.serviceradar"
        assert not daemon.count("agent_loop_failed")
    finally:
        await stopped(daemon)


async def test_an_agent_that_stops_answering_is_named_once_with_the_cause(pki, serve, tmp_path):
    agent = await serve(pki.agent(ACME, "agent-001"))
    config = tmp_path / "poller.json"
    write_config(config, pki, {"edge": agent}, tmp_path / "data")
    daemon = await start(config)
    try:
        await summaries_with(daemon, "ok", 1)
        await agent.stop()
        down = await daemon.wait_for("agent_unreachable", agent="edge")
        assert (down["tenant"], down["previous"], down["state"], down["cause"]) == (
            ACME,
            "proven",
            "unreachable",
            "connection refused",
        )
        assert down["detail"]
        entry = await status_of(daemon, "edge")
        assert entry["state"] == "unreachable" and "refused" in entry["detail"].lower()
        await summaries_with(daemon, "unreachable", 2)
        assert daemon.count("agent_unreachable", agent="edge") == 1  # one line per change, not per cycle
        await agent.start()  # the same port
        recovered = await daemon.wait_for("agent_recovered", agent="edge")
        assert recovered["previous"] == "unreachable"
    finally:
        await stopped(daemon)
