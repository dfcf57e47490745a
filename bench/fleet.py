"""The daemon's scheduler at scale: N mock agents, each with its own
certificate (agent-0001.partition-1.acme-corp.serviceradar, ... alternating
acme-corp / xyz-inc), served by a few separate processes (bench.agents_server:
one grpc.aio server per process, one port per agent). In this process a
PollerConfig with one status check per agent (parse_config) drives
poller.daemon.scheduler.Scheduler in-process into a counting sink.

    python -m bench.fleet [--agents 100,1000,5000] [--interval 30] [--cycles 3] [--servers 2] [--gc-freeze]
    python -m bench.fleet --kill-mid-first 2000[,5000] [--cycles 3] [--fault kill|stop]
    python -m bench.fleet --paced 5000 [--interval 30] [--window 60] [--raw FILE]
    python -m bench.fleet --separate 5000 [--sides bare,scheduler] [--repeats 3] [--cycles 3] [--base REV]

--kill-mid-first N: memory under faults. A poller dials N agents and every
agents_server process is killed (SIGKILL) once a third of the first wave has
been polled; afterwards a healthy run of N agents gives the steady RSS.
The first cycle finishes against dead agents and the cycles after it run
with every agent gone; the peak RSS (sampled every 10 ms) is compared with
the healthy steady RSS (goal: within 1.2x). --fault stop freezes the agents
(SIGSTOP) instead: their ports stay open and accept TCP, but no handshake or
call is ever answered, so every dial and call runs into its deadline.

--paced N: steady CPU against a bare client at the same pacing (bench.paced,
each side in a fresh process; see there).

--separate N: the first wave and back-to-back steady cycles with each side
(bare grpc.aio channels, dial_agent + AgentClient, the Scheduler) in a fresh
process of its own (bench.fleet_side), alternating: GC time, live objects and
RSS per agent of each.

--agent-server: agents served by grpc-go (bench/go-agent; the default when Go
is installed) or by Python (bench.agents_server).

The schedule is compressed: instead of waiting out the poll interval, cycles
run back to back with scheduler.run_once() (every agent once, bounded by
max_concurrent_polls, as `run --once` does). The first cycle dials, proves
and polls every agent; the steady cycles reuse the connections. --interval
only sets the config's poll_interval (and so the per-agent cycle_timeout, 80%
of it) and is what each cycle is compared with ("fits" / "does not fit").

Every cycle of an agent is 2 RPCs (grpc.health.v1 Check, then GetStatus) and
yields 1 poll result. CPU is this (poller) process's time.process_time();
"agents CPU" is the server processes' user+system time; "loop thread" is the
CPU of the thread running the event loop (the rest of the poller's CPU is
gRPC's own event_engine threads); "GC" is time inside the cyclic garbage
collector (gc.callbacks).

--gc-freeze does what the daemon does with memory: `serviceradar-poller run`
raises the young generation's GC threshold before it starts (poller.cli.run.
tune_gc) and PollerDaemon settles after its first interval
(poller.daemon.memory: gc.freeze(), so the long-lived objects are no longer
traversed by every full collection, and malloc_trim). Here: the threshold
from the start, the settling after the first cycle. Without it the bench
measures CPython's defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    PYTHON,
    Clock,
    add_agent_server_args,
    agent_server_command,
    header,
    max_rss_mib,
    median,
    proc_cpu,
    proc_rss_mib,
    quiet_logging,
    raise_nofile,
    read_line,
    resolve_agent_server,
    rss_mib,
    spawn,
    stop,
    table,
)

TENANTS = ("acme-corp", "xyz-inc")
PARTITION = "partition-1"
RSS_GOAL_MIB = 1536.0
CYCLE_GUARD = 300.0  # seconds: a cycle still running after this is abandoned (reported)


class GcTimer:
    """CPU time spent in the cyclic garbage collector (gc.callbacks), on the
    thread that collects: process CPU would add the gRPC and handshake
    threads' work during the collection (figures before 2026-11-29 04:45 UTC
    in bench/README.md were measured that way and overstate the GC share)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.thread_time()
        else:
            self.seconds += time.thread_time() - self._started
            self.collections[info["generation"]] += 1

    def take(self) -> tuple[float, list[int]]:
        out = (self.seconds, self.collections)
        self.seconds, self.collections = 0.0, [0, 0, 0]
        return out


