"""The agent gateway: pushes/s and CPU per push against a bare grpc.aio server, RSS per connected agent.

    python -m bench.gateway [--agents 64] [--procs 2] [--seconds 5] [--rounds 3] [--servers bare,gateway]
                            [--idle 2000] [--idle-procs 4] [--hold 0]

Push agents (poller.testing.PushAgent: one mTLS channel each, certificates
from the tenant CAs) run in `--procs` client processes of their own
(bench.gateway_proc), against these servers, each in its own process:

  bare     a grpc.aio server with the same TLS credentials and the same
           methods, answering `received: true` without proof or delivery
  gateway  AgentGateway behind serve_gateway: TenantServerInterceptor proves
           every call, the push registry admits it, every status becomes a
           PollResult through the HandlerRegistry (to a sink that only counts)
  proven   (with --servers bare,proven,gateway) serve_gateway's server and
           proof in front of bare's answers: the share of the cost that
           proving and admitting a call takes, the rest being the gateway's

Throughput: each round lets every agent of one variant push in a closed loop
for `--seconds`, then the other's (alternately, so that drift hits both).
Printed per variant: median pushes/s; CPU per push (/proc) of the server,
of its event loop's thread (its main thread; grpc's own threads are the
rest) and of the clients; the cores they kept busy together; and the ratio
gateway/bare (goal >= 0.8). Server and clients share the cores and keep
nearly all of them busy, so pushes/s = cores busy / (server + clients' CPU
per push): the CPU per push that 0.8 of bare allows at the gateway's busy
cores is printed beside the gateway's own. The loop thread bounds a server
at one core.

Connected agents: a fresh gateway with `--idle` entries; that many agents
connect (Hello, one push) from `--idle-procs` processes and stay connected.
Printed: the gateway's RSS before and after, RSS per connected agent, the
projection to 10,000 agents (goal: within 1 GiB), and the CPU a 30 s push
interval would cost at 10,000 agents (from the CPU per push). `--hold S`
also keeps them connected S seconds and measures that CPU. Nothing is asserted.

Environment knobs for looking closer: BENCH_GATEWAY_PROFILE=FILE writes a
cProfile of the gateway server process to FILE; BENCH_GATEWAY_SPANS=FILE
writes the wall time per call of the proof's and the gateway's pieces inside
the running server (bench.spans), which a profile inflates. The gateway audits an
agent's accept once per connection and method (gateway.audit_accepted's
default); BENCH_GATEWAY_AUDIT_EVERY_CALL=1 audits every call instead.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import PARENT_ENV, PYTHON, REPO, header, median, proc_cpu, proc_rss_mib, read_line, spawn, stat_cpu, stop, table

INTERVAL = 30


def make_certs(directory: Path) -> Path:
    from poller.pki import create_dev_pki
    from poller.pki.gateway import issue_gateway_cert

    create_dev_pki(directory)
    issue_gateway_cert(directory, ips=["127.0.0.1"])
    return directory


def server(mode: str, certs: Path, agents: int) -> tuple[subprocess.Popen[str], str]:
    proc = spawn([PYTHON, "-m", "bench.gateway_proc", "server", mode, str(certs), str(agents)])
    port = int(read_line(proc, 60, f"{mode} server"))
    return proc, f"127.0.0.1:{port}"


def clients(certs: Path, address: str, total: int, procs: int) -> list[subprocess.Popen[str]]:
    per, extra = divmod(total, procs)
    started, first = [], 0
    for n in range(procs):
        count = per + (1 if n < extra else 0)
        cmd = [PYTHON, "-m", "bench.gateway_proc", "client", str(certs), address, str(first), str(count)]
        env = {**os.environ, PARENT_ENV: str(os.getpid())}
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO, env=env)
        started.append(proc)
        first += count
    for proc in started:
        line = read_line(proc, 600, "push agents")
        if line != "ready":
            raise RuntimeError(f"push agents: {line}")
    return started


def command(procs: list[subprocess.Popen[str]], line: str, timeout: float) -> list[str]:
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
    return [read_line(proc, timeout, "push agents") for proc in procs]


def end(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        if proc.stdin is not None:
            proc.stdin.close()
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


SERVERS = ("gateway", "proven")


def loop_thread_cpu(pid: int) -> float:
    """CPU seconds of a server's main thread, which runs its event loop (grpc's own threads are the others)."""
    return stat_cpu(Path(f"/proc/{pid}/task/{pid}/stat").read_text())


def throughput(certs: Path, args: argparse.Namespace) -> dict[str, float]:
    modes = ["bare", *(m for m in args.servers.split(",") if m != "bare")]
    servers = {mode: server(mode, certs, args.agents) for mode in modes}
    fleets = {mode: clients(certs, address, args.agents, args.procs) for mode, (_, address) in servers.items()}
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    cpus: dict[str, list[float]] = {mode: [] for mode in modes}
    client_cpus: dict[str, list[float]] = {mode: [] for mode in modes}
    loop_cpus: dict[str, list[float]] = {mode: [] for mode in modes}
    busy: dict[str, list[float]] = {mode: [] for mode in modes}  # cores the server and its clients kept busy
    try:
        for mode in modes:  # warm-up, each
            command(fleets[mode], f"go {min(1.0, args.seconds)}", 60)
        for _ in range(args.rounds):
            for mode in modes:
                pid = servers[mode][0].pid
                pids = [proc.pid for proc in fleets[mode]]
                cpu0, loop0, t0 = proc_cpu(pid), loop_thread_cpu(pid), time.perf_counter()
                client0 = sum(proc_cpu(p) for p in pids)
                pushes = sum(int(n) for n in command(fleets[mode], f"go {args.seconds}", args.seconds + 60))
                wall, cpu = time.perf_counter() - t0, proc_cpu(pid) - cpu0
                client = sum(proc_cpu(p) for p in pids) - client0
                rates[mode].append(pushes / wall)
                cpus[mode].append(cpu / pushes * 1e6)
                client_cpus[mode].append(client / pushes * 1e6)
                loop_cpus[mode].append((loop_thread_cpu(pid) - loop0) / pushes * 1e6)
                busy[mode].append((cpu + client) / wall)
    finally:
        for fleet in fleets.values():
            end(fleet)
        for proc, _ in servers.values():
            stop(proc)
    rows = []
    for mode in modes:
        ratio = median([r / b for r, b in zip(rates[mode], rates["bare"], strict=True)])
        rows.append(
            [
                mode,
                f"{median(rates[mode]):,.0f}",
                f"{min(rates[mode]):,.0f}-{max(rates[mode]):,.0f}",
                f"{median(cpus[mode]):,.0f}",
                f"{median(loop_cpus[mode]):,.0f}",
                f"{median(client_cpus[mode]):,.0f}",
                f"{median(busy[mode]):.2f}",
                f"{ratio:.2f}",
            ]
        )
    heads = ["server", "pushes/s", "range", "server CPU us/push", "of it, loop thread", "clients' CPU us/push", "cores busy"]
    print(table(rows, [*heads, "/ bare"]))
    result: dict[str, float] = {}
    if "gateway" in rates:
        ratios = [g / b for g, b in zip(rates["gateway"], rates["bare"], strict=True)]
        ratio = median(ratios)
        verdict = "met" if ratio >= 0.8 else "NOT met"
        print(f"\ngateway/bare throughput: {ratio:.2f} (median of {len(ratios)} rounds; goal >= 0.8: {verdict})")
        extra = median(cpus["gateway"]) - median(cpus["bare"])
        print(f"gateway CPU per push: {median(cpus['gateway']):,.0f} us; proof, admission, conversion, delivery: {extra:,.0f} us")
        # Server and clients share the cores, and a run keeps nearly all of them busy:
        # pushes/s = cores busy / (server + clients' CPU per push). What 0.8 of bare's
        # rate allows at the cores the gateway's run kept busy:
        goal, cores = 0.8 * median(rates["bare"]), median(busy["gateway"])
        spent = median(cpus["gateway"]) + median(client_cpus["gateway"])
        print(
            f"0.8 of bare is {goal:,.0f} pushes/s: at {cores:.2f} cores busy, {cores / goal * 1e6:,.0f} us of "
            f"server and clients' CPU per push (the gateway's run: {spent:,.0f})"
        )
        result = {"ratio": ratio, "cpu_us": median(cpus["gateway"])}
    if "proven" in rates:
        proof = median(cpus["proven"]) - median(cpus["bare"])
        print(f"proven: the gateway's server and proof in front of bare answers: {proof:,.0f} us per push over bare")
    return result


def connected(certs: Path, args: argparse.Namespace, cpu_us: float | None) -> None:
    proc, address = server("gateway", certs, args.idle)
    fleet: list[subprocess.Popen[str]] = []
    try:
        time.sleep(0.5)
        rss0, cpu0, t0 = proc_rss_mib(proc.pid), proc_cpu(proc.pid), time.perf_counter()
        fleet = clients(certs, address, args.idle, args.idle_procs)
        took, cpu = time.perf_counter() - t0, proc_cpu(proc.pid) - cpu0
        rss1 = proc_rss_mib(proc.pid)
        per_kib = (rss1 - rss0) * 1024 / args.idle
        projected = rss0 + per_kib * 10_000 / 1024
        print(
            table(
                [
                    ["gateway RSS, no agent", f"{rss0:,.0f} MiB"],
                    [f"gateway RSS, {args.idle:,} connected", f"{rss1:,.0f} MiB"],
                    ["RSS per connected agent", f"{per_kib:,.1f} KiB"],
                    ["projected at 10,000 agents", f"{projected:,.0f} MiB"],
                    [f"{args.idle:,} agents connected (Hello + a push)", f"{took:,.1f} s, gateway CPU {cpu:,.1f} s"],
                ],
                ["connected agents", "figure"],
            )
        )
        verdict = "met" if projected <= 1024 else "NOT met"
        print(f"\n10,000 connected agents within 1 GiB: {verdict} (projected {projected:,.0f} MiB)")
        if cpu_us is not None:
            load = 10_000 / INTERVAL * cpu_us / 1e6
            print(f"10,000 agents pushing every {INTERVAL} s: {10_000 / INTERVAL:,.0f} pushes/s = {load:.2f} of one core")
        if args.hold:
            command(fleet, "hold", 30)
            cpu0, t0 = proc_cpu(proc.pid), time.perf_counter()
            time.sleep(args.hold)
            share = (proc_cpu(proc.pid) - cpu0) / (time.perf_counter() - t0)
            rss = proc_rss_mib(proc.pid)
            print(f"held {args.hold:g} s at a {INTERVAL} s interval: gateway CPU {share:.3f} of one core, RSS {rss:,.0f} MiB")
    finally:
        end(fleet)
        stop(proc)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__.split("\n\n")[0])
    p.add_argument("--agents", type=int, default=64, help="push agents in the throughput runs (default 64)")
    p.add_argument("--procs", type=int, default=2, help="client processes for them (default 2)")
    p.add_argument("--seconds", type=float, default=5.0, help="length of one measured window (default 5)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, the servers alternately (default 3)")
    p.add_argument(
        "--servers",
        default="bare,gateway",
        help="servers to compare with bare, comma-separated: gateway, proven (default bare,gateway)",
    )
    p.add_argument("--idle", type=int, default=2000, help="connected agents for the RSS figure (default 2000; 0: skip)")
    p.add_argument("--idle-procs", type=int, default=4, help="client processes for them (default 4)")
    p.add_argument("--hold", type=float, default=0.0, help="keep them connected this many seconds and measure CPU")
    args = p.parse_args(argv)
    unknown = sorted(set(args.servers.split(",")) - {"bare", *SERVERS})
    if unknown:
        p.error(f"--servers: unknown {', '.join(unknown)} (known: bare, {', '.join(SERVERS)})")
    header(f"bench.gateway: {args.agents} push agents x {args.rounds} rounds of {args.seconds:g} s; {args.idle} connected")
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        certs = make_certs(Path(tmp) / "certs")
        result = throughput(certs, args) if args.agents else None
        if args.idle:
            print()
            connected(certs, args, result.get("cpu_us") if result else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
