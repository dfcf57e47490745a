"""The pytest plugin: the README's example runs as written, the fixtures do what
they say against real agents and a real poller, and a suite that does not use
them is untouched. The suites under test run in a pytest subprocess."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from poller.testing.forge import ForgePki
from poller.testing.pytest_plugin import MockAgentFactory, PollerDaemonFactory

README = Path(__file__).resolve().parent.parent / "README.md"


def run_suite(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest in a fresh directory: no ini file, so pytest-asyncio runs in its default strict mode."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(directory), *args],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def readme_example() -> str:
    text = README.read_text()
    match = re.search(r"<!-- plugin-example -->\n```python\n(.*?)```\n<!-- /plugin-example -->", text, re.S)
    assert match, "README.md lost its plugin example"
    return match.group(1)


def test_the_readme_example_passes_as_written(tmp_path: Path) -> None:
    (tmp_path / "test_readme_example.py").write_text(readme_example())
    result = run_suite(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_the_readme_example_fails_when_the_service_mixes_tenants(tmp_path: Path) -> None:
    # The example is a real test: an inbox that files every result under one
    # tenant mixes xyz-inc's agent into acme-corp's results, and the example fails.
    leaky = readme_example().replace("self.by_tenant.setdefault(result.tenant, [])", "self.by_tenant.setdefault('acme-corp', [])")
    assert leaky != readme_example()
    (tmp_path / "test_leaky.py").write_text(leaky)
    result = run_suite(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed" in result.stdout


def test_a_suite_that_does_not_use_the_fixtures_is_untouched(tmp_path: Path) -> None:
    # Loaded (importing the package), but inert: no threads, no servers, no
    # fixtures run, the plain test's outcome and output are its own.
    (tmp_path / "test_plain.py").write_text(
        "import threading\n"
        "def test_plain(request):\n"
        "    assert threading.active_count() == 1\n"
        "    assert not {'tenant_pki', 'mock_agent', 'poller_daemon'} & set(request.fixturenames)\n"
        "def test_fails():\n"
        "    assert 1 == 2\n"
    )
    result = run_suite(tmp_path, "-p", "no:hypothesispytest", "-rN")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed, 1 passed" in result.stdout
    listed = run_suite(tmp_path, "--trace-config", "-p", "no:hypothesispytest")
    assert "poller.testing.pytest_plugin" in listed.stdout


# --- the fixtures, used directly by this suite -------------------------------------------


@pytest.mark.poller_tenants("tenant-a", "tenant-b", "tenant-c")
def test_tenant_pki_makes_the_named_tenants(tenant_pki: ForgePki) -> None:
    assert sorted(tenant_pki.tenants) == ["tenant-a", "tenant-b", "tenant-c"]
    assert tenant_pki.layout.tenant_ca("tenant-c").is_file()
    tenant_pki.add_tenant("tenant-d")
    assert tenant_pki.layout.tenant_ca("tenant-d").is_file()


def test_tenant_pki_defaults(tenant_pki: ForgePki) -> None:
    assert sorted(tenant_pki.tenants) == ["acme-corp", "xyz-inc"]


async def test_behaviour_and_faults_reach_the_poller(mock_agent: MockAgentFactory, poller_daemon: PollerDaemonFactory) -> None:
    await mock_agent("acme-corp", "agent-001", message=b'{"up":true}')
    await mock_agent("acme-corp", "agent-002", error_code=grpc.StatusCode.INTERNAL)
    down = await mock_agent("xyz-inc", "agent-003", available=False)
    poller = await poller_daemon()
    results = {r.agent: r for r in await poller.wait_for_results(3)}
    ok = results["agent-001.partition-1.acme-corp"]
    assert (ok.available, ok.payload, ok.context.tenant if ok.context else None) == (True, b'{"up":true}', "acme-corp")
    assert results["agent-002.partition-1.acme-corp"].available is False
    assert results["agent-003.partition-1.xyz-inc"].available is False
    assert down.count("GetStatus") >= 1


async def test_wait_for_results_filters_by_tenant_and_agent(
    mock_agent: MockAgentFactory, poller_daemon: PollerDaemonFactory
) -> None:
    await mock_agent("acme-corp", "agent-001")
    await mock_agent("xyz-inc", "agent-007", "site-b")
    poller = await poller_daemon(poll_interval=1.5, call_timeout=1.0)  # the second result is the second cycle
    xyz = await poller.wait_for_results(2, tenant="xyz-inc")
    assert {r.agent for r in xyz} == {"agent-007.site-b.xyz-inc"}
    assert all(r.context is not None and r.context.tenant == "xyz-inc" for r in xyz)
    with pytest.raises(AssertionError, match="not there"):
        await poller.wait_for_results(1, tenant="nobody", timeout=0.2)


async def test_impostor_and_forged_certificates(
    tenant_pki: ForgePki, mock_agent: MockAgentFactory, poller_daemon: PollerDaemonFactory
) -> None:
    await mock_agent("acme-corp", "agent-666", impostor_from="xyz-inc")
    from datetime import UTC, datetime

    expired = tenant_pki.agent("acme-corp", "agent-old", not_after=datetime(2020, 1, 1, tzinfo=UTC))
    await mock_agent("acme-corp", "agent-old", cert=expired)
    poller = await poller_daemon()
    results = {r.agent: r for r in await poller.wait_for_results(2)}
    assert results["agent-666.partition-1.acme-corp"].reason == "tenant_mismatch"
    assert results["agent-old.partition-1.acme-corp"].context is None


async def test_results_also_go_to_the_service_sink(mock_agent: MockAgentFactory, poller_daemon: PollerDaemonFactory) -> None:
    class Service:
        def __init__(self) -> None:
            self.got: list[str] = []
            self.closed = False

        async def publish(self, result: object) -> None:
            self.got.append(result.tenant)  # type: ignore[attr-defined]

        async def flush(self) -> None:
            pass

        async def close(self) -> None:
            self.closed = True

    await mock_agent("xyz-inc")
    service = Service()
    poller = await poller_daemon(sink=service)
    await poller.wait_for_results(1)
    assert service.got and set(service.got) == {"xyz-inc"}
    await poller.stop()
    assert service.closed


async def test_stopping_does_not_wait_for_a_hung_agent(mock_agent: MockAgentFactory, poller_daemon: PollerDaemonFactory) -> None:
    hung = await mock_agent("acme-corp", hang=True)
    poller = await poller_daemon(call_timeout=60.0, poll_interval=120.0, cycle_timeout="100s")
    async with asyncio.timeout(30):
        await hung.wait_for_calls("GetStatus")  # the cycle is in flight, stuck on the agent
        await poller.stop()  # bounded by the daemon's shutdown grace, not by the 60 s call
    assert poller.results == []  # the cancelled cycle published nothing half-done


NATS_SUITE = """
import json

