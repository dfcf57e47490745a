"""Cost of delivering results through the handler registry (printed, nothing asserted).

    python -m bench.handlers [--results 20000]

1. deliver() to one platform handler vs calling the handler directly, for a
   small status payload and a sweep-sized JSON document (the payload is
   searched for tenant claims and labels): the registry's overhead per result.
2. The file sink, durable per cycle: results per second when every cycle of
   1, 10 or 100 results ends in a flush + fsync.
3. The server-side tenant interceptor: a unary call over mTLS on loopback
   with and without it (proofs are remembered per client chain and trust
   snapshot, so steady calls pay the policy and the audit line only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
import time
from pathlib import Path

import grpc

from poller.delivery.file_sink import FileSink
from poller.delivery.registry import HandlerRegistry
from poller.delivery.result import PollResult
from poller.metrics import PollerMetrics
from poller.policy import any_tenant, platform_admin
from poller.server import TenantServerInterceptor, server_credentials
from poller.testing import ForgePki, unverified_platform_identity, unverified_tenant_context
from poller.trust import TrustStore


def _result(payload: bytes) -> PollResult:
    return PollResult(
        tenant="acme-corp",
        agent="edge-1",
        address="127.0.0.1:50051",
        poller_id="bench",
        partition="default",
        kind="results",
        service_name="sweep",
        service_type="sweep",
        available=True,
        context=unverified_tenant_context("acme-corp"),
        payload=payload,
        reported_agent_id="agent-001",
    )


async def _registry_overhead(n: int) -> None:
    small = json.dumps({"status": "ok", "agent_id": "agent-001"}).encode()
    sweep = json.dumps({"hosts": [{"ip": f"10.0.{i // 256}.{i % 256}", "available": i % 3 != 0} for i in range(2000)]}).encode()
    for label, payload, count in (("status, 40 B", small, n), (f"sweep, {len(sweep) // 1024} KiB", sweep, max(n // 50, 20))):
        result = _result(payload)
        got = 0

        async def handler(r: PollResult) -> None:
            nonlocal got
            got += 1

        registry = HandlerRegistry(metrics=PollerMetrics())
        registry.register(">", handler, platform=unverified_platform_identity(local=True), policy=platform_admin(), name="h")
        t0 = time.perf_counter()
        for _ in range(count):
            await handler(result)
        direct = (time.perf_counter() - t0) / count
        t0 = time.perf_counter()
        for _ in range(count):
            await registry.deliver(result)
        through = (time.perf_counter() - t0) / count
        print(
            f"deliver() {label:<14} {through * 1e6:8.1f} us per result "
            f"(direct call {direct * 1e6:.1f} us; registry adds {(through - direct) * 1e6:.1f} us)"
        )


async def _file_sink(n: int) -> None:
    result = _result(json.dumps({"status": "ok"}).encode())
    for per_cycle in (1, 10, 100):
        with tempfile.TemporaryDirectory() as tmp:
            sink = FileSink(Path(tmp))
            cycles = max(n // per_cycle // 10, 20)
            t0 = time.perf_counter()
            for _ in range(cycles):
                for _ in range(per_cycle):
                    await sink.publish(result)
                await sink.flush()
            took = time.perf_counter() - t0
            await sink.close()
        print(
            f"file sink, fsync per cycle of {per_cycle:>3} results: {cycles * per_cycle / took:9,.0f} results/s "
            f"({took / cycles * 1e3:.2f} ms per cycle)"
        )


async def _server_call(pki: ForgePki, with_interceptor: bool, calls: int) -> tuple[float, float]:
    trust = TrustStore(pki.directory, require_client=False)
    chain, key = pki.client_identity()
    interceptors = [TenantServerInterceptor(trust, default_policy=any_tenant())] if with_interceptor else []
    server = grpc.aio.server(interceptors=interceptors)

    async def answer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b"ok"

    handler = grpc.unary_unary_rpc_method_handler(answer)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Core", {"Call": handler}),))
    port = server.add_secure_port("127.0.0.1:0", server_credentials(trust, chain, key))
    await server.start()
    agent = pki.agent("acme-corp")
    creds = grpc.ssl_channel_credentials(pki.root_pem, agent.key_pem, agent.chain_pem)
    options = [("grpc.ssl_target_name_override", "poller-1.serviceradar")]
    try:
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds, options=options) as channel:
            call = channel.unary_unary("/bench.Core/Call")
            for _ in range(50):
                await call(b"")
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(calls):
                await call(b"")
            return (time.perf_counter() - t0) / calls, (time.process_time() - c0) / calls
    finally:
        await server.stop(None)


async def _server(calls: int) -> None:
    logging.disable(logging.INFO)  # the audit lines go nowhere here; their cost is not the interceptor's
    with tempfile.TemporaryDirectory() as tmp:
        pki = ForgePki.create(Path(tmp) / "certs")
        plain = await _server_call(pki, False, calls)
        guarded = await _server_call(pki, True, calls)
    print(
        f"server unary call, mTLS loopback: {plain[0] * 1e6:.0f} us ({plain[1] * 1e6:.0f} us CPU) plain, "
        f"{guarded[0] * 1e6:.0f} us ({guarded[1] * 1e6:.0f} us CPU) with TenantServerInterceptor"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.handlers", description=__doc__.splitlines()[0])
    p.add_argument("--results", type=int, default=20_000)
    args = p.parse_args(argv)
    asyncio.run(_registry_overhead(args.results))
    asyncio.run(_file_sink(args.results))
    asyncio.run(_server(max(args.results // 10, 200)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
