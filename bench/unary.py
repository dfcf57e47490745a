"""Unary GetStatus throughput: AgentClient (the pinned channel from
dial_agent, checked and stamped per call) against a bare AgentServiceStub on a plain mTLS channel with the
same credentials and options, same mock agent (served by a separate process).

    python -m bench.unary [--calls 5000] [--concurrency 32] [--rounds 5]
    python -m bench.unary --fleet [--agents 500] [--rounds 40] [--agent-server auto|go|python] [--servers N]
                                  [--mode both|in-process|separate] [--sides bare,client,go-client] [--repeats 3]

--fleet: N agents, each with its own certificate and port, served by one
grpc-go process (bench/go-agent, when Go is installed) or by
bench.agents_server processes (not the poller's); every variant has its own
channel per agent, and a round is one concurrent GetStatus to every agent.
In-process mode: variants alternate round by round (bare, bare+md,
noop-icpt, pinned-raw, pinned-stub, client) in this process; pinned-raw is a
stub on dial_agent's grpc channel underneath the PinnedChannel (pinned
credentials, no check, no stamp). Separate mode: each side (bare, client,
go-client: a grpc-go client doing the same rounds) in a fresh process of its
own (bench.fleet_side), alternating, --repeats times: the number a user's
process sees, with GC time, live objects and RSS per agent.

Variants, run alternately (round-robin) so drift hits all of them alike:
  bare         grpc.aio.secure_channel, no interceptors, AgentServiceStub
  bare+md      the bare stub sending the two metadata entries the tenant
               interceptor adds (what the metadata alone costs)
  noop-icpt    the same bare channel plus one do-nothing unary interceptor
               (what grpc.aio's interceptor machinery alone costs)
  pinned-stub  AgentServiceStub on the channel dial_agent made (its per-call
               check and stamp, without AgentClient's own work)
  client       AgentClient.get_status (what the daemon does)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from bench.common import (
    COMPONENT,
    TENANT,
    add_agent_server_args,
    header,
    make_dev_certs,
    median,
    mock_agent_process,
    proc_cpu,
    quiet_logging,
    raise_nofile,
    resolve_agent_server,
    table,
)

GOAL = 0.95
GO_GOAL = 0.5  # the project's client against a grpc-go client on the same agents
Call = Callable[[], Awaitable[Any]]


class _NoopInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(details, request)


def plain_channel(address: str, trust: Any, target_name: str, *, interceptors: list[Any] | None = None) -> grpc.aio.Channel:
    """The channel dial_agent would make (same credentials and options), without
    the tenant interceptors, for an agent of TENANT."""
    return plain_channel_for(address, trust, TENANT, target_name, interceptors)


async def drive(call: Call, n: int, concurrency: int) -> float:
    """n calls, `concurrency` in flight; returns wall seconds."""
    remaining = n

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def run(calls: int, concurrency: int, rounds: int, warmup: int) -> dict[str, float]:
    from poller.agent.client import AgentClient
    from poller.dial.dialer import dial_agent
    from poller.dial.interceptor import AGENT_METADATA_KEY, TENANT_METADATA_KEY
    from poller.proto import monitoring_pb2 as pb
    from poller.proto import monitoring_pb2_grpc as pb_grpc
    from poller.trust.store import TrustStore

    quiet_logging()
    with tempfile.TemporaryDirectory(prefix="bench-unary-") as tmp:
        certs = make_dev_certs(Path(tmp) / "certs")
        trust = TrustStore(certs)
        with mock_agent_process(certs) as (address, server):
            conn = await dial_agent(address, tenant=TENANT, trust=trust)
            client = AgentClient(conn, poller_id="bench", timeout=5.0)
            bare = plain_channel(address, trust, conn.target_name)
            noop = plain_channel(address, trust, conn.target_name, interceptors=[_NoopInterceptor()])
            bare_stub = pb_grpc.AgentServiceStub(bare)
            noop_stub = pb_grpc.AgentServiceStub(noop)
            pinned_stub = pb_grpc.AgentServiceStub(conn.channel)

            stamp = grpc.aio.Metadata((TENANT_METADATA_KEY, TENANT), (AGENT_METADATA_KEY, conn.target_name))

            def request() -> Any:  # what AgentClient.get_status builds
                return pb.StatusRequest(service_name="ping", service_type="icmp", agent_id=COMPONENT, poller_id="bench")

            variants: dict[str, Call] = {
                "bare": lambda: bare_stub.GetStatus(request(), timeout=5.0),
                "bare+md": lambda: bare_stub.GetStatus(request(), timeout=5.0, metadata=stamp),
                "noop-icpt": lambda: noop_stub.GetStatus(request(), timeout=5.0),
                "pinned-stub": lambda: pinned_stub.GetStatus(request(), timeout=5.0),
                "client": lambda: client.get_status("ping", "icmp"),
            }
            for call in variants.values():  # connect, JIT-free warm caches, settle
                await drive(call, warmup, concurrency)

            rates: dict[str, list[float]] = {k: [] for k in variants}
            cpu: dict[str, list[float]] = {k: [] for k in variants}
            srv: dict[str, list[float]] = {k: [] for k in variants}
            for r in range(rounds):
                for name, call in variants.items():
                    c0, s0 = time.process_time(), proc_cpu(server.pid)
                    wall = await drive(call, calls, concurrency)
                    c1, s1 = time.process_time(), proc_cpu(server.pid)
                    rates[name].append(calls / wall)
                    cpu[name].append((c1 - c0) / calls * 1e6)
                    srv[name].append((s1 - s0) / calls * 1e6)
                    print(
                        f"  round {r + 1}/{rounds} {name:<12} {calls / wall:8.0f} calls/s  "
                        f"client CPU {(c1 - c0) / calls * 1e6:6.0f} us/call  "
                        f"client CPU use {(c1 - c0) / wall * 100:4.0f}%  server CPU use {(s1 - s0) / wall * 100:4.0f}%",
                        flush=True,
                    )
            await bare.close()
            await noop.close()
            await conn.close()

    base = median(rates["bare"])
    base_cpu = median(cpu["bare"])
    base_srv = median(srv["bare"])
    rows = []
    for name in variants:
        rows.append(
            [
                *_rate_cells(name, rates),
                f"{median(cpu[name]):.0f}",
                f"{median(cpu[name]) - base_cpu:+.0f}",
                f"{median(cpu[name]) / base_cpu:.2f}",
                f"{median(srv[name]):.0f}",
            ]
        )
    print()
    print(f"GetStatus, {calls} calls per run, {concurrency} in flight, {rounds} alternating rounds (medians):")
    print(
        table(
            rows,
            [
                "variant",
                "calls/s",
                "range",
                "vs bare (paired)",
                "client CPU us/call",
                "delta us",
                "CPU vs bare",
                "server CPU us/call",
            ],
        )
    )
    ratio = _paired(rates, "client")
    client_cpu, client_srv = median(cpu["client"]), median(srv["client"])
    # Both processes share the cores, so when both run flat out calls/s is
    # about cores / (client + server CPU per call); when the agents are remote
    # (production), the poller's own CPU per call is what bounds it.
    shared = (base_cpu + base_srv) / (client_cpu + client_srv)
    poller_bound = base_cpu / client_cpu
    print()
    print(
        f"ratio client/bare calls/s (median of paired rounds) = {ratio:.3f}  "
        f"(goal >= {GOAL}: {'MET' if ratio >= GOAL else 'NOT MET'})"
    )
    print(
        f"  expected from CPU, client and agent sharing {os.cpu_count()} cores: {shared:.3f}; "
        f"when the poller's CPU is the limit (remote agents): {poller_bound:.3f}"
    )
    print(
        f"client CPU per call: AgentClient {client_cpu:.0f} us vs bare {base_cpu:.0f} us "
        f"(+{client_cpu - base_cpu:.0f} us, x{client_cpu / base_cpu:.2f}); "
        f"client CPU per 1,000 calls {client_cpu / 1000:.3f} s vs {base_cpu / 1000:.3f} s"
    )
    return {"ratio": ratio, "client": median(rates["client"]), "bare": base, "cpu_ratio": client_cpu / base_cpu}


async def run_fleet(n: int, rounds: int, servers_count: int, kind: str = "python") -> dict[str, float]:
    """The fleet variant: one channel per agent and variant, rounds of one call to every agent."""
    from bench.fleet import AgentServers, make_agents
    from poller.agent.client import AgentClient
    from poller.dial.dialer import dial_agent
    from poller.dial.interceptor import AGENT_METADATA_KEY, TENANT_METADATA_KEY
    from poller.proto import monitoring_pb2 as pb
    from poller.proto import monitoring_pb2_grpc as pb_grpc
    from poller.trust.store import TrustStore

    quiet_logging()
    raise_nofile()
    with tempfile.TemporaryDirectory(prefix="bench-unary-fleet-") as tmp:
        certs, agents = make_agents(Path(tmp), n)
        servers = AgentServers(Path(tmp), certs, agents, servers_count, kind)
        servers.start()
        print(f"{n} agents served by {servers_count} {servers.server} process(es)", flush=True)
        try:
            trust = TrustStore(certs)
            sem = asyncio.Semaphore(200)

            async def dial(i: int) -> Any:
                async with sem:
                    return await dial_agent(servers.addresses[i], tenant=agents[i]["tenant"], trust=trust)

            conns = await asyncio.gather(*(dial(i) for i in range(n)))
            clients = [AgentClient(c, poller_id="bench", timeout=10.0) for c in conns]
            bare = [
                plain_channel_for(servers.addresses[i], trust, agents[i]["tenant"], c.target_name) for i, c in enumerate(conns)
            ]
            noop = [
                plain_channel_for(servers.addresses[i], trust, agents[i]["tenant"], c.target_name, [_NoopInterceptor()])
                for i, c in enumerate(conns)
            ]
            bare_stubs = [pb_grpc.AgentServiceStub(ch) for ch in bare]
            noop_stubs = [pb_grpc.AgentServiceStub(ch) for ch in noop]
            pinned_stubs = [pb_grpc.AgentServiceStub(c.channel) for c in conns]
            raw_stubs = [pb_grpc.AgentServiceStub(c.unchecked_channel) for c in conns]
            stamps = [grpc.aio.Metadata((TENANT_METADATA_KEY, a["tenant"]), (AGENT_METADATA_KEY, a["cn"])) for a in agents]

            def request(i: int) -> Any:
                return pb.StatusRequest(
                    service_name="nginx", service_type="process", agent_id=agents[i]["component"], poller_id="bench"
                )

            variants: dict[str, Callable[[int], Awaitable[Any]]] = {
                "bare": lambda i: bare_stubs[i].GetStatus(request(i), timeout=10.0),
                "bare+md": lambda i: bare_stubs[i].GetStatus(request(i), timeout=10.0, metadata=stamps[i]),
                "noop-icpt": lambda i: noop_stubs[i].GetStatus(request(i), timeout=10.0),
                "pinned-raw": lambda i: raw_stubs[i].GetStatus(request(i), timeout=10.0),
                "pinned-stub": lambda i: pinned_stubs[i].GetStatus(request(i), timeout=10.0),
                "client": lambda i: clients[i].get_status("nginx", "process"),
            }
            for call in variants.values():  # connect every channel, warm up
                for _ in range(2):
                    await asyncio.gather(*(call(i) for i in range(n)))
            rates: dict[str, list[float]] = {k: [] for k in variants}
            cpu: dict[str, list[float]] = {k: [] for k in variants}
            for _ in range(rounds):
                for name, call in variants.items():
                    c0, t0 = time.process_time(), time.perf_counter()
                    await asyncio.gather(*(call(i) for i in range(n)))
                    wall, used = time.perf_counter() - t0, time.process_time() - c0
                    rates[name].append(n / wall)
                    cpu[name].append(used / n * 1e6)
            for c in conns:
                await c.close()
            for ch in (*bare, *noop):
                await ch.close()
        finally:
            servers.stop()
    rows = []
    for name in variants:
        rows.append(
            [
                *_rate_cells(name, rates),
                f"{median(cpu[name]):.0f}",
                f"{median(cpu[name]) / median(cpu['bare']):.2f}",
            ]
        )
    print(f"\nGetStatus to {n} agents, one channel each, {rounds} alternating rounds (medians):")
    print(table(rows, ["variant", "polls/s", "range", "vs bare (paired)", "poller CPU us/call", "CPU vs bare"]))
    ratio = _paired(rates, "client")
    print(
        f"\nratio client/bare polls/s at {n} agents (median of paired rounds) = {ratio:.3f}  "
        f"(goal >= {GOAL}: {'MET' if ratio >= GOAL else 'NOT MET'})"
    )
    cpu_ratio = median(cpu["client"]) / median(cpu["bare"])
    print(
        f"poller CPU per call client/bare = {cpu_ratio:.2f} (the steadier figure on a shared machine: "
        f"polls/s also moves with whatever else runs)"
    )
    return {"ratio": ratio, "client": median(rates["client"]), "bare": median(rates["bare"]), "cpu_ratio": cpu_ratio}


def run_fleet_separate(
    n: int, rounds: int, servers_count: int, kind: str, tokens: list[str], repeats: int, base: str = ""
) -> dict[str, float]:
    """The fleet variant with each side in a fresh process of its own, alternating."""
    from bench.fleet import AgentServers, make_agents
    from bench.fleet_side import paired, run_sides, side_table

    raise_nofile()
    with tempfile.TemporaryDirectory(prefix="bench-unary-sides-") as tmp:
        certs, agents = make_agents(Path(tmp), n)
        servers = AgentServers(Path(tmp), certs, agents, servers_count, kind)
        servers.start()
        print(
            f"\nseparate processes: {n} agents served by {servers_count} {servers.server} process(es); sides "
            f"{', '.join(tokens)}, each in a fresh process, alternating, {repeats} times; "
            f"{rounds} rounds per side after 2 warm-up rounds" + (f"; @base = the poller package of {base}" if base else ""),
            flush=True,
        )
        try:
            spec = {
                "certs": str(certs),
                "agents": [{**a, "address": servers.addresses[i]} for i, a in enumerate(agents)],
                "workload": "unary",
                "rounds": rounds,
                "warmup": 2,
            }
            results = run_sides(tokens, repeats, spec, Path(tmp), base=base)
        finally:
            servers.stop()
    print(f"\nGetStatus to {n} agents, one channel each, each side in its own process (medians of {repeats} runs):")
    print(side_table(results))
    out: dict[str, float] = {}
    if "client" in results and "bare" in results:
        ratio = out["ratio"] = paired(results, "client", "bare")
        print(
            f"\nseparate-process ratio client/bare polls/s at {n} agents = {ratio:.3f} "
            f"(goal >= {GOAL}: {'MET' if ratio >= GOAL else 'NOT MET'})"
        )
    if "client" in results and "go-client" in results:
        ratio = out["go_ratio"] = paired(results, "client", "go-client")
        bare = paired(results, "bare", "go-client") if "bare" in results else float("nan")
        print(
            f"project / grpc-go client polls/s = {ratio:.3f} (goal >= {GO_GOAL}: {'MET' if ratio >= GO_GOAL else 'NOT MET'}); "
            f"bare Python / grpc-go client = {bare:.3f}"
        )
    return out


def _paired(rates: dict[str, list[float]], name: str) -> float:
    """The variant's rate over bare's, round by round (drift hits both), median."""
    return median([v / b for v, b in zip(rates[name], rates["bare"], strict=True)])


def _rate_cells(name: str, rates: dict[str, list[float]]) -> list[str]:
    """variant, median rate, range, paired ratio to bare: the first cells of a row."""
    r = rates[name]
    return [name, f"{median(r):.0f}", f"{min(r):.0f}-{max(r):.0f}", f"{_paired(rates, name):.3f}"]


def plain_channel_for(
    address: str, trust: Any, tenant: str, target_name: str, interceptors: list[Any] | None = None
) -> grpc.aio.Channel:
    """The channel dial_agent would make for an agent of `tenant` (trusting its
    tenant CA; same credentials and options), without the tenant interceptors."""
    from poller.dial.dialer import _CHANNEL_OPTIONS

    client = trust.client
    creds = grpc.ssl_channel_credentials(
        root_certificates=trust.tenant(tenant).pem, private_key=client.key_pem, certificate_chain=client.chain_pem
    )
    return grpc.aio.secure_channel(
        address,
        creds,
        options=[*_CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", target_name)],
        interceptors=interceptors,
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.unary", description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=5000, help="calls per run (default 5000)")
    p.add_argument("--concurrency", type=int, default=32, help="calls in flight (default 32)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    p.add_argument("--warmup", type=int, default=1000, help="warm-up calls per variant (default 1000)")
    p.add_argument("--fleet", action="store_true", help="the fleet variant: N agents, one channel each")
    p.add_argument("--agents", type=int, default=500, help="--fleet: agents (default 500)")
    add_agent_server_args(p)
    p.add_argument(
        "--mode",
        choices=("both", "in-process", "separate"),
        default="both",
        help="--fleet: variants alternating in this process, each side in a fresh process, or both (default)",
    )
    p.add_argument(
        "--sides",
        default="",
        help="--fleet separate: sides in order, e.g. bare,client,go-client (the default; go-client with Go only); "
        "a side may add +freeze (gc.freeze after the first wave), +uvloop, and @base (the poller package of --base)",
    )
    p.add_argument("--repeats", type=int, default=3, help="--fleet separate: times each side runs (default 3)")
    p.add_argument("--base", default="", help="--fleet separate: git revision whose poller package @base sides run")
    args = p.parse_args(argv)
    if args.fleet:
        kind, servers = resolve_agent_server(args.agent_server, args.servers)
        rounds = args.rounds if args.rounds != 5 else 40
        header(f"bench.unary --fleet: GetStatus to {args.agents} agents, AgentClient vs bare stub")
        if args.mode in ("both", "in-process"):
            asyncio.run(run_fleet(args.agents, rounds, servers, kind))
        if args.mode in ("both", "separate"):
            tokens = [t for t in args.sides.split(",") if t] or ["bare", "client"] + (["go-client"] if kind == "go" else [])
            run_fleet_separate(args.agents, rounds, servers, kind, tokens, args.repeats, args.base)
        return
    header("bench.unary: GetStatus throughput, AgentClient vs bare stub")
    asyncio.run(run(args.calls, args.concurrency, args.rounds, args.warmup))


if __name__ == "__main__":
    main()