GC = GcTimer()


class CountingSink:
    """Counts results per outcome; keeps nothing else."""

    def __init__(self, threshold: int = 0) -> None:
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.threshold = threshold  # `reached` is set once this many results came in
        self.reached = asyncio.Event()

    async def publish(self, result: Any) -> None:
        self.outcomes["ok" if result.available else (result.reason or "unavailable")] += 1
        if self.threshold and sum(self.outcomes.values()) >= self.threshold:
            self.reached.set()

    def take(self) -> collections.Counter[str]:
        out, self.outcomes = self.outcomes, collections.Counter()
        return out


@dataclass
class Cycle:
    label: str
    wall: float
    cpu: float
    agents_cpu: float
    polls: int
    outcomes: dict[str, int]
    loop_cpu: float = 0.0
    gc_seconds: float = 0.0
    gc_collections: tuple[int, ...] = (0, 0, 0)
    finished: bool = True

    @property
    def ok(self) -> int:
        return self.outcomes.get("ok", 0)


@dataclass
class FleetRun:
    n: int
    cycles: list[Cycle] = field(default_factory=list)
    rss_after_first: float = 0.0
    rss: float = 0.0
    max_rss: float = 0.0
    fds: int = 0
    agents_rss: float = 0.0
    stop_seconds: float = 0.0
    note: str = ""

    @property
    def first(self) -> Cycle:
        return self.cycles[0]

    @property
    def steady(self) -> list[Cycle]:
        return self.cycles[1:]


# --------------------------------------------------------------------------- set-up


def make_agents(directory: Path, n: int) -> tuple[Path, list[dict[str, str]]]:
    """A certs directory (ForgePki: root, poller, one CA per tenant) and n agent
    certificates, written flat as <cn>-chain.pem / <cn>-key.pem."""
    from poller.testing.forge import ForgePki

    pki = ForgePki.create(directory / "certs", tenants=TENANTS)
    agents_dir = directory / "agents"
    agents_dir.mkdir()
    agents = []
    for i in range(1, n + 1):
        tenant = TENANTS[(i - 1) % len(TENANTS)]
        component = f"agent-{i:04d}"
        cert = pki.agent(tenant, component, PARTITION)
        chain = agents_dir / f"{cert.cn}-chain.pem"
        key = agents_dir / f"{cert.cn}-key.pem"
        chain.write_bytes(cert.chain_pem)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(cert.key_pem)
        agents.append({"tenant": tenant, "component": component, "cn": cert.cn, "chain": str(chain), "key": str(key)})
    return pki.directory, agents


class AgentServers:
    """k bench.agents_server processes sharing the agents round-robin."""

    def __init__(self, directory: Path, certs: Path, agents: list[dict[str, str]], k: int, kind: str = "python") -> None:
        self.kind = kind  # "python" (bench.agents_server), "go" (bench/go-agent) or "auto"
        self.server = "grpc.aio"  # what served them, once started
        self.procs: list[subprocess.Popen[str]] = []
        self.addresses: list[str] = [""] * len(agents)
        self.bind_seconds: list[float] = []
        self.rss_at_start: list[float] = []
        self._spec = []
        for j in range(k):
            mine = list(range(j, len(agents), k))
            spec = directory / f"agents-{j}.json"
            spec.write_text(
                json.dumps(
                    {
                        "client_ca": str(certs / "root.pem"),
                        "agents": [{"chain": agents[i]["chain"], "key": agents[i]["key"]} for i in mine],
                    }
                )
            )
            self._spec.append((spec, mine))

    def start(self) -> None:
        for spec, _ in self._spec:
            self.procs.append(spawn(agent_server_command(self.kind, spec), stderr=None))
        for proc, (_, mine) in zip(self.procs, self._spec, strict=False):
            info = json.loads(read_line(proc, 300, "agents_server"))
            self.server = info.get("server", "grpc.aio")
            for i, port in zip(mine, info["ports"], strict=True):
                self.addresses[i] = f"127.0.0.1:{port}"
            self.bind_seconds.append(info["bind_seconds"])
            self.rss_at_start.append(info["rss_mib"])

    def cpu(self) -> float:
        return sum(proc_cpu(p.pid) for p in self.procs if p.poll() is None)

    def rss(self) -> float:
        return sum(proc_rss_mib(p.pid) for p in self.procs)

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        for proc in self.procs:
            stop(proc)


