"""One variant of the fleet benches in a fresh process of its own: the number a
user's process sees, with nothing else's objects in its heap.

    python -m bench.fleet_side bare|client|scheduler SPEC.json

SPEC.json: {"certs": DIR, "agents": [{"address", "tenant", "component", "cn"}, ...],
"workload": "unary" | "cycles", "rounds": R, "warmup": W, "concurrency": C,
"interval": S, "gc_freeze": bool, "uvloop": bool}

Variants:
  bare       per agent one grpc.aio channel with dial_agent's credentials and
             options (root = the tenant CA, no proof, no interceptors) and an
             AgentServiceStub (+ HealthStub): the least a Python poller can do
  client     per agent dial_agent (the proof, the pinned channel) and an
             AgentClient: the project's library, as a user calls it
  scheduler  (cycles only) the daemon's Scheduler over parse_config, into a
             counting sink, cycles by run_once()

Workloads:
  unary      the first wave is the dials (200 at a time for `client`, as
             bench.unary --fleet does) and one GetStatus to every agent; then
             W - 1 warm-up rounds and R measured rounds of one concurrent
             GetStatus to every agent
  cycles     the first wave is every agent dialled, Check + GetStatus, at most
             C agents at a time (max_concurrent_polls); then R steady cycles
             the same way over the open connections

Printed, one JSON line: the first wave's wall and CPU, per round polls/s,
process CPU per poll, time in the cyclic GC (gc.callbacks, the collecting
thread) per poll; live objects per agent (len(gc.get_objects()) after a
gc.collect(), once the connections are open, minus before, over N) and RSS
per agent (VmRSS after the warm-up minus before the first dial, over N).
Options, as side flags of the parent (bare+md, client+freeze+uvloop, client+t10000):
"gc_freeze" (+freeze): after the first wave what the daemon does after its first
interval (poller.daemon.memory: gc.freeze() and malloc_trim); "uvloop" (+uvloop): run on uvloop's
event loop; "gc_gen0" (+tN): gc.set_threshold(N, ...) first; "md" (+md, bare
only): every call carries the two metadata entries of a proven call.
BENCH_SIDE_PROFILE=FILE writes a cProfile of the measured rounds to FILE.<variant>
(of the first wave with BENCH_SIDE_PROFILE_PHASE=first).
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.common import die_with_parent, quiet_logging, raise_nofile, rss_mib
from bench.fleet import GC, CountingSink


def settle() -> None:
    """What the daemon does after its first interval (freeze, and trim the heap
    where poller.daemon.memory exists: an @base tree may predate it)."""
    try:
        from poller.daemon.memory import settle_after_first_wave
    except ImportError:
        gc.collect()
        gc.freeze()
        return
    settle_after_first_wave()


def live_objects() -> int:
    gc.collect()
    return len(gc.get_objects())


async def side(variant: str, spec: dict[str, Any]) -> dict[str, Any]:
    from poller.proto import monitoring_pb2 as pb
    from poller.proto import monitoring_pb2_grpc as pb_grpc
    from poller.trust.store import TrustStore

    agents = spec["agents"]
    n = len(agents)
    workload = spec["workload"]
    certs = Path(spec["certs"])
    trust = TrustStore(certs)
    objects0, rss0 = live_objects(), rss_mib()
    traced = os.environ.get("BENCH_SIDE_TRACEMALLOC")  # FILE: Python allocations per agent after the first wave, by line
    if traced:
        import tracemalloc

        tracemalloc.start()
    profile_to = os.environ.get("BENCH_SIDE_PROFILE")  # a cProfile of the first wave or of the rounds
    profile_first = os.environ.get("BENCH_SIDE_PROFILE_PHASE") == "first"
    profiler = cProfile.Profile(time.thread_time) if profile_to else None  # the loop thread's CPU, not wall
    if profiler is not None and profile_first:
        profiler.enable()
    GC.take()
    started, cpu0 = time.perf_counter(), time.process_time()  # the first wave starts with the first channel
    closers: list[Callable[[], Awaitable[Any]]] = []
    poll: Callable[[int], Awaitable[Any]]
    cycle: Callable[[], Awaitable[int]] | None = None

    if variant == "bare":
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        from bench.unary import plain_channel_for

        channels = [plain_channel_for(a["address"], trust, a["tenant"], a["cn"]) for a in agents]
        stubs = [pb_grpc.AgentServiceStub(ch) for ch in channels]
        health = [health_pb2_grpc.HealthStub(ch) for ch in channels]
        closers += [ch.close for ch in channels]
        check = health_pb2.HealthCheckRequest(service="AgentService")
        # +md: the two metadata entries every proven call carries (what the stamp alone costs)
        stamps: list[Any] = [None] * n
        if spec.get("md"):
            import grpc

            from poller.dial.interceptor import AGENT_METADATA_KEY, TENANT_METADATA_KEY

            stamps = [grpc.aio.Metadata((TENANT_METADATA_KEY, a["tenant"]), (AGENT_METADATA_KEY, a["cn"])) for a in agents]

        async def bare_poll(i: int) -> Any:
            if workload == "cycles":
                await health[i].Check(check, timeout=10.0, metadata=stamps[i])
            request = pb.StatusRequest(
                service_name="nginx", service_type="process", agent_id=agents[i]["component"], poller_id="bench"
            )
            return await stubs[i].GetStatus(request, timeout=10.0, metadata=stamps[i])

        poll = bare_poll
    elif variant == "client":
        from poller.agent.client import AgentClient
        from poller.dial.dialer import dial_agent

        clients: list[Any] = [None] * n
        dial_sem = asyncio.Semaphore(200)

        async def dial(i: int) -> Any:
            async with dial_sem:
                conn = await dial_agent(
                    agents[i]["address"],
                    tenant=agents[i]["tenant"],
                    trust=trust,
                    component=agents[i]["component"],
                    partition="partition-1",
                )
            clients[i] = AgentClient(conn, poller_id="bench", timeout=10.0)
            closers.append(conn.close)
            return conn

        async def client_poll(i: int) -> Any:
            if clients[i] is None:
                await dial(i)
            if workload == "cycles":
                await clients[i].check_health()
            return await clients[i].get_status("nginx", "process")

        poll = client_poll
        if workload == "unary":
            await asyncio.gather(*(dial(i) for i in range(n)))
    elif variant == "scheduler":
        from bench.fleet import fleet_config
        from poller.daemon.scheduler import Scheduler

        settings = fleet_config(certs, agents, [a["address"] for a in agents], n, spec.get("interval", 30.0))
        sink = CountingSink()
        scheduler = Scheduler(settings, trust, sink.publish)
        scheduler.start(loops=False)
        started, cpu0 = time.perf_counter(), time.process_time()  # the config and Scheduler are not the wave

        async def stop_scheduler() -> None:
            await scheduler.stop(grace=5)

        closers.append(stop_scheduler)

        async def scheduler_cycle() -> int:
            await scheduler.run_once()
            outcomes = sink.take()
            return sum(v for k, v in outcomes.items() if k != "ok")

        cycle = scheduler_cycle

        async def no_poll(i: int) -> Any:  # pragma: no cover - cycles only
            raise RuntimeError("scheduler runs whole cycles")

        poll = no_poll
    else:
        raise SystemExit(f"unknown variant {variant!r}")

    limit = asyncio.Semaphore(spec.get("concurrency", 500) if workload == "cycles" else n)

    async def bounded(i: int) -> bool:
        async with limit:
            try:
                await poll(i)
            except Exception:
                return False
            return True

    async def one_round() -> int:
        if cycle is not None:
            return await cycle()
        done = await asyncio.gather(*(bounded(i) for i in range(n)))
        return done.count(False)

    failed = await one_round()
    first = {
        "first_wave": time.perf_counter() - started,
        "first_wave_cpu": time.process_time() - cpu0,
        "first_wave_gc": GC.take()[0],
    }
    if profiler is not None and profile_first:
        profiler.disable()
    if spec.get("gc_freeze"):
        settle()
    if traced:
        snapshot = tracemalloc.take_snapshot()
        tracemalloc.stop()
        stats = snapshot.statistics("lineno")
        lines = [f"total {sum(s.size for s in stats) / n:.0f} bytes per agent"]
        lines += [f"{s.size / n:8.0f} B/agent {s.count / n:6.2f} blocks/agent  {s.traceback}" for s in stats[:40]]
        Path(f"{traced}.{variant}").write_text("\n".join(lines) + "\n")  # between the phases: nothing is timed
    for _ in range(max(spec.get("warmup", 2) - 1, 0)):
        await one_round()
    rss1 = rss_mib()
    objects1 = len(gc.get_objects()) if spec.get("gc_freeze") else live_objects()
    if spec.get("gc_freeze"):
        objects1 += gc.get_freeze_count()
    rates, cpu_us, gc_us, gc_gen2 = [], [], [], []
    if profiler is not None and not profile_first:
        profiler.enable()
    for _ in range(spec["rounds"]):
        GC.take()
        t0, c0 = time.perf_counter(), time.process_time()
        failed += await one_round()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        seconds, collections = GC.take()
        rates.append(n / wall)
        cpu_us.append(cpu / n * 1e6)
        gc_us.append(seconds / n * 1e6)
        gc_gen2.append(collections[2])
    if profiler is not None and profile_to:
        profiler.disable()
        profiler.dump_stats(f"{profile_to}.{variant}")
    for close in closers:
        await close()
    return {
        "variant": variant,
        "agents": n,
        **first,
        "rates": rates,
        "cpu_us": cpu_us,
        "gc_us": gc_us,
        "gc_gen2": gc_gen2,
        "objects_per_agent": (objects1 - objects0) / n,
        "rss_kib_per_agent": (rss1 - rss0) * 1024 / n,
        "rss_mib": rss1,
        "failed": failed,
    }


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    die_with_parent()
    raise_nofile()
    quiet_logging()
    variant, spec = sys.argv[1], json.loads(Path(sys.argv[2]).read_text())
    if spec.get("gc_gen0"):
        gc.set_threshold(spec["gc_gen0"], *gc.get_threshold()[1:])
    if spec.get("uvloop"):
        try:
            import uvloop
        except ImportError:
            sys.exit("+uvloop needs uvloop in this venv (.venv/bin/pip install uvloop); the poller does not depend on it")

        result = uvloop.run(side(variant, spec))
    else:
        result = asyncio.run(side(variant, spec))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()


# --------------------------------------------------------------------------- the parent's side


def base_tree(rev: str) -> Path:
    """A directory to run a side from with the poller package of git revision
    `rev` and this tree's bench/ (python -m puts the cwd first on sys.path,
    ahead of the editable install): a detached worktree of rev under /tmp and
    a directory of two symlinks."""
    import subprocess
    import tempfile

    from bench.common import REPO

    sha = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    tree = Path(tempfile.gettempdir()) / f"bench-base-{sha}"
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), sha], cwd=REPO, capture_output=True, check=True)
    shim = Path(tempfile.gettempdir()) / f"bench-base-{sha}-run"
    shim.mkdir(exist_ok=True)
    for name, target in (("poller", tree / "poller"), ("bench", REPO / "bench")):
        link = shim / name
        if not link.exists():
            link.symlink_to(target)
    return shim


def parse_token(token: str) -> tuple[str, set[str], bool]:
    """ "client+freeze+uvloop@base" -> ("client", {"freeze", "uvloop"}, True)."""
    name, _, at = token.partition("@")
    variant, *flags = name.split("+")
    return variant, set(flags), at == "base"


def run_sides(
    tokens: list[str], repeats: int, spec: dict[str, Any], directory: Path, *, base: str = "", timeout: float = 900
) -> dict[str, list[dict[str, Any]]]:
    """Each token in a fresh process, in order, `repeats` times: results by token."""
    from bench.common import PYTHON, REPO, go_agent_binary, read_line, spawn, stop

    shim = base_tree(base) if base and any(parse_token(t)[2] for t in tokens) else None
    results: dict[str, list[dict[str, Any]]] = {t: [] for t in tokens}
    for k in range(repeats):
        for token in tokens:
            variant, flags, at_base = parse_token(token)
            path = directory / f"side-{token.replace('+', '_').replace('@', '_')}.json"
            path.write_text(
                json.dumps(
                    {
                        **spec,
                        "gc_freeze": "freeze" in flags,
                        "uvloop": "uvloop" in flags,
                        "md": "md" in flags,
                        # +t10000: the young generation's threshold (gc.set_threshold's first value)
                        "gc_gen0": next((int(f[1:]) for f in flags if f[:1] == "t" and f[1:].isdigit()), 0),
                    }
                )
            )
            if variant == "go-client":
                binary = go_agent_binary()
                if binary is None:
                    raise SystemExit("go-client needs Go (bench/go-agent/build.sh)")
                cmd, cwd = [str(binary), "client", str(path)], REPO
            else:
                cmd, cwd = [PYTHON, "-m", "bench.fleet_side", variant, str(path)], (shim if at_base and shim else REPO)
            proc = spawn(cmd, stderr=None, cwd=cwd)
            try:
                result = json.loads(read_line(proc, timeout, f"side {token}"))
            finally:
                stop(proc)
            results[token].append(result)
            print(
                f"  run {k + 1}/{repeats} {token:<22} first wave {result['first_wave']:6.2f} s, "
                f"{_med(result['rates']):7.0f} polls/s, CPU {_med(result['cpu_us']):5.0f} us/poll"
                + (f", GC {_med(result['gc_us']):4.0f} us/poll" if result.get("gc_us") else "")
                + (f", {result['objects_per_agent']:.0f} objects/agent" if result.get("objects_per_agent") else "")
                + f", RSS {result['rss_kib_per_agent']:.0f} KiB/agent"
                + (f", {result['failed']} failed" if result.get("failed") else ""),
                flush=True,
            )
    return results


def _med(values: list[float]) -> float:
    from bench.common import median

    return median(values) if values else float("nan")


def paired(results: dict[str, list[dict[str, Any]]], token: str, against: str) -> float:
    """Median over the repetitions of (token's median polls/s / against's), run k with run k."""
    ratios = [_med(a["rates"]) / _med(b["rates"]) for a, b in zip(results[token], results[against], strict=True)]
    return _med(ratios)


def side_table(results: dict[str, list[dict[str, Any]]], reference: str = "bare") -> str:
    from bench.common import table

    rows = []
    for token, runs in results.items():
        rates = [_med(r["rates"]) for r in runs]
        cpu = _med([_med(r["cpu_us"]) for r in runs])
        gc_us = [_med(r["gc_us"]) for r in runs if r.get("gc_us")]
        objects = [r["objects_per_agent"] for r in runs if r.get("objects_per_agent") is not None]
        rows.append(
            [
                token,
                f"{_med([r['first_wave'] for r in runs]):.2f}",
                f"{_med([r['first_wave'] / r['agents'] * 1000 for r in runs]):.2f}",
                f"{_med(rates):.0f}",
                f"{min(rates):.0f}-{max(rates):.0f}",
                f"{paired(results, token, reference):.3f}" if reference in results else "-",
                f"{cpu:.0f}",
                f"{_med(gc_us):.0f} ({_med(gc_us) / cpu * 100:.0f}%)" if gc_us else "-",
                f"{_med([_med(r['gc_gen2']) for r in runs]):.1f}" if gc_us else "-",
                f"{_med(objects):.0f}" if objects else "-",
                f"{_med([r['rss_kib_per_agent'] for r in runs]):.0f}",
                sum(r.get("failed", 0) for r in runs),
            ]
        )
    return table(
        rows,
        [
            "side",
            "first wave s",
            "ms/agent",
            "polls/s",
            "range",
            f"vs {reference} (paired)",
            "CPU us/poll",
            "GC us/poll",
            "gen2/round",
            "objects/agent",
            "RSS KiB/agent",
            "failed",
        ],
    )
