"""pytest plugin: a tenant PKI, mock agents and a poller as fixtures for any suite.

Registered through the `pytest11` entry point `serviceradar_poller`. A suite
that does not ask for these fixtures sees no difference in what runs: no
fixture, thread, server or output until a test asks for one; the plugin
registers one marker. (Loading it imports the `poller` package, as any
submodule does.) The async fixtures need pytest-asyncio.

Fixtures:

- `tenant_pki`: a ForgePki (real certs directory + CAs in memory for forging)
  with tenants acme-corp and xyz-inc, or those of
  `@pytest.mark.poller_tenants("a", "b")`; `tenant_pki.add_tenant("c")` adds one.
- `mock_agent`: `await mock_agent(tenant, component="agent-001",
  partition="partition-1", *, impostor_from=None, cert=None, **behaviour)`
  starts a real mTLS MockAgent; AgentBehaviour fields (`delay`, `hang`,
  `error_code`, `message`, `available`, `stream_chunks`, ...) set its
  behaviour, `impostor_from="xyz-inc"` has that tenant's CA mint the
  certificate, `cert=` serves any ForgedCert. Stopped after the test.
- `poller_daemon`: `await poller_daemon(*, sink=None, checks=None,
  poll_interval=5.0, call_timeout=3.0, **config)` wires a PollerDaemon to the
  PKI and every agent started so far, each expected to be the tenant it was
  started for; results go to the harness (and to `sink`, your service's
  publish/flush/close object), and with `nats=nats_server` to the daemon's
  real NATS sink (JetStream streams `tenant-<slug>`, subjects
  `<tenant>.<channel>`). A cycle runs at once, then every poll_interval
  (the generous default deadlines keep a loaded CI machine from turning a
  slow handshake into a timeout result); `await poller.wait_for_results(n,
  tenant=..., agent=...)` waits for them.
- `push_agent`: `push_agent(gateway, tenant, component="agent-001",
  partition="partition-1", *, impostor_from=None, cert=None,
  server_name="poller-1.serviceradar", **behaviour)` makes a real mTLS
  PushAgent (poller.testing.push_agent) for the gateway at `gateway`
  ("host:port") with a certificate issued from tenant_pki (or `cert`);
  behaviour: `agent_id=` / `partition=` (lies), `claim_tenant=`, `delay=`.
  Closed after the test.
- `nats_server`: a real nats-server (poller.testing.NatsServer, JetStream on)
  on 127.0.0.1 with its store in a temporary directory; `.url` to connect,
  `.stop()` / `.start()` to play an outage (same port, same store).

>>> async def test_isolation(mock_agent, poller_daemon):  # doctest: +SKIP
...     await mock_agent("acme-corp")
...     poller = await poller_daemon()
...     [result] = await poller.wait_for_results(1)
...     assert result.context.tenant == "acme-corp"
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from poller.daemon.daemon import PollerDaemon
    from poller.delivery.result import PollResult
    from poller.delivery.sink import Sink
    from poller.testing.forge import ForgedCert, ForgePki
    from poller.testing.memory_sink import MemorySink
    from poller.testing.mock_agent import MockAgent
    from poller.testing.nats_server import NatsServer
    from poller.testing.push_agent import PushAgent

try:
    import pytest_asyncio

    _async_fixture: Callable[..., Any] = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - the async fixtures then say what is missing
    _async_fixture = pytest.fixture

DEFAULT_TENANTS: tuple[str, ...] = ("acme-corp", "xyz-inc")
MARKER = "poller_tenants"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}(*slugs): tenants of the tenant_pki fixture (default acme-corp, xyz-inc)")


@pytest.fixture
def tenant_pki(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> ForgePki:
    """A temporary PKI: root, platform CA, poller certificate and one CA per tenant."""
    from poller.testing.forge import ForgePki

    marker = request.node.get_closest_marker(MARKER)
    tenants = tuple(marker.args) if marker is not None and marker.args else DEFAULT_TENANTS
    return ForgePki.create(tmp_path_factory.mktemp("poller-pki") / "certs", tenants=tenants)


@dataclasses.dataclass(frozen=True)
class ServedAgent:
    """A started mock agent and the tenant a poller should expect it to be."""

    name: str
    tenant: str
    agent: MockAgent


def _agent_cert(pki: ForgePki, tenant: str, component: str, partition: str, impostor_from: str | None) -> ForgedCert:
    """An agent certificate from tenant_pki; `impostor_from`: that tenant's CA mints it."""
    pki.add_tenant(tenant)
    if impostor_from is None:
        return pki.agent(tenant, component, partition)
    pki.add_tenant(impostor_from)
    # No DNS SAN: the issuer's name constraints would refuse it before the
    # tenant check does; the point is to be refused for being the wrong tenant.
    return pki.agent(tenant, component, partition, issuer_tenant=impostor_from, dns=[])


