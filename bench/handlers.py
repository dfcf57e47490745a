"""Cost of delivering results through the handler registry (printed, nothing asserted).

    python -m bench.handlers [--results 20000]

1. deliver() to one platform handler vs calling the handler directly, for a
   small status payload and a sweep-sized JSON document (the payload is
   searched for tenant claims and labels): the registry's overhead per result.
2. The file sink, durable per cycle: results per second when every cycle of
   1, 10 or 100 results ends in a flush + fsync.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from poller.daemon.results import PollResult
from poller.daemon.sinks import FileSink
from poller.handlers import HandlerRegistry
from poller.metrics import PollerMetrics
from poller.policy import platform_admin
from poller.testing import unverified_platform_identity, unverified_tenant_context


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.handlers", description=__doc__.splitlines()[0])
    p.add_argument("--results", type=int, default=20_000)
    args = p.parse_args(argv)
    asyncio.run(_registry_overhead(args.results))
    asyncio.run(_file_sink(args.results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
