"""Cost of a first dial: dial_agent(...) + one GetStatus through AgentClient,
against a plain mTLS channel (same credentials and options) + one GetStatus;
each iteration a fresh channel, closed after; sequential; alternated.

    python -m bench.dial [--iterations 100]

Then dial_agent's own time is broken down by timing the functions it calls
(wrapped in this process only; poller/ is not changed):
  collect   poller.dial.peer.fetch_peer_chain, the collecting TLS handshake
  verify    poller.trust.verify.verify_agent_chain
  pin+audit _check_pinnable (SAN vs CN) + the audit line
  channel   AgentConnection(...): credentials, grpc.aio channel, watcher task
  1st call  the first GetStatus on the new channel: gRPC's own TCP + TLS
            handshake, HTTP/2 set-up and the call
  close     AgentConnection.close()
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from bench.common import COMPONENT, TENANT, header, make_dev_certs, median, mock_agent_process, percentile, quiet_logging, table
from bench.unary import plain_channel

GOAL = 1.5


class Phases:
    """Wall and CPU seconds per named phase of the current iteration."""

    def __init__(self) -> None:
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}

    def add(self, name: str, wall: float, cpu: float) -> None:
        self.wall.setdefault(name, []).append(wall)
        self.cpu.setdefault(name, []).append(cpu)


def _timed_async(phases: Phases, name: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kw: Any) -> Any:
        w, c = time.perf_counter(), time.process_time()
        try:
            return await fn(*args, **kw)
        finally:
            phases.add(name, time.perf_counter() - w, time.process_time() - c)

    return wrapper


def _timed(phases: Phases, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kw: Any) -> Any:
        w, c = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kw)
        finally:
            phases.add(name, time.perf_counter() - w, time.process_time() - c)

    return wrapper


async def run(iterations: int) -> dict[str, float]:
    from poller import audit
    from poller.agent.client import AgentClient
    from poller.dial import dialer
    from poller.proto import monitoring_pb2 as pb
    from poller.proto import monitoring_pb2_grpc as pb_grpc
    from poller.trust.store import TrustStore

    quiet_logging()

    async def poller_dial(address: str, trust: TrustStore, expect: dict[str, str] | None = None) -> None:
        conn = await dialer.dial_agent(address, tenant=TENANT, trust=trust, **(expect or {}))
        try:
            await AgentClient(conn, poller_id="bench", timeout=5.0).get_status("ping", "icmp")
        finally:
            await conn.close()

    async def plain_dial(address: str, trust: TrustStore, target: str) -> None:
        channel = plain_channel(address, trust, target)
        try:
            request = pb.StatusRequest(service_name="ping", service_type="icmp", agent_id=COMPONENT, poller_id="bench")
            await pb_grpc.AgentServiceStub(channel).GetStatus(request, timeout=5.0)
        finally:
            await channel.close()

    async def measure(fn: Callable[[], Awaitable[None]]) -> tuple[float, float]:
        w, c = time.perf_counter(), time.process_time()
        await fn()
        return time.perf_counter() - w, time.process_time() - c

    with tempfile.TemporaryDirectory(prefix="bench-dial-") as tmp:
        certs = make_dev_certs(Path(tmp) / "certs")
        trust = TrustStore(certs)
        target = f"{COMPONENT}.partition-1.{TENANT}.serviceradar"
        with mock_agent_process(certs) as (address, _server):
            # gRPC's process-wide start-up (the first channel of a process) is
            # paid here, by neither side.
            await grpc.aio.insecure_channel("127.0.0.1:9").close()
            cold_plain = await measure(lambda: plain_dial(address, trust, target))
            cold_dial = await measure(lambda: poller_dial(address, trust))
            for _ in range(5):  # warm-up
                await plain_dial(address, trust, target)
                await poller_dial(address, trust)

            # With component and partition configured (as the daemon's config
            # usually has them) gRPC's handshake overlaps the proof.
            expect = {"component": COMPONENT, "partition": "partition-1"}
            wall: dict[str, list[float]] = {"plain": [], "dial_agent": [], "dial_agent+name": []}
            cpu: dict[str, list[float]] = {"plain": [], "dial_agent": [], "dial_agent+name": []}
            for i in range(iterations):
                order = [
                    ("plain", lambda: plain_dial(address, trust, target)),
                    ("dial_agent", lambda: poller_dial(address, trust)),
                    ("dial_agent+name", lambda: poller_dial(address, trust, expect)),
                ]
                if i % 2:
                    order.reverse()
                for name, fn in order:
                    w, c = await measure(fn)
                    wall[name].append(w)
                    cpu[name].append(c)

            # Breakdown: the same dial_agent + GetStatus + close, with its steps timed.
            phases = Phases()
            saved = (dialer.fetch_peer_chain, dialer.verify_agent_chain, dialer._check_pinnable, audit.accepted)
            dialer.fetch_peer_chain = _timed_async(phases, "collect", saved[0])
            dialer.verify_agent_chain = _timed(phases, "verify", saved[1])
            dialer._check_pinnable = _timed(phases, "pin+audit", saved[2])
            audit.accepted = _timed(phases, "pin+audit", saved[3])
            try:
                for _ in range(iterations):
                    w0, c0 = time.perf_counter(), time.process_time()
                    conn = await dialer.dial_agent(address, tenant=TENANT, trust=trust)
                    w1, c1 = time.perf_counter(), time.process_time()
                    await AgentClient(conn, poller_id="bench", timeout=5.0).get_status("ping", "icmp")
                    w2, c2 = time.perf_counter(), time.process_time()
                    await conn.close()
                    w3, c3 = time.perf_counter(), time.process_time()
                    phases.add("total", w3 - w0, c3 - c0)
                    phases.add("dial_agent()", w1 - w0, c1 - c0)
                    phases.add("1st call", w2 - w1, c2 - c1)
                    phases.add("close", w3 - w2, c3 - c2)
            finally:
                dialer.fetch_peer_chain, dialer.verify_agent_chain, dialer._check_pinnable, audit.accepted = saved
            # pin+audit was recorded twice per dial (two functions): fold into one per dial.
            for d in (phases.wall, phases.cpu):
                pa = d["pin+audit"]
                d["pin+audit"] = [a + b for a, b in zip(pa[0::2], pa[1::2], strict=False)]
            n = len(phases.wall["total"])
            for d in (phases.wall, phases.cpu):
                d["channel"] = [d["dial_agent()"][k] - d["collect"][k] - d["verify"][k] - d["pin+audit"][k] for k in range(n)]

    ms = 1000.0
    print()
    print(f"Fresh channel + one GetStatus + close, sequential, {iterations} iterations each, alternated:")
    rows = []
    labels = {
        "plain": "plain channel + GetStatus",
        "dial_agent": "dial_agent + AgentClient.get_status",
        "dial_agent+name": "dial_agent(component, partition) + get_status",
    }
    for name in ("plain", "dial_agent", "dial_agent+name"):
        rows.append(
            [
                labels[name],
                f"{median(wall[name]) * ms:.2f}",
                f"{percentile(wall[name], 90) * ms:.2f}",
                f"{median(cpu[name]) * ms:.2f}",
                f"{percentile(cpu[name], 90) * ms:.2f}",
                f"{(cold_plain if name == 'plain' else cold_dial)[0] * ms:.1f}" if name != "dial_agent+name" else "-",
            ]
        )
    print(table(rows, ["", "wall ms p50", "wall ms p90", "CPU ms p50", "CPU ms p90", "cold first, wall ms"]))
    ratio = median(wall["dial_agent"]) / median(wall["plain"])
    ratio90 = percentile(wall["dial_agent"], 90) / percentile(wall["plain"], 90)
    cpu_ratio = median(cpu["dial_agent"]) / median(cpu["plain"])
    print()
    print(
        f"ratio dial_agent/plain wall p50 = {ratio:.2f}  (goal <= {GOAL}: {'MET' if ratio <= GOAL else 'NOT MET'}); "
        f"p90 {ratio90:.2f}; CPU p50 {cpu_ratio:.2f}"
    )
    named = median(wall["dial_agent+name"]) / median(wall["plain"])
    print(
        f"ratio dial_agent(component, partition)/plain wall p50 = {named:.2f}  "
        f"(goal <= {GOAL}: {'MET' if named <= GOAL else 'NOT MET'}); "
        f"CPU p50 {median(cpu['dial_agent+name']) / median(cpu['plain']):.2f}"
    )

    print()
    print(f"dial_agent + first GetStatus + close, broken down ({iterations} iterations; medians, and share of the total median):")
    total_w, total_c = median(phases.wall["total"]), median(phases.cpu["total"])
    rows = []
    for name in ("collect", "verify", "pin+audit", "channel", "1st call", "close", "total"):
        w, c = median(phases.wall[name]), median(phases.cpu[name])
        rows.append(
            [
                name,
                f"{w * ms:.2f}",
                f"{percentile(phases.wall[name], 90) * ms:.2f}",
                f"{w / total_w * 100:.0f}%",
                f"{c * ms:.2f}",
                f"{c / total_c * 100:.0f}%",
            ]
        )
    print(table(rows, ["phase", "wall ms p50", "wall ms p90", "wall share", "CPU ms p50", "CPU share"]))
    extra = median(phases.wall["collect"]) + median(phases.wall["verify"]) + median(phases.wall["pin+audit"])
    print(
        f"the proof (collect + verify + pin/audit) adds {extra * ms:.2f} ms wall per dial; "
        f"plain channel + GetStatus is {median(wall['plain']) * ms:.2f} ms"
    )
    return {"ratio": ratio, "ratio_named": named}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.dial", description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=100, help="dials of each kind (default 100)")
    args = p.parse_args(argv)
    header("bench.dial: dial_agent + GetStatus vs plain mTLS channel + GetStatus")
    asyncio.run(run(args.iterations))


if __name__ == "__main__":
    main()
