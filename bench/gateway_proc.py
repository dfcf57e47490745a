"""One side of bench.gateway in its own process (the parent starts and stops it).

    python -m bench.gateway_proc server gateway|proven|bare CERTS AGENTS
    python -m bench.gateway_proc client CERTS ADDRESS FIRST COUNT

server: prints its port, then serves until SIGTERM. `gateway` is the real
AgentGateway behind serve_gateway (mTLS, TenantServerInterceptor, the push
registry of AGENTS entries, a HandlerRegistry delivering to a sink that only
counts: no storage in the figures); `bare` is a plain grpc.aio server with
the same TLS credentials and the same servicer methods that only answer
(`received: true`), without proof, registry or delivery; `proven` is the
gateway's own server (serve_gateway: its options, TenantServerInterceptor
with the push registry's policy) in front of those same bare answers: what
proving and admitting each call costs before the gateway does anything with
it. The bounds are raised out of the way (rate, calls in flight): the bench
measures the work, not the limits.

client: COUNT push agents (poller.testing.PushAgent, one channel each,
certificates issued in memory by the tenant CA of CERTS, agents
`agent-<FIRST..>`), each says Hello and pushes once, then it prints `ready`.
Each stdin line `go SECONDS` makes every agent push in a closed loop for
SECONDS and prints the number of pushes answered; `hold` keeps them
connected, pushing every 30 s; EOF ends it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import grpc

from bench.common import die_with_parent, quiet_logging, raise_nofile
from poller.proto import monitoring_pb2 as pb
from poller.proto import monitoring_pb2_grpc as pb_grpc

TENANTS = ("acme-corp", "xyz-inc")
PARTITION = "bench"
INTERVAL = 30


def agent_name(i: int) -> tuple[str, str]:
    """(tenant, component) of bench agent i."""
    return TENANTS[i % len(TENANTS)], f"agent-{i}"


class CountingSink:
    """A Sink that keeps nothing: what delivery costs without storage. Eager as
    FileSink is (publish never waits), so that no task per result is counted."""

    eager = True

    def __init__(self) -> None:
        self.results = 0

    async def publish(self, result: object) -> None:
        self.results += 1

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None


class BareGateway(pb_grpc.AgentGatewayServiceServicer):  # type: ignore[misc]
    """The same messages, answered without proof or delivery."""

    async def Hello(self, request: pb.AgentHelloRequest, context: object) -> pb.AgentHelloResponse:
        return pb.AgentHelloResponse(accepted=True, agent_id=request.agent_id, heartbeat_interval_sec=INTERVAL)

    async def GetConfig(self, request: pb.AgentConfigRequest, context: object) -> pb.AgentConfigResponse:
        return pb.AgentConfigResponse(config_version="bare", heartbeat_interval_sec=INTERVAL)

    async def PushStatus(self, request: pb.GatewayStatusRequest, context: object) -> pb.GatewayStatusResponse:
        return pb.GatewayStatusResponse(received=True)


def _proven_bare() -> type:
    from poller.gateway import AgentGateway

    def reading(answer):  # the gateway's unary methods are handed `read`, not the request
        async def method(self, read, context):
            return await answer(self, await read(), context)

        return method

    class ProvenBareGateway(AgentGateway):
        """Served as the gateway is (proof and admission by the interceptor), answered as bare."""

        Hello = reading(BareGateway.Hello)
        GetConfig = reading(BareGateway.GetConfig)
        PushStatus = reading(BareGateway.PushStatus)

    return ProvenBareGateway


async def serve(mode: str, certs: Path, agents: int) -> None:
    from poller.config import CheckConfig
    from poller.delivery import HandlerRegistry
    from poller.gateway import AgentGateway, GatewayBounds, PushEntry, PushRegistry, serve_gateway
    from poller.metrics import PollerMetrics
    from poller.policy import platform_admin
    from poller.trust import TrustStore
    from poller.trust.platform import local_platform_identity

    chain, key = (certs / "gateway.pem").read_bytes(), (certs / "gateway-key.pem").read_bytes()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if mode == "bare":
        server = grpc.aio.server()
        pb_grpc.add_AgentGatewayServiceServicer_to_server(BareGateway(), server)
        credentials = grpc.ssl_server_credentials(
            [(key, chain)], root_certificates=(certs / "root.pem").read_bytes(), require_client_auth=True
        )
        port = server.add_secure_port("127.0.0.1:0", credentials)
        await server.start()
        print(port, flush=True)
        await stop.wait()
        await server.stop(None)
        return
    servicer = _proven_bare() if mode == "proven" else AgentGateway
    trust = TrustStore(certs, require_client=False)
    metrics = PollerMetrics()
    registry = HandlerRegistry(timeout=5.0, metrics=metrics)
    registry.register(">", CountingSink(), policy=platform_admin(), platform=local_platform_identity(trust.client), name="count")
    checks = (CheckConfig(service_type="port", service_name="ssh", details="127.0.0.1", port=22),)
    entries = []
    for i in range(agents):
        tenant, component = agent_name(i)
        entries.append(PushEntry(component, tenant=tenant, component=component, checks=checks, interval=float(INTERVAL)))
    gateway = servicer(
        pushes=PushRegistry(entries),
        delivery=registry,
        gateway_id="bench",
        bounds=GatewayBounds(push_rate=1e9, push_burst=1_000_000_000, max_calls_per_tenant=1_000_000),
        trust=trust,
        metrics=metrics,
    )
    audit = "call" if os.environ.get("BENCH_GATEWAY_AUDIT_EVERY_CALL") else "connection"  # what a line per push costs
    started = await serve_gateway(gateway, trust, "127.0.0.1:0", chain, key, audit_accepted=audit)
    print(started.port, flush=True)
    await stop.wait()
    await started.stop(None)


async def clients(certs: Path, address: str, first: int, count: int) -> None:
    from poller.identity.names import format_edge_cn, format_spiffe_id
    from poller.pki import load_tenant_authority, new_key
    from poller.pki.authority import sign_child
    from poller.pki.build import CLIENT_AUTH, SERVER_AUTH, cert_pem, key_pem
    from poller.testing.push_agent import PushAgent

    root = (certs / "root.pem").read_bytes()
    cas = {tenant: load_tenant_authority(certs, tenant) for tenant in TENANTS}
    key = new_key()  # one key for all: the figures are the gateway's, the certificates still differ
    agents: list[PushAgent] = []
    for i in range(first, first + count):
        tenant, component = agent_name(i)
        cn = format_edge_cn(component, PARTITION, tenant)
        cert = sign_child(
            cas[tenant],
            key,
            days=2,
            subject_cn=cn,
            dns=[cn],
            uris=[format_spiffe_id("agent", tenant, PARTITION, component)],
            eku=[CLIENT_AUTH, SERVER_AUTH],
        )
        agents.append(
            PushAgent(
                address,
                cert_chain_pem=cert_pem(cert) + cert_pem(cas[tenant].cert),
                key_pem=key_pem(key),
                ca_pem=root,
                server_name="127.0.0.1",
                agent_id=component,
                partition=PARTITION,
                timeout=60.0,
            )
        )
    statuses = [[a.status("ssh", message=b'{"status":"ok","latency_ms":0.41,"port":22}')] for a in agents]
    sem = asyncio.Semaphore(200)  # handshakes in flight: 10,000 at once would only time out

    async def connect(agent: PushAgent, status: list[pb.GatewayServiceStatus]) -> None:
        async with sem:
            await agent.hello()
            await agent.push(status)

    await asyncio.gather(*(connect(a, s) for a, s in zip(agents, statuses, strict=True)))
    print("ready", flush=True)
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    holding: list[asyncio.Task[None]] = []
    while line := (await reader.readline()).decode().split():
        if line[0] == "go":
            deadline = time.monotonic() + float(line[1])

            async def loop(agent: PushAgent, status: list[pb.GatewayServiceStatus], deadline: float = deadline) -> int:
                n = 0
                while time.monotonic() < deadline:
                    await agent.push(status)
                    n += 1
                return n

            counts = await asyncio.gather(*(loop(a, s) for a, s in zip(agents, statuses, strict=True)))
            print(sum(counts), flush=True)
        elif line[0] == "hold":

            async def hold(agent: PushAgent, status: list[pb.GatewayServiceStatus]) -> None:
                while True:
                    await asyncio.sleep(INTERVAL)
                    await agent.push(status)

            holding = [asyncio.create_task(hold(a, s)) for a, s in zip(agents, statuses, strict=True)]
            print("holding", flush=True)
    for task in holding:
        task.cancel()
    await asyncio.gather(*(a.close() for a in agents))


def main() -> None:
    die_with_parent()
    raise_nofile()
    quiet_logging()
    role = sys.argv[1]
    if role == "server":
        spans = os.environ.get("BENCH_GATEWAY_SPANS") if sys.argv[2] in ("gateway", "proven") else None
        if spans:
            from bench.spans import install

            install(spans)
        profile = os.environ.get("BENCH_GATEWAY_PROFILE") if sys.argv[2] == "gateway" else None  # cProfile to that file
        if profile:
            import cProfile

            with cProfile.Profile() as prof:
                asyncio.run(serve(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])))
            prof.dump_stats(profile)
            return
        asyncio.run(serve(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])))
    else:
        asyncio.run(clients(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))


if __name__ == "__main__":
    main()
