"""The file sink is durable per cycle: a real daemon killed with SIGKILL loses
at most the cycle in flight (before, lines sat in Python's buffer until it
filled, and `kill -9` after several polls left results.jsonl empty).

Synchronisation is on the calls the (in-process) mock agent answered, never on time.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

from spawn import spawn_cli

from poller.delivery.file_sink import FileSink
from poller.delivery.result import PollResult
from poller.testing import unverified_tenant_context

ACME = "acme-corp"


async def test_sigkill_loses_at_most_the_cycle_in_flight(pki, serve, tmp_path: Path):
    agent = await serve(pki.agent(ACME, "agent-001"))
    data = tmp_path / "data"
    config = tmp_path / "poller.json"
    config.write_text(
        json.dumps(
            {
                "poller_id": "durable",
                "poll_interval": "1s",
                "call_timeout": "500ms",
                "certs_dir": str(pki.directory),
                "sink": {"type": "file", "dir": str(data)},
                "log_format": "json",
                "agents": {
                    "a": {"address": agent.address, "tenant": ACME, "checks": [{"service_type": "process", "service_name": "p"}]}
                },
            }
        )
    )
    proc = await spawn_cli(
        "run",
        "--config",
        str(config),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(60):
            await agent.wait_for_calls("GetStatus", 4)
        answered = agent.count("GetStatus")
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL

    text = (data / ACME / "results.jsonl").read_text()
    lines = text.splitlines()
    if not text.endswith("\n"):
        lines = lines[:-1]  # a line torn by the kill mid-write may only be the last one
    docs = [json.loads(line) for line in lines]
    # The agent's loop is sequential: once call n was answered, cycle n-1 had
    # ended, so every answer but the last (the cycle in flight) is on disk.
    assert len(docs) >= answered - 1 >= 3
    assert all(d["tenant"] == ACME and d["identity"]["tenant"] == ACME for d in docs)


async def test_flush_writes_and_fsyncs_only_what_changed(tmp_path: Path):
    sink = FileSink(tmp_path)
    result = _status_result()
    await sink.publish(result)
    path = sink.path_for(ACME)
    await sink.flush()
    assert sink.syncs == 1 and len(path.read_text().splitlines()) == 1  # on disk before close
    await sink.flush()
    assert sink.syncs == 1  # nothing new, no fsync
    await asyncio.gather(sink.publish(result), sink.publish(result))
    await asyncio.gather(sink.flush(), sink.flush(), sink.flush())
    assert sink.syncs == 2  # concurrent flushes share one fsync round
    assert len(path.read_text().splitlines()) == 3
    await sink.close()


async def test_cycles_ending_together_share_one_fsync_round(tmp_path: Path):
    """A round waits commit_delay before it syncs, so cycles ending meanwhile join
    it (paced fleets end cycles one by one; without the wait each pays an fsync)."""
    sink = FileSink(tmp_path)
    result = _status_result()

    async def cycle() -> None:
        await sink.publish(result)
        await sink.flush()

    await asyncio.gather(cycle(), cycle(), cycle())
    assert sink.syncs == 1  # with no commit delay the first cycle syncs alone: 2 rounds
    assert len(sink.path_for(ACME).read_text().splitlines()) == 3
    await sink.close()


def _status_result() -> PollResult:
    return PollResult(
        tenant=ACME,
        agent="a",
        address="127.0.0.1:1",
        poller_id="p",
        partition="default",
        kind="status",
        service_name="s",
        service_type="icmp",
        available=True,
        context=unverified_tenant_context(ACME),
    )


async def test_result_files_are_owner_only(tmp_path):
    """Tenant data: the file 0600 and its directory 0700 from the first byte, and a
    file an older version left 0644 tightened when the sink opens it."""
    from poller.testing import sample_result

    sink = FileSink(tmp_path / "data")
    await sink.publish(sample_result())
    await sink.flush()
    [path] = (tmp_path / "data").glob("*/results.jsonl")
    assert (path.stat().st_mode & 0o777, path.parent.stat().st_mode & 0o777) == (0o600, 0o700)
    await sink.close()
    path.chmod(0o644)
    again = FileSink(tmp_path / "data")
    await again.publish(sample_result())
    await again.flush()
    await again.close()
    assert path.stat().st_mode & 0o777 == 0o600 and len(path.read_text().splitlines()) == 2