def fleet_config(
    certs: Path, agents: list[dict[str, str]], addresses: list[str], n: int, interval: float, sink_dir: str | None = None
) -> Any:
    from poller.config import parse_config

    doc: dict[str, Any] = {
        "poller_id": "bench-poller",
        "partition": "bench",
        "poll_interval": f"{interval:g}s",
        "certs_dir": str(certs),
        "agents": {
            f"edge-{i + 1:04d}": {
                "address": addresses[i],
                "tenant": agents[i]["tenant"],
                "component_id": agents[i]["component"],
                "partition": PARTITION,
                "checks": [{"service_type": "process", "service_name": "nginx", "details": "nginx"}],
            }
            for i in range(n)
        },
    }
    if sink_dir is not None:
        doc["sink"] = {"type": "file", "dir": sink_dir}
    return parse_config(doc)


# --------------------------------------------------------------------------- measuring


async def measure_cycle(label: str, scheduler: Any, sink: CountingSink, servers: AgentServers) -> Cycle:
    s0 = servers.cpu()
    GC.take()
    finished = True
    t0 = time.thread_time()  # this thread runs the event loop
    with Clock() as clock:
        try:
            async with asyncio.timeout(CYCLE_GUARD):
                await scheduler.run_once()
        except TimeoutError:
            finished = False
    loop_cpu = time.thread_time() - t0
    gc_seconds, collections = GC.take()
    outcomes = dict(sink.take())
    return Cycle(
        label,
        clock.wall,
        clock.cpu,
        servers.cpu() - s0,
        sum(outcomes.values()),
        outcomes,
        loop_cpu,
        gc_seconds,
        tuple(collections),
        finished,
    )


async def run_n(
    n: int,
    certs: Path,
    agents: list[dict[str, str]],
    servers: AgentServers,
    interval: float,
    cycles: int,
    gc_freeze: bool = False,
) -> FleetRun:
    from poller.daemon.scheduler import Scheduler
    from poller.trust.store import TrustStore

    settings = fleet_config(certs, agents, servers.addresses, n, interval)
    sink = CountingSink()
    scheduler = Scheduler(settings, TrustStore(certs), sink.publish)
    scheduler.start(loops=False)
    run = FleetRun(n)
    print(
        f"\n--- {n} agents (max_concurrent_polls {settings.max_concurrent_polls}, "
        f"call_timeout {settings.call_timeout:g} s, cycle_timeout {settings.cycle_timeout:g} s)",
        flush=True,
    )
    try:
        for k in range(cycles + 1):
            label = "first" if k == 0 else f"steady {k}"
            cycle = await measure_cycle(label, scheduler, sink, servers)
            run.cycles.append(cycle)
            _print_cycle(n, cycle, interval)
            if k == 0:
                run.rss_after_first = rss_mib()
                gate = scheduler.dial_gate
                print(
                    f"  dial gate after the first wave: {gate.limit} slots (target {gate.target:g} s), "
                    f"{gate.dials} dials, {gate.slow} slower than target or timed out",
                    flush=True,
                )
                if gc_freeze:  # as the daemon after its first interval: GC freeze, heap trimmed
                    from poller.daemon.memory import settle_after_first_wave

                    settle_after_first_wave()
                    print(f"  (--gc-freeze: {gc.get_freeze_count()} objects frozen after the first cycle)", flush=True)
            if not cycle.finished:
                run.note = f"{label} cycle still running after {CYCLE_GUARD:g} s: abandoned"
                break
            if not servers.alive():
                run.note = "an agents_server process died"
                break
        run.rss = rss_mib()
        run.max_rss = max(max_rss_mib(), run.rss)
        run.fds = len(os.listdir("/proc/self/fd"))
        run.agents_rss = servers.rss()
    finally:
        started = time.perf_counter()
        await scheduler.stop(grace=5)
        run.stop_seconds = time.perf_counter() - started
        if gc_freeze:
            gc.unfreeze()
    _cycle_table(run)
    print(
        f"  memory: RSS {run.rss:.0f} MiB with {n} connections open (after first cycle {run.rss_after_first:.0f} MiB), "
        f"peak (ru_maxrss) {run.max_rss:.0f} MiB, {run.fds} fds; agents processes RSS {run.agents_rss:.0f} MiB; "
        f"closing all took {run.stop_seconds:.2f} s",
        flush=True,
    )
    if run.note:
        print(f"  NOTE: {run.note}")
    return run