class MockAgentFactory:
    """`await factory(tenant, component, partition, ...)` -> a started MockAgent."""

    def __init__(self, pki: ForgePki) -> None:
        self.pki = pki
        self.served: list[ServedAgent] = []

    async def __call__(
        self,
        tenant: str,
        component: str = "agent-001",
        partition: str = "partition-1",
        *,
        impostor_from: str | None = None,
        cert: ForgedCert | None = None,
        **options: Any,
    ) -> MockAgent:
        from poller.testing.mock_agent import AgentBehaviour, MockAgent

        fields = {f.name for f in dataclasses.fields(AgentBehaviour)}
        behaviour = options.pop("behaviour", None) or AgentBehaviour()
        for key in [k for k in options if k in fields]:
            setattr(behaviour, key, options.pop(key))
        cert = cert or _agent_cert(self.pki, tenant, component, partition, impostor_from)
        options.setdefault("agent_id", component)
        agent = MockAgent(
            cert_chain_pem=cert.chain_pem, key_pem=cert.key_pem, client_ca_pem=self.pki.root_pem, behaviour=behaviour, **options
        )
        await agent.start()
        name = f"{component}.{partition}.{tenant}"
        taken = {s.name for s in self.served}
        suffix = 2
        while name in taken:
            name, suffix = f"{component}.{partition}.{tenant}#{suffix}", suffix + 1
        self.served.append(ServedAgent(name=name, tenant=tenant, agent=agent))
        return agent

    async def stop_all(self) -> None:
        await asyncio.gather(*(s.agent.stop() for s in self.served), return_exceptions=True)


@_async_fixture
async def mock_agent(tenant_pki: ForgePki) -> AsyncIterator[MockAgentFactory]:
    """A factory of real mTLS mock agents issued from tenant_pki (see the module docstring)."""
    factory = MockAgentFactory(tenant_pki)
    try:
        yield factory
    finally:
        await factory.stop_all()


class PushAgentFactory:
    """`factory(gateway, tenant, component, partition, ...)` -> a PushAgent (not yet connected)."""

    def __init__(self, pki: ForgePki) -> None:
        self.pki = pki
        self.made: list[PushAgent] = []

    def __call__(
        self,
        gateway: str,
        tenant: str,
        component: str = "agent-001",
        partition: str = "partition-1",
        *,
        impostor_from: str | None = None,
        cert: ForgedCert | None = None,
        server_name: str | None = None,
        **behaviour: Any,
    ) -> PushAgent:
        from poller.testing.push_agent import PushAgent

        cert = cert or _agent_cert(self.pki, tenant, component, partition, impostor_from)
        agent = PushAgent.for_cert(
            gateway,
            cert,
            ca_pem=self.pki.root_pem,
            server_name=server_name or f"poller-{self.pki.poller_id}.serviceradar",
            **behaviour,
        )
        self.made.append(agent)
        return agent

    async def close_all(self) -> None:
        await asyncio.gather(*(a.close() for a in self.made), return_exceptions=True)


@_async_fixture
async def push_agent(tenant_pki: ForgePki) -> AsyncIterator[PushAgentFactory]:
    """A factory of real mTLS push agents issued from tenant_pki (see the module docstring)."""
    factory = PushAgentFactory(tenant_pki)
    try:
        yield factory
    finally:
        await factory.close_all()


class _Tee:
    """Publish to the harness's memory sink and to the service under test."""

    def __init__(self, *sinks: Sink) -> None:
        self.sinks = sinks

    async def publish(self, result: PollResult) -> None:
        for sink in self.sinks:
            await sink.publish(result)

    async def flush(self) -> None:
        for sink in self.sinks:
            await sink.flush()

    async def close(self) -> None:
        for sink in self.sinks:
            await sink.close()


