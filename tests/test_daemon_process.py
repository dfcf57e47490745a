"""`serviceradar-poller run` as a real process: SIGHUP reloads without
disturbing the running agents, SIGTERM exits 0 with the sink flushed.

Synchronisation is on the daemon's own JSON log lines (a pipe), never on time.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

from spawn import spawn_cli

ACME = "acme-corp"


class Daemon:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict] = []

    async def wait_for(self, event: str, **fields: object) -> dict:
        """Read log lines until one with this event (and fields) arrives."""
        async with asyncio.timeout(30):
            for seen in self.lines:
                if seen.get("event") == event and all(seen.get(k) == v for k, v in fields.items()):
                    return seen
            while True:
                raw = await self.proc.stderr.readline()
                assert raw, f"daemon exited before logging {event} {fields}; saw {[l.get('event') for l in self.lines]}"
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                self.lines.append(line)
                if line.get("event") == event and all(line.get(k) == v for k, v in fields.items()):
                    return line

    def count(self, event: str, **fields: object) -> int:
        return sum(1 for l in self.lines if l.get("event") == event and all(l.get(k) == v for k, v in fields.items()))


def write_config(path: Path, pki, agents: dict[str, object], data_dir: Path) -> None:
    path.write_text(
        json.dumps(
            {
                "poller_id": "poller-proc",
                "poll_interval": "30s",
                "call_timeout": "2s",
                "certs_dir": str(pki.directory),
                "sink": {"type": "file", "dir": str(data_dir)},
                "log_format": "json",
                "agents": {
                    name: {"address": agent.address, "tenant": ACME, "checks": [{"service_type": "process", "service_name": "p"}]}
                    for name, agent in agents.items()
                },
            }
        )
    )


async def start(config: Path) -> Daemon:
    proc = await spawn_cli(
        "run",
        "--config",
        str(config),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    return Daemon(proc)


async def test_sighup_adds_and_removes_agents_and_sigterm_flushes(pki, serve, tmp_path):
    a = await serve(pki.agent(ACME, "agent-001"))
    b = await serve(pki.agent(ACME, "agent-002"))
    c = await serve(pki.agent(ACME, "agent-003"))
    config, data = tmp_path / "poller.json", tmp_path / "data"
    write_config(config, pki, {"a": a, "b": b}, data)
    daemon = await start(config)
    try:
        await daemon.wait_for("identity_accepted", agent="a")
        await daemon.wait_for("identity_accepted", agent="b")

        write_config(config, pki, {"a": a, "c": c}, data)
        daemon.proc.send_signal(signal.SIGHUP)
        reloaded = await daemon.wait_for("reloaded")
        assert (reloaded["added"], reloaded["removed"], reloaded["changed"]) == (["c"], ["b"], [])
        await daemon.wait_for("identity_accepted", agent="c")
        assert daemon.count("identity_accepted", agent="a") == 1  # a was not restarted

        config.write_text("{ not json")
        daemon.proc.send_signal(signal.SIGHUP)
        await daemon.wait_for("reload_refused")

        daemon.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            while await daemon.proc.stderr.readline():
                pass
            assert await daemon.proc.wait() == 0
    finally:
        if daemon.proc.returncode is None:
            daemon.proc.kill()
            await daemon.proc.wait()
    lines = [json.loads(l) for l in (data / ACME / "results.jsonl").read_text().splitlines()]
    agents = {l["agent"] for l in lines}
    assert {"a", "c"} <= agents
    proven = [l for l in lines if l["proven"]]
    assert {l["agent"] for l in proven} >= {"a", "c"}  # not an all() over nothing
    assert all(l["tenant"] == ACME and l["identity"]["tenant"] == ACME for l in proven)


async def test_bad_config_exits_2_naming_the_path(tmp_path):
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"poller_id": "p", "agents": {"e": {"address": "127.0.0.1:1"}}}))
    proc = await spawn_cli(
        "run",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert "agents.e.tenant" in err.decode()


async def test_run_once_polls_every_agent_and_exits_0(pki, serve, tmp_path):
    a = await serve(pki.agent(ACME, "agent-001"))
    config, data = tmp_path / "poller.json", tmp_path / "data"
    write_config(config, pki, {"a": a}, data)
    proc = await spawn_cli(
        "run",
        "--config",
        str(config),
        "--once",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    [line] = [json.loads(l) for l in (data / ACME / "results.jsonl").read_text().splitlines()]
    assert (line["agent"], line["available"], line["identity"]["component_id"]) == ("a", True, "agent-001")