import nats
import pytest


@pytest.mark.asyncio
async def test_nats_server_is_a_real_server(nats_server):
    client = await nats.connect(nats_server.url)
    try:
        sub = await client.subscribe("acme-corp.agents.status")
        await client.publish("acme-corp.agents.status", b"up")
        message = await sub.next_msg(timeout=5)
        assert (message.subject, message.data) == ("acme-corp.agents.status", b"up")
    finally:
        await client.close()


@pytest.mark.asyncio
async def test_poller_daemon_publishes_to_the_nats_server(nats_server, mock_agent, poller_daemon):
    client = await nats.connect(nats_server.url)
    try:
        acme = await client.subscribe("acme-corp.>")
        xyz = await client.subscribe("xyz-inc.>")
        await mock_agent("acme-corp", message=b'{"up":true}')
        poller = await poller_daemon(nats=nats_server)
        await poller.wait_for_results(1)
        message = await acme.next_msg(timeout=10)
        assert message.subject == "acme-corp.agents.status"
        assert json.loads(message.data)["tenant"] == "acme-corp"
        with pytest.raises(nats.errors.TimeoutError):
            await xyz.next_msg(timeout=0.2)  # nothing of acme-corp's under another tenant's prefix
    finally:
        await client.close()
"""


def test_nats_server_fixture_and_a_poller_publishing_to_it(tmp_path: Path) -> None:
    # In a suite of its own: this project's conftest has a nats_server fixture
    # (with tenant accounts) that would shadow the plugin's here.
    (tmp_path / "test_nats_plugin.py").write_text(NATS_SUITE)
    result = run_suite(tmp_path, "-p", "no:hypothesispytest")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
