"""Cost of a first dial and of a reconnect, pinned (issue 6) against plain mTLS.

    python -m bench.dial [--iterations 100]

First dial: each iteration a fresh channel + one GetStatus + close;
sequential; the variants alternated:
  plain             a plain mTLS channel (tenant CA as root, same options) + GetStatus
  before pinning    what dial_agent did before issue 6: proof, then a channel
                    anchored at the tenant CA; with component and partition
                    configured gRPC's handshake overlapped the proof
  dial_agent        the pinned dial: proof, then gRPC's handshake pinned to
                    the proven leaf (sequential: the leaf is needed first)
The floor of a proven dial is two TLS handshakes (grpcio cannot show a client
the server's certificate), so a pinned first dial is expected near 2x plain.

Then dial_agent's own time by phase (functions wrapped in this process only):
  collect   poller.dial.peer.fetch_peer_chain, the collecting TLS handshake
  verify    poller.trust.verify.verify_agent_chain
  pin+audit _check_pinnable (SAN vs CN) + the audit line
  connect   AgentConnection.connect: gRPC's pinned TCP + TLS handshake, HTTP/2
  channel   the rest of dial_agent(): credentials, channel, subscription
  1st call  the first GetStatus on the ready channel
  close     AgentConnection.close()

Reconnect: the agent (in this process, MockAgent.restart on the same port,
same certificate) goes away and comes back; time from its restart to the
first answered GetStatus (wait_for_ready) on an existing channel: plain vs
pinned (dial_agent's channel, interceptors included) and the same pin
without interceptors. No second proof is made when the pinned handshake passes.
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
RECONNECT_GOAL = 1.1
PARTITION = "partition-1"


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


async def first_dials(iterations: int) -> dict[str, float]:
    from poller import audit
    from poller.agent.client import AgentClient
    from poller.dial import dialer
    from poller.metrics import PollerMetrics
    from poller.proto import monitoring_pb2 as pb
    from poller.proto import monitoring_pb2_grpc as pb_grpc
    from poller.trust.store import TrustStore

    metrics = PollerMetrics()
    request = pb.StatusRequest(service_name="ping", service_type="icmp", agent_id=COMPONENT, poller_id="bench")
    expect = {"component": COMPONENT, "partition": PARTITION}

    async def pinned(address: str, trust: TrustStore, named: bool = False) -> None:
        conn = await dialer.dial_agent(address, tenant=TENANT, trust=trust, metrics=metrics, **(expect if named else {}))
        try:
            await AgentClient(conn, poller_id="bench", timeout=5.0).get_status("ping", "icmp")
        finally:
            await conn.close()

    async def plain(address: str, trust: TrustStore, target: str) -> None:
        channel = plain_channel(address, trust, target)
        try:
            await pb_grpc.AgentServiceStub(channel).GetStatus(request, timeout=5.0)
        finally:
            await channel.close()

    async def before_pinning(address: str, trust: TrustStore, target: str, overlap: bool) -> None:
        """The pre-issue-6 dial: proof + a tenant-anchored channel (overlapped when named)."""
        channel = plain_channel(address, trust, target)
        try:
            if overlap:
                channel.get_state(try_to_connect=True)
            await dialer._prove(
                address,
                tenant=TENANT,
                trust=trust,
                timeout=5.0,
                metrics=metrics,
                **(expect if overlap else {"component": None, "partition": None}),
            )
            await pb_grpc.AgentServiceStub(channel).GetStatus(request, timeout=5.0)
        finally:
            await channel.close()

    async def measure(fn: Callable[[], Awaitable[None]]) -> tuple[float, float]:
        w, c = time.perf_counter(), time.process_time()
        await fn()
        return time.perf_counter() - w, time.process_time() - c

    names = ["plain", "before pinning", "before pinning+name", "dial_agent", "dial_agent+name"]
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="bench-dial-") as tmp:
        certs = make_dev_certs(Path(tmp) / "certs")
        trust = TrustStore(certs)
        target = f"{COMPONENT}.{PARTITION}.{TENANT}.serviceradar"
        with mock_agent_process(certs) as (address, _server):
            # gRPC's process-wide start-up (the first channel of a process) is
            # paid here, by neither side.
            await grpc.aio.insecure_channel("127.0.0.1:9").close()
            variants: dict[str, Callable[[], Awaitable[None]]] = {
                "plain": lambda: plain(address, trust, target),
                "before pinning": lambda: before_pinning(address, trust, target, False),
                "before pinning+name": lambda: before_pinning(address, trust, target, True),
                "dial_agent": lambda: pinned(address, trust),
                "dial_agent+name": lambda: pinned(address, trust, True),
            }
            for fn in variants.values():  # warm-up
                for _ in range(5):
                    await fn()
            for i in range(iterations):
                order = list(variants.items())
                if i % 2:
                    order.reverse()
                for name, fn in order:
                    w, c = await measure(fn)
                    wall[name].append(w)
                    cpu[name].append(c)

            # Breakdown: dial_agent + GetStatus + close, with its steps timed.
            phases = Phases()
            saved = (
                dialer.fetch_peer_chain,
                dialer.verify_agent_chain,
                dialer._check_pinnable,
                audit.accepted,
                dialer.AgentConnection.connect,
            )
            dialer.fetch_peer_chain = _timed_async(phases, "collect", saved[0])
            dialer.verify_agent_chain = _timed(phases, "verify", saved[1])
            dialer._check_pinnable = _timed(phases, "pin+audit", saved[2])
            audit.accepted = _timed(phases, "pin+audit", saved[3])
            dialer.AgentConnection.connect = _timed_async(phases, "connect", saved[4])  # type: ignore[method-assign]
            try:
                for _ in range(iterations):
                    w0, c0 = time.perf_counter(), time.process_time()
                    conn = await dialer.dial_agent(address, tenant=TENANT, trust=trust, metrics=metrics)
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
                (
                    dialer.fetch_peer_chain,
                    dialer.verify_agent_chain,
                    dialer._check_pinnable,
                    audit.accepted,
                    dialer.AgentConnection.connect,  # type: ignore[method-assign]
                ) = saved
            # pin+audit was recorded twice per dial (two functions): fold into one per dial.
            for d in (phases.wall, phases.cpu):
                pa = d["pin+audit"]
                d["pin+audit"] = [a + b for a, b in zip(pa[0::2], pa[1::2], strict=False)]
            n = len(phases.wall["total"])
            for d in (phases.wall, phases.cpu):
                d["channel"] = [
                    d["dial_agent()"][k] - d["collect"][k] - d["verify"][k] - d["pin+audit"][k] - d["connect"][k]
                    for k in range(n)
                ]

    ms = 1000.0
    print()
    print(f"Fresh channel + one GetStatus + close, sequential, {iterations} iterations each, alternated:")
    rows = []
    base_w, base_c = median(wall["plain"]), median(cpu["plain"])
    for name in names:
        rows.append(
            [
                name,
                f"{median(wall[name]) * ms:.2f}",
                f"{percentile(wall[name], 90) * ms:.2f}",
                f"{median(cpu[name]) * ms:.2f}",
                f"{median(wall[name]) / base_w:.2f}",
                f"{median(cpu[name]) / base_c:.2f}",
            ]
        )
    print(table(rows, ["", "wall ms p50", "wall ms p90", "CPU ms p50", "wall / plain", "CPU / plain"]))
    ratio = median(wall["dial_agent"]) / base_w
    named = median(wall["dial_agent+name"]) / base_w
    print()
    print(
        f"pinned dial_agent / plain wall p50 = {ratio:.2f} ({named:.2f} with component+partition); "
        f"goal <= {GOAL}: {'MET' if max(ratio, named) <= GOAL else 'NOT MET'}; the floor is two handshakes"
    )
    print(
        f"before pinning: {median(wall['before pinning']) / base_w:.2f} "
        f"({median(wall['before pinning+name']) / base_w:.2f} overlapped with the name known)"
    )

    print()
    print(f"dial_agent + first GetStatus + close, broken down ({iterations} iterations; medians, and share of the total median):")
    total_w, total_c = median(phases.wall["total"]), median(phases.cpu["total"])
    rows = []
    for name in ("collect", "verify", "pin+audit", "connect", "channel", "1st call", "close", "total"):
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
    return {"ratio": ratio, "ratio_named": named}


async def reconnects(iterations: int) -> dict[str, float]:
    from poller.dial.dialer import _CHANNEL_OPTIONS, dial_agent
    from poller.metrics import PollerMetrics
    from poller.proto import monitoring_pb2 as pb
    from poller.proto import monitoring_pb2_grpc as pb_grpc
    from poller.testing.mock_agent import MockAgent
    from poller.trust.store import TrustStore

    request = pb.StatusRequest(service_name="ping", service_type="icmp", agent_id=COMPONENT, poller_id="bench")
    times: dict[str, list[float]] = {"plain": [], "pinned": [], "pinned, no interceptors": []}
    with tempfile.TemporaryDirectory(prefix="bench-reconnect-") as tmp:
        certs = make_dev_certs(Path(tmp) / "certs")
        trust = TrustStore(certs)
        target = f"{COMPONENT}.{PARTITION}.{TENANT}.serviceradar"
        agent = MockAgent.from_certs_dir(certs, TENANT, COMPONENT, PARTITION, grace=0)
        await agent.start()
        conn = await dial_agent(agent.address, tenant=TENANT, trust=trust, metrics=PollerMetrics())
        plain = plain_channel(agent.address, trust, target)
        # The same pin without the tenant interceptors: what pinning itself costs.
        client = trust.client
        bare_pinned = grpc.aio.secure_channel(
            agent.address,
            grpc.ssl_channel_credentials(conn._proof.leaf_pem, client.key_pem, client.chain_pem),
            options=[*_CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", target)],
        )
        channels = {"plain": plain, "pinned": conn.channel, "pinned, no interceptors": bare_pinned}
        stubs = {name: pb_grpc.AgentServiceStub(ch) for name, ch in channels.items()}
        try:
            for stub in stubs.values():
                await stub.GetStatus(request, timeout=5.0)
            for i in range(iterations):
                order = list(channels) if i % 2 == 0 else list(reversed(channels))
                for name in order:
                    await agent.stop(0)
                    channel = channels[name]
                    async with asyncio.timeout(5):  # the channel notices the agent went away
                        while (state := channel.get_state()) is grpc.ChannelConnectivity.READY:
                            await channel.wait_for_state_change(state)
                    await agent.start()
                    started = time.perf_counter()
                    await stubs[name].GetStatus(request, timeout=5.0, wait_for_ready=True)
                    times[name].append(time.perf_counter() - started)
        finally:
            await plain.close()
            await bare_pinned.close()
            await conn.close()
            await agent.stop(0)
    ms = 1000.0
    print()
    print(f"Reconnect after the agent restarts with the same certificate ({iterations} each, alternated; agent in-process):")
    rows = [[name, f"{median(t) * ms:.2f}", f"{percentile(t, 90) * ms:.2f}"] for name, t in times.items()]
    print(table(rows, ["", "restart -> answered call, ms p50", "p90"]))
    ratio = median(times["pinned"]) / median(times["plain"])
    bare = median(times["pinned, no interceptors"]) / median(times["plain"])
    print(f"pinned without the interceptors / plain = {bare:.2f} (the pin itself; the rest is the interceptors' call cost)")
    verdict = "MET" if ratio <= RECONNECT_GOAL else "NOT MET"
    print(f"pinned / plain reconnect p50 = {ratio:.2f} (goal <= {RECONNECT_GOAL}: {verdict})")
    return {"reconnect_ratio": ratio}


def key_type_cost(iterations: int = 300) -> dict[str, float]:
    """What the poller's key type costs per dial: its client key signs the
    CertificateVerify of both TLS handshakes of a proven dial (the collecting
    one and gRPC's), so a dial pays two signatures with it. RSA-2048 is what
    generate-certs makes, ECDSA P-256 what `pki` makes. Verification cost
    (the agent's handshake signature, the chain) is shown for the same types."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    data = b"x" * 64
    keys: dict[str, Any] = {
        "RSA-2048": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ECDSA P-256": ec.generate_private_key(ec.SECP256R1()),
    }
    rows, figures = [], {}
    for name, key in keys.items():
        if name.startswith("RSA"):

            def sign(k: Any = key) -> bytes:
                return k.sign(data, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())  # type: ignore[no-any-return]

            def verify(sig: bytes, k: Any = key) -> None:
                k.public_key().verify(sig, data, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
        else:

            def sign(k: Any = key) -> bytes:
                return k.sign(data, ec.ECDSA(hashes.SHA256()))  # type: ignore[no-any-return]

            def verify(sig: bytes, k: Any = key) -> None:
                k.public_key().verify(sig, data, ec.ECDSA(hashes.SHA256()))

        sig = sign()
        c0 = time.process_time()
        for _ in range(iterations):
            sign()
        sign_us = (time.process_time() - c0) / iterations * 1e6
        c0 = time.process_time()
        for _ in range(iterations):
            verify(sig)
        verify_us = (time.process_time() - c0) / iterations * 1e6
        figures[name] = 2 * sign_us
        rows.append([name, f"{sign_us:.0f}", f"{verify_us:.0f}", f"{2 * sign_us / 1000:.2f}"])
    print()
    print(f"Key type of the poller's client certificate ({iterations} operations each, CPU):")
    print(table(rows, ["key", "sign us", "verify us", "poller signing CPU ms per dial (2 handshakes)"]))
    saved = (figures["RSA-2048"] - figures["ECDSA P-256"]) / 1000
    print(f"P-256 instead of RSA-2048 saves about {saved:.2f} ms of poller CPU per dial ({saved * 10:.1f} s per 10,000 dials)")
    return {"rsa_ms_per_dial": figures["RSA-2048"] / 1000, "p256_ms_per_dial": figures["ECDSA P-256"] / 1000}


def verify_off_loop(iterations: int = 2000) -> dict[str, float]:
    """Would verification off the event loop pay? Only if it ran beside the
    loop, i.e. if cryptography released the GIL while it checks signatures.
    The same chains verified on one thread, then split over two: a speed-up
    near 2x would mean a second core helps; near or below 1x, a thread only
    adds hand-offs and GIL contention."""
    import threading

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from poller.testing.forge import ForgePki
    from poller.trust.store import TrustStore
    from poller.trust.verify import parse_chain, verify_agent_chain

    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        pki = ForgePki.create(Path(tmp), tenants=("acme-corp",))
        agent = pki.agent("acme-corp", "agent-0001", "partition-1")
        ders = [c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(agent.chain_pem)]
        snapshot = TrustStore(pki.directory).snapshot

    def many(k: int) -> None:
        for _ in range(k):
            certs = parse_chain(ders)
            verify_agent_chain(certs, tenant="acme-corp", trust=snapshot, component="agent-0001", partition="partition-1")

    many(100)
    t0 = time.perf_counter()
    many(iterations)
    alone = time.perf_counter() - t0
    threads = [threading.Thread(target=many, args=(iterations // 2,)) for _ in range(2)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    two = time.perf_counter() - t0
    print()
    print(
        f"Verification (parse_chain + verify_agent_chain, ECDSA P-256 CAs) of {iterations} chains: "
        f"{alone / iterations * 1e6:.0f} us each on one thread, {two / iterations * 1e6:.0f} us each over two threads "
        f"(speed-up {alone / two:.2f}x; near or below 1x: the GIL is held while verifying, so a worker thread "
        "would not give the loop a second core, only hand-offs)"
    )
    return {"verify_us": alone / iterations * 1e6, "verify_two_threads_speedup": alone / two}


async def run(iterations: int) -> dict[str, float]:
    quiet_logging()
    figures = key_type_cost()
    figures.update(verify_off_loop())
    figures.update(await first_dials(iterations))
    figures.update(await reconnects(max(10, iterations // 2)))
    return figures


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.dial", description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=100, help="dials of each kind (default 100)")
    args = p.parse_args(argv)
    header("bench.dial: first dial (pinned vs before pinning vs plain mTLS) and reconnect")
    asyncio.run(run(args.iterations))


if __name__ == "__main__":
    main()