def _print_cycle(n: int, c: Cycle, interval: float) -> None:
    bad = {k: v for k, v in c.outcomes.items() if k != "ok"}
    fits = "fits" if c.finished and c.wall <= interval else "does not fit"
    print(
        f"  {c.label:<9} {c.wall:7.2f} s, {c.polls / c.wall if c.wall else 0:5.0f} polls/s, "
        f"ok {c.ok}/{n}{', failed ' + json.dumps(bad) if bad else ''} | "
        f"cycle {c.wall:.2f} s vs interval {interval:g} s: {fits}",
        flush=True,
    )


def _cycle_table(run: FleetRun) -> None:
    rows = []
    for c in run.cycles:
        polls = max(c.polls, 1)
        rows.append(
            [
                c.label,
                f"{c.wall:.2f}",
                f"{c.polls / c.wall:.0f}",
                f"{2 * c.polls / c.wall:.0f}",
                f"{c.cpu:.2f}",
                f"{c.cpu / c.wall * 100:.0f}%",
                f"{c.loop_cpu / c.wall * 100:.0f}%",
                f"{c.cpu / polls * 1000:.2f}",
                f"{c.gc_seconds:.2f} ({c.gc_seconds / c.cpu * 100 if c.cpu else 0:.0f}%)",
                "/".join(str(x) for x in c.gc_collections),
                f"{c.agents_cpu:.2f}",
                f"{c.agents_cpu / polls * 1000:.2f}",
            ]
        )
    print(
        table(
            rows,
            [
                "cycle",
                "wall s",
                "polls/s",
                "RPC/s",
                "poller CPU s",
                "of 1 core",
                "loop thread",
                "CPU s/1k polls",
                "GC s",
                "GC gen0/1/2",
                "agents CPU s",
                "agents s/1k",
            ],
        )
    )