class PollerHarness:
    """A PollerDaemon whose cycles the harness drives: one at once, then every poll_interval."""

    def __init__(self, daemon: PollerDaemon, memory: MemorySink) -> None:
        self.daemon = daemon
        self.memory = memory
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def results(self) -> list[PollResult]:
        """Every result published so far, in order."""
        return list(self.memory.results)

    async def start(self) -> None:
        self.daemon.scheduler.start(loops=False)
        self._task = asyncio.get_running_loop().create_task(self._cycles(), name="poller harness")

    async def _cycles(self) -> None:
        interval = self.daemon.settings.poll_interval
        while not self._stop.is_set():
            await self.daemon.scheduler.run_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)

    async def wait_for_results(
        self, n: int = 1, *, tenant: str | None = None, agent: str | None = None, timeout: float = 10.0
    ) -> list[PollResult]:
        """The first n results (of `tenant` / `agent` when given); AssertionError after timeout."""

        def matching(results: Sequence[PollResult]) -> list[PollResult]:
            return [r for r in results if (tenant is None or r.tenant == tenant) and (agent is None or r.agent == agent)]

        try:
            async with asyncio.timeout(timeout):
                await self.memory.wait_for(lambda results: len(matching(results)) >= n)
        except TimeoutError:
            seen = [(r.agent, r.tenant, r.reason) for r in self.memory.results]
            raise AssertionError(
                f"{n} result(s) for tenant={tenant} agent={agent} not there after {timeout}s; got {seen}"
            ) from None
        return matching(self.memory.results)[:n]

    async def stop(self) -> None:
        """Stop cycling and shut the daemon down (flush and close the sinks). Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            # A cycle in flight (a hung agent) gets the daemon's own shutdown grace, then is cancelled.
            _done, pending = await asyncio.wait([task], timeout=self.daemon.shutdown_grace)
            for late in pending:
                late.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.daemon.shutdown()


class PollerDaemonFactory:
    """`await factory(...)` -> a running PollerHarness over the PKI and the started agents."""

    def __init__(self, pki: ForgePki, agents: MockAgentFactory, state_dir: Path) -> None:
        self.pki = pki
        self.agents = agents
        self.state_dir = state_dir
        self.started: list[PollerHarness] = []

    async def __call__(
        self,
        *,
        sink: Sink | None = None,
        checks: Sequence[dict[str, Any]] | None = None,
        poll_interval: float = 5.0,
        call_timeout: float = 3.0,
        nats: NatsServer | None = None,
        **config: Any,
    ) -> PollerHarness:
        from poller.config import parse_config
        from poller.daemon.daemon import PollerDaemon
        from poller.testing.memory_sink import MemorySink
        from poller.trust.store import TrustStore

        wanted = (
            list(checks) if checks is not None else [{"service_type": "icmp", "service_name": "ping", "details": "127.0.0.1"}]
        )
        doc: dict[str, Any] = {
            "poller_id": "pytest",
            "poll_interval": f"{poll_interval}s",
            "call_timeout": f"{call_timeout}s",
            "certs_dir": str(self.pki.directory),
            # With `nats`, the daemon's real NATS sink (JetStream, outbox); else results go to the harness only.
            "sink": {"type": "nats", "url": nats.url, "outbox": str(self.state_dir / "outbox.db")}
            if nats is not None
            else {"type": "file", "dir": str(self.state_dir)},
            "agents": {s.name: {"address": s.agent.address, "tenant": s.tenant, "checks": wanted} for s in self.agents.served},
            **config,
        }
        settings = parse_config(doc)
        memory = MemorySink()
        sinks: list[Sink] = [memory]
        if nats is not None:
            from poller.daemon.daemon import make_sink

            sinks.append(make_sink(settings))
        if sink is not None:
            sinks.append(sink)
        publish: Sink = memory if len(sinks) == 1 else _Tee(*sinks)
        daemon = PollerDaemon(settings, sink=publish, trust=TrustStore(self.pki.directory))
        harness = PollerHarness(daemon, memory)
        await harness.start()
        self.started.append(harness)
        return harness

    async def stop_all(self) -> None:
        for harness in self.started:
            await harness.stop()


@_async_fixture
async def poller_daemon(
    tenant_pki: ForgePki, mock_agent: MockAgentFactory, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[PollerDaemonFactory]:
    """A factory of pollers wired to tenant_pki and the agents of mock_agent."""
    factory = PollerDaemonFactory(tenant_pki, mock_agent, tmp_path_factory.mktemp("poller-data"))
    try:
        yield factory
    finally:
        await factory.stop_all()


@pytest.fixture
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A real nats-server with JetStream on 127.0.0.1, stopped after the test."""
    from poller.testing.nats_server import NatsServer

    with NatsServer(store_dir=tmp_path_factory.mktemp("nats") / "jetstream") as server:
        yield server