def summary(runs: list[FleetRun], interval: float) -> None:
    print()
    print("How cost grows with N (steady = median of the steady cycles; CPU = poller process):")
    rows = []
    for r in runs:
        steady = [c for c in r.steady if c.finished]
        st_wall = sorted(c.wall for c in steady)[len(steady) // 2] if steady else float("nan")
        st_max = max((c.wall for c in steady), default=float("nan"))
        st_cpu = sorted(c.cpu / max(c.polls, 1) * 1000 for c in steady)[len(steady) // 2] if steady else float("nan")
        st_srv = sorted(c.agents_cpu / max(c.polls, 1) * 1000 for c in steady)[len(steady) // 2] if steady else float("nan")
        ok = all(c.ok == r.n for c in r.cycles)
        first_fits = r.first.finished and r.first.wall <= interval
        steady_fits = bool(steady) and st_max <= interval
        rows.append(
            [
                r.n,
                f"{r.first.wall:.2f}",
                f"{r.first.cpu / r.n * 1000:.2f}",
                f"{st_wall:.2f}",
                f"{st_max:.2f}",
                f"{r.n / st_wall:.0f}" if steady else "-",
                f"{st_cpu:.2f}",
                f"{st_srv:.2f}",
                f"{r.rss:.0f}",
                f"{r.max_rss:.0f}",
                f"{(r.rss - runs[0].rss + 0.0) / max(r.n - runs[0].n, 1) * 1024:.0f}" if r is not runs[0] else "-",
                f"{sorted(c.gc_seconds / c.cpu * 100 for c in steady)[len(steady) // 2]:.0f}%" if steady else "-",
                "yes" if ok else "NO",
                "fits" if first_fits else "does not fit",
                "fits" if steady_fits else "does not fit",
            ]
        )
    print(
        table(
            rows,
            [
                "agents",
                "first s",
                "first CPU s/1k",
                "steady s",
                "steady max s",
                "polls/s",
                "CPU s/1k polls",
                "agents CPU s/1k",
                "RSS MiB",
                "peak MiB",
                "KiB/agent",
                "GC share",
                "all ok",
                f"first in {interval:g} s",
                f"steady in {interval:g} s",
            ],
        )
    )
    big = runs[-1]
    steady_max = max((c.wall for c in big.steady if c.finished), default=float("nan"))
    print()
    print(
        f"goal at {big.n} agents: every cycle inside {interval:g} s -> first {big.first.wall:.2f} s "
        f"({'fits' if big.first.finished and big.first.wall <= interval else 'does not fit'}), "
        f"steady max {steady_max:.2f} s ({'fits' if steady_max <= interval else 'does not fit'}); "
        f"RSS < {RSS_GOAL_MIB / 1024:.1f} GiB -> {big.rss:.0f} MiB now, {big.max_rss:.0f} MiB peak "
        f"({'MET' if big.max_rss < RSS_GOAL_MIB else 'NOT MET'})"
    )
    print("(KiB/agent: growth of current RSS per added agent since the smallest N)")


# --------------------------------------------------------------------------- faults


class RssSampler:
    """Peak RSS of this process, sampled by a thread every 10 ms."""

    def __init__(self) -> None:
        import threading

        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_mib())

    def __enter__(self) -> RssSampler:
        self.peak = rss_mib()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def run_fault(
    n: int,
    directory: Path,
    certs: Path,
    agents: list[dict[str, str]],
    servers_count: int,
    interval: float,
    cycles: int,
    fault: str = "kill",
    kind: str = "python",
) -> tuple[float, float, float]:
    """Agents killed (or frozen: SIGSTOP) mid first wave: (healthy steady RSS,
    peak RSS under the fault, RSS at the end), MiB."""
    import signal

    from poller.daemon.scheduler import Scheduler
    from poller.trust.store import TrustStore

    servers = AgentServers(directory, certs, agents[:n], servers_count, kind)
    servers.start()
    settings = fleet_config(certs, agents, servers.addresses, n, interval)
    sink = CountingSink(threshold=n // 3)
    scheduler = Scheduler(settings, TrustStore(certs), sink.publish)
    scheduler.start(loops=False)
    what = "killed (SIGKILL)" if fault == "kill" else "frozen (SIGSTOP: ports open, nothing answers)"
    print(f"\n--- {n} agents, every agents_server {what} once a third of the first wave is polled", flush=True)
    try:
        with RssSampler() as sampler:
            first = asyncio.get_running_loop().create_task(measure_cycle("first", scheduler, sink, servers))
            await asyncio.wait([first, asyncio.ensure_future(sink.reached.wait())], return_when=asyncio.FIRST_COMPLETED)
            polled = sum(sink.outcomes.values())
            for proc in servers.procs:
                proc.send_signal(signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
            print(f"  {what.split()[0]} the agents after {polled} of {n} results; RSS now {rss_mib():.0f} MiB", flush=True)
            cycle = await first
            _print_cycle(n, cycle, interval)
            print(f"  RSS after the first cycle {rss_mib():.0f} MiB (peak so far {sampler.peak:.0f})", flush=True)
            for k in range(1, cycles + 1):
                cycle = await measure_cycle(f"dead {k}", scheduler, sink, servers)
                _print_cycle(n, cycle, interval)
                print(f"  RSS {rss_mib():.0f} MiB (peak so far {sampler.peak:.0f})", flush=True)
        end_rss = rss_mib()
    finally:
        await scheduler.stop(grace=5)
        for proc in servers.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)  # a stopped process would not see SIGTERM
        servers.stop()
    peak = sampler.peak
    gc.collect()
    # The healthy run comes second, so the fault run starts from a fresh
    # process (the healthy figure carries whatever the fault run left behind).
    healthy_servers = AgentServers(directory, certs, agents[:n], servers_count, kind)
    healthy_servers.start()
    try:
        healthy = await run_n(n, certs, agents, healthy_servers, interval, cycles)
    finally:
        healthy_servers.stop()
    steady_rss = healthy.rss

    print(
        f"\nmemory under faults at {n} agents: healthy steady RSS {steady_rss:.0f} MiB; with the agents {what.split()[0]} mid "
        f"first wave peak {peak:.0f} MiB ({peak / steady_rss:.2f}x), at the end {end_rss:.0f} MiB "
        f"(goal peak <= 1.2x steady: {'MET' if peak <= 1.2 * steady_rss else 'NOT MET'})",
        flush=True,
    )
    return steady_rss, peak, end_rss


# --------------------------------------------------------------------------- paced


PACED_GOAL = 1.5  # daemon CPU per agent-cycle vs the bare client's


def run_paced_side(variant: str, spec_path: Path, timeout: float) -> dict[str, Any]:
    """bench.paced in a fresh process: one JSON line back."""
    proc = spawn([PYTHON, "-m", "bench.paced", variant, str(spec_path)], stderr=None)
    try:
        return dict(json.loads(read_line(proc, timeout, f"bench.paced {variant}")))
    finally:
        stop(proc)


def _per_cycle_us(seconds: float, polls: int) -> float:
    return seconds / max(polls, 1) * 1e6


def paced_report(results: list[dict[str, Any]]) -> None:
    """Per side: the unprofiled window; then the ratio; then where the CPU goes."""
    rows = []
    for r in results:
        w = r["window"]
        others = sorted(((k, v) for k, v in w["threads"].items() if v >= 0.05), key=lambda kv: -kv[1])
        rows.append(
            [
                r["variant"],
                f"{r['first_wave']:.1f}",
                f"{w['wall']:.1f}",
                w["polls"],
                f"{w['cpu']:.2f}",
                f"{w['cpu'] / w['wall'] * 100:.0f}%",
                f"{_per_cycle_us(w['cpu'], w['polls']):.0f}",
                f"{_per_cycle_us(w['loop_cpu'], w['polls']):.0f}",
                f"{_per_cycle_us(w['gc'], w['polls']):.0f}",
                f"{r['rss_mib']:.0f}",
                f"{r['rss_mib'] * 1024 / r['agents']:.0f}",
                ", ".join(f"{k} {v:.1f}" for k, v in others[:4]),
            ]
        )
    print(
        table(
            rows,
            [
                "side",
                "first wave s",
                "window s",
                "polls",
                "CPU s",
                "of 1 core",
                "CPU us/agent-cycle",
                "loop thread us",
                "GC us",
                "RSS MiB",
                "KiB/agent",
                "CPU s by thread (top 4)",
            ],
        )
    )
    by_side: dict[str, list[float]] = {}
    for r in results:
        by_side.setdefault(r["variant"], []).append(_per_cycle_us(r["window"]["cpu"], r["window"]["polls"]))
    if "bare" in by_side and "daemon" in by_side:
        bare, daemon = median(by_side["bare"]), median(by_side["daemon"])
        ratio = daemon / bare
        print(
            f"\nsteady CPU per agent-cycle (2 RPCs): daemon {daemon:.0f} us vs paced bare client {bare:.0f} us = "
            f"{ratio:.2f}x (goal <= {PACED_GOAL}: {'MET' if ratio <= PACED_GOAL else 'NOT MET'})"
        )
    profiled = [r for r in results if "profile" in r]
    if not profiled:
        return
    # cProfile's per-function own time on the loop thread, scaled onto the unprofiled
    # window's loop CPU (the profiler inflates Python-heavy work: shares, not totals).
    labels: list[str] = []
    for r in profiled:
        labels += [k for k in sorted(r["profile"], key=lambda k: -r["profile"][k]) if k not in labels]
    cols: list[dict[str, float]] = []
    for r in profiled:
        total = sum(r["profile"].values()) or 1.0
        loop_us = _per_cycle_us(r["window"]["loop_cpu"], r["window"]["polls"])
        col = {k: v / total * loop_us for k, v in r["profile"].items()}
        col["(loop thread total)"] = loop_us
        col["other threads (gRPC event engine, executors)"] = _per_cycle_us(
            r["window"]["cpu"] - r["window"]["loop_cpu"], r["window"]["polls"]
        )
        col["GC (inside the rows above)"] = _per_cycle_us(r["window"]["gc"], r["window"]["polls"])
        cols.append(col)
    names = [f"{r['variant']} us" for r in profiled]
    extra = ["(loop thread total)", "other threads (gRPC event engine, executors)", "GC (inside the rows above)"]
    rows = [[label, *(f"{c.get(label, 0.0):.0f}" for c in cols)] for label in [*labels, *extra]]
    print("\nWhere the CPU per agent-cycle goes (loop thread by cProfile category, scaled to the unprofiled window):")
    print(table(rows, ["category", *names]))
    for r in profiled:
        if r["variant"] == "daemon":
            print("\ndaemon, top functions by own CPU on the loop thread (profiled window, s):")
            for name, secs in r["top"][:15]:
                print(f"  {secs:8.3f}  {name}")


def _main_paced(n: int, args: argparse.Namespace) -> None:
    raise_nofile()
    header("bench.fleet --paced: steady CPU of the daemon against a bare client at the same pacing")
    window = args.window or 2 * args.interval
    print(
        f"{n} agents, interval {args.interval:g} s (each agent at its own slot), window {window:g} s after the "
        f"first wave and {args.interval * 2.2:g} s; sides in fresh processes, alternating: {args.paced_order}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-fleet-paced-") as tmp:
        certs, agents = make_agents(Path(tmp), n)
        servers = AgentServers(Path(tmp), certs, agents, args.servers, args.agent_server)
        try:
            servers.start()
            spec = Path(tmp) / "paced.json"
            spec.write_text(
                json.dumps(
                    {
                        "certs": str(certs),
                        "interval": args.interval,
                        "call_timeout": min(5.0, args.interval * 0.8 / 3),
                        "window": window,
                        "warmup_limit": 300,
                        "profile": not args.no_profile,
                        "profile_out": args.raw or None,
                        "agents": [{**a, "address": servers.addresses[i]} for i, a in enumerate(agents)],
                    }
                )
            )
            results = []
            for side in args.paced_order.split(","):
                s0 = servers.cpu()
                result = run_paced_side(side, spec, timeout=300 + 4 * window + 3 * args.interval)
                w = result["window"]
                print(
                    f"  {side}: first wave {result['first_wave']:.1f} s; window {w['wall']:.1f} s, {w['polls']} polls, "
                    f"CPU {w['cpu']:.2f} s ({_per_cycle_us(w['cpu'], w['polls']):.0f} us per agent-cycle); "
                    f"agents' CPU over the whole side {servers.cpu() - s0:.1f} s",
                    flush=True,
                )
                results.append(result)
        finally:
            servers.stop()
    if args.raw:
        Path(args.raw).write_text(json.dumps(results, indent=1))
    print()
    paced_report(results)


# --------------------------------------------------------------------------- main


async def run_all(
    ns: list[int],
    certs: Path,
    agents: list[dict[str, str]],
    servers: AgentServers,
    interval: float,
    cycles: int,
    gc_freeze: bool = False,
) -> list[FleetRun]:
    runs = []
    for n in ns:
        runs.append(await run_n(n, certs, agents, servers, interval, cycles, gc_freeze))
        gc.collect()
    return runs


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.splitlines()[0])
    p.add_argument("--agents", default="100,1000,5000", help="comma-separated fleet sizes (default 100,1000,5000)")
    p.add_argument("--interval", type=float, default=30.0, help="poll interval in seconds to compare cycles with (default 30)")
    p.add_argument("--cycles", type=int, default=3, help="steady cycles after the first (default 3)")
    add_agent_server_args(p)
    p.add_argument(
        "--gc-freeze",
        action="store_true",
        help="as the daemon: run's young-generation GC threshold, and gc.freeze() + malloc_trim after the first cycle",
    )
    p.add_argument("--kill-mid-first", default="", help="memory under faults at these sizes (e.g. 2000,5000)")
    p.add_argument("--fault", choices=("kill", "stop"), default="kill", help="--kill-mid-first: SIGKILL or SIGSTOP")
    p.add_argument("--paced", type=int, default=0, metavar="N", help="steady CPU: daemon vs paced bare client, N agents")
    p.add_argument("--window", type=float, default=0.0, help="--paced: measured window in seconds (default 2 intervals)")
    p.add_argument("--paced-order", default="bare,daemon,bare,daemon", help="--paced: sides, in order")
    p.add_argument("--no-profile", action="store_true", help="--paced: skip the profiled window")
    p.add_argument(
        "--separate",
        type=int,
        default=0,
        metavar="N",
        help="N agents, each side (--sides) in a fresh process, alternating --repeats times",
    )
    p.add_argument(
        "--sides",
        default="bare,scheduler",
        help="--separate: sides in order (bare, client, scheduler; +freeze, +uvloop, @base as in bench.unary)",
    )
    p.add_argument("--repeats", type=int, default=3, help="--separate: times each side runs (default 3)")
    p.add_argument("--base", default="", help="--separate: git revision whose poller package @base sides run")
    p.add_argument("--raw", default="", help="--paced: also write every side's measurements (JSON) to this file")
    args = p.parse_args(argv)
    args.agent_server, args.servers = resolve_agent_server(args.agent_server, args.servers)
    if args.gc_freeze:
        from poller.cli.run import tune_gc

        tune_gc()
    if args.paced:
        _main_paced(args.paced, args)
        return
    if args.separate:
        _main_separate(args.separate, args)
        return
    if args.kill_mid_first:
        _main_fault(sorted({int(x) for x in args.kill_mid_first.split(",") if x.strip()}), args)
        return
    ns = sorted({int(x) for x in args.agents.split(",") if x.strip()})
    if not ns or ns[0] < 1:
        p.error("--agents needs positive sizes")

    soft, hard = raise_nofile()
    header(
        "bench.fleet: the daemon's Scheduler over N agents (compressed schedule: cycles back to back)"
        + (" [--gc-freeze]" if args.gc_freeze else "")
    )
    print(f"RLIMIT_NOFILE raised to {soft}/{hard} in this process and in the agents processes")
    quiet_logging()
    servers: AgentServers | None = None
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        try:
            started = time.perf_counter()
            certs, agents = make_agents(Path(tmp), ns[-1])
            print(f"{ns[-1]} agent certificates made in {time.perf_counter() - started:.1f} s")
            servers = AgentServers(Path(tmp), certs, agents, args.servers, args.agent_server)
            started = time.perf_counter()
            servers.start()
            print(
                f"{args.servers} {servers.server} agent server process(es) bound {ns[-1]} ports "
                f"in {time.perf_counter() - started:.1f} s "
                f"(bind {', '.join(f'{s:.1f}' for s in servers.bind_seconds)} s; "
                f"RSS {', '.join(f'{s:.0f}' for s in servers.rss_at_start)} MiB)",
                flush=True,
            )
            runs = asyncio.run(run_all(ns, certs, agents, servers, args.interval, args.cycles, args.gc_freeze))
            summary(runs, args.interval)
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            raise
        finally:
            if servers is not None:
                servers.stop()


def _main_separate(n: int, args: argparse.Namespace) -> None:
    from bench.fleet_side import paired, run_sides, side_table

    raise_nofile()
    header("bench.fleet --separate: first wave and steady cycles, each side in a fresh process")
    tokens = [t for t in args.sides.split(",") if t]
    with tempfile.TemporaryDirectory(prefix="bench-fleet-sides-") as tmp:
        certs, agents = make_agents(Path(tmp), n)
        servers = AgentServers(Path(tmp), certs, agents, args.servers, args.agent_server)
        try:
            servers.start()
            print(
                f"{n} agents served by {args.servers} {servers.server} process(es); sides {', '.join(tokens)} "
                f"alternating, {args.repeats} times; per side the first wave (dial, Check + GetStatus, at most 500 "
                f"agents at a time) then {args.cycles} steady cycles"
                + (f"; @base = the poller package of {args.base}" if args.base else ""),
                flush=True,
            )
            spec = {
                "certs": str(certs),
                "agents": [{**a, "address": servers.addresses[i]} for i, a in enumerate(agents)],
                "workload": "cycles",
                "rounds": args.cycles,
                "warmup": 1,
                "concurrency": 500,
                "interval": args.interval,
            }
            results = run_sides(tokens, args.repeats, spec, Path(tmp), base=args.base, timeout=1800)
        finally:
            servers.stop()
    print(f"\nper side, medians of {args.repeats} runs (a poll = Check + GetStatus; polls/s of the steady cycles):")
    print(side_table(results, reference=tokens[0]))
    for token in tokens[1:]:
        first = median([r["first_wave"] for r in results[token]])
        print(
            f"{token} / {tokens[0]}: steady polls/s {paired(results, token, tokens[0]):.3f}; first wave {first:.1f} s "
            f"(interval {args.interval:g} s: {'fits' if first <= args.interval else 'does not fit'}), RSS "
            f"{median([r['rss_mib'] for r in results[token]]):.0f} MiB"
        )


def _main_fault(ns: list[int], args: argparse.Namespace) -> None:
    raise_nofile()
    header("bench.fleet --kill-mid-first: memory when the agents die during the first wave")
    quiet_logging()
    with tempfile.TemporaryDirectory(prefix="bench-fleet-fault-") as tmp:
        certs, agents = make_agents(Path(tmp), ns[-1])
        for n in ns:
            asyncio.run(
                run_fault(n, Path(tmp), certs, agents, args.servers, args.interval, args.cycles, args.fault, args.agent_server)
            )


if __name__ == "__main__":
    main()
