"""One side of bench.fleet --paced, in a process of its own: N agents polled on
a paced schedule (each agent at its own slot of the interval, as the daemon
spreads them), and what that costs once the first wave is over.

    python -m bench.paced bare|daemon SPEC.json

`bare`: per agent one grpc.aio channel (the credentials and options
dial_agent uses, no proof, no interceptors), a health Check then a
GetStatus at the agent's slot, every interval: the least a poller can do.
`daemon`: the real PollerDaemon (config from parse_config, file sink in a
temporary directory, JSON logs at INFO into /dev/null, its own metrics
registry, the GC freeze after the first interval, the young-generation GC
threshold `run` sets) driven by its own loops.

After a warm-up (the first wave done and a whole interval on), one window
is measured without a profiler: process CPU, the event-loop thread's CPU,
every other thread's by name (/proc/self/task), time in the cyclic GC, polls
completed; then, with `profile`, a second window under cProfile (loop thread
only) whose time is sorted into categories (bench.fleet prints them). Prints
one JSON line.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import die_with_parent, quiet_logging, raise_nofile, rss_mib, stat_cpu
from bench.fleet import GC  # time in the cyclic GC, on the collecting thread

# Where the loop thread's time goes, by the file a function lives in (first match
# wins). cProfile's own time per function ("tottime"), so every microsecond
# counts once.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("logging", ("/logging/", "/structlog/", "poller/logs.py", "poller/audit.py")),
    ("metrics", ("/prometheus_client/", "poller/metrics.py")),
    (
        "handlers + sink writes",
        (
            "poller/delivery/registry.py",
            "poller/delivery/channels.py",
            "poller/delivery/payload.py",
            "poller/delivery/file_sink.py",
            "poller/policy.py",
            "/json/",
        ),
    ),
    ("result objects + status board", ("poller/delivery/result.py", "poller/daemon/status.py", "/dataclasses.py")),
    (
        "scheduler + worker (per-agent tasks)",
        ("poller/daemon/scheduler.py", "poller/daemon/worker.py", "poller/daemon/limiter.py", "poller/daemon/dialgate.py"),
    ),
    ("AgentClient + identity checks", ("poller/agent/", "poller/dial/", "poller/identity/", "poller/trust/")),
    ("gRPC calls (grpc.aio, cygrpc)", ("/grpc/", "cygrpc", "grpc_health")),
    ("protobuf", ("/google/protobuf/",)),
    ("event loop: timers, task steps, callbacks", ("/asyncio/", "/selectors.py", "<built-in method select", "_asyncio")),
    ("built-ins (contextvars, isinstance, ...)", ("~:",)),
)


def category(where: str) -> str:
    return next((label for label, needles in CATEGORIES if any(n in where for n in needles)), "other")


def categorise(stats: pstats.Stats) -> dict[str, float]:
    out: dict[str, float] = {}
    for (filename, _line, name), row in stats.stats.items():  # type: ignore[attr-defined]
        label = category(f"{filename}:{name}")
        out[label] = out.get(label, 0.0) + row[2]  # tottime
    return out


def thread_cpu() -> dict[str, float]:
    """CPU seconds per thread name (threads of the same name summed)."""
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        out[name] = out.get(name, 0.0) + stat_cpu(stat)
    return out


# --------------------------------------------------------------------------- the two sides


async def start_bare(spec: dict[str, Any], stop: asyncio.Event) -> tuple[Callable[[], int], list[asyncio.Task[None]]]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from bench.unary import plain_channel_for
    from poller.daemon.scheduler import first_poll_offset
    from poller.proto import monitoring_pb2 as pb
    from poller.proto import monitoring_pb2_grpc as pb_grpc
    from poller.trust.store import TrustStore

    trust = TrustStore(Path(spec["certs"]))
    interval, n, timeout = spec["interval"], len(spec["agents"]), spec["call_timeout"]
    polls = [0]

    async def agent_loop(name: str, agent: dict[str, str]) -> None:
        channel = plain_channel_for(agent["address"], trust, agent["tenant"], agent["cn"])
        health = health_pb2_grpc.HealthStub(channel)
        stub = pb_grpc.AgentServiceStub(channel)
        next_at = time.monotonic() + first_poll_offset(name, n, interval)  # the daemon's own slot
        try:
            while not stop.is_set():
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                try:
                    await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
                    await stub.GetStatus(
                        pb.StatusRequest(
                            service_name="nginx",
                            service_type="process",
                            details="nginx",
                            agent_id=agent["component"],
                            poller_id="bench-poller",
                        ),
                        timeout=timeout,
                    )
                except grpc.RpcError:
                    pass
                polls[0] += 1
                next_at += interval
        finally:
            await channel.close()

    tasks = [asyncio.get_running_loop().create_task(agent_loop(f"edge-{i + 1:04d}", a)) for i, a in enumerate(spec["agents"])]
    return (lambda: polls[0]), tasks


async def start_daemon(spec: dict[str, Any], stop: asyncio.Event) -> tuple[Callable[[], int], list[asyncio.Task[None]]]:
    from bench.fleet import fleet_config
    from poller.daemon.daemon import PollerDaemon

    settings = fleet_config(
        Path(spec["certs"]),
        spec["agents"],
        [a["address"] for a in spec["agents"]],
        len(spec["agents"]),
        spec["interval"],
        sink_dir=tempfile.mkdtemp(prefix="bench-paced-sink-"),
    )
    daemon = PollerDaemon(settings)
    from poller.cli.run import tune_gc

    tune_gc()  # as `serviceradar-poller run` does
    polls = daemon.metrics.polls

    def count() -> int:
        return int(sum(s.value for m in polls.collect() for s in m.samples if s.name.endswith("_total")))

    async def run() -> None:
        task = asyncio.get_running_loop().create_task(daemon.run(install_signals=False))
        await stop.wait()
        daemon.request_stop()
        await task

    return count, [asyncio.get_running_loop().create_task(run())]


# --------------------------------------------------------------------------- measuring


async def main_async(variant: str, spec: dict[str, Any]) -> dict[str, Any]:
    stop = asyncio.Event()
    n, interval = len(spec["agents"]), spec["interval"]
    started = time.monotonic()
    count, tasks = await (start_bare if variant == "bare" else start_daemon)(spec, stop)
    # Warm-up: the first wave over, the daemon's GC freeze done (after one interval),
    # then one more interval so every agent is in its steady slot.
    while count() < n and time.monotonic() - started < spec["warmup_limit"]:  # noqa: ASYNC110 - polls a counter
        await asyncio.sleep(0.5)
    first_wave = time.monotonic() - started
    await asyncio.sleep(max(0.0, started + 1.2 * interval - time.monotonic()) + interval)

    def window(seconds: float, profile: cProfile.Profile | None = None) -> Any:
        async def measure() -> dict[str, Any]:
            p0, c0, t0, th0 = count(), time.process_time(), time.thread_time(), thread_cpu()
            GC.take()
            w0 = time.monotonic()
            if profile is not None:
                profile.enable()
            await asyncio.sleep(seconds)
            if profile is not None:
                profile.disable()
            wall = time.monotonic() - w0
            loop_cpu = time.thread_time() - t0
            th1 = thread_cpu()
            return {
                "wall": wall,
                "polls": count() - p0,
                "cpu": time.process_time() - c0,
                "loop_cpu": loop_cpu,
                "gc": GC.take()[0],
                "threads": {k: round(v - th0.get(k, 0.0), 3) for k, v in th1.items() if v - th0.get(k, 0.0) > 0},
            }

        return measure()

    out: dict[str, Any] = {"variant": variant, "agents": n, "first_wave": first_wave}
    out["window"] = await window(spec["window"])
    out["rss_mib"] = rss_mib()
    if spec.get("profile"):
        profile = cProfile.Profile(time.thread_time)  # CPU of the loop thread, not wall
        out["profiled"] = await window(spec["window"], profile)
        stats = pstats.Stats(profile)
        if spec.get("profile_out"):  # for pstats: callers, callees
            stats.dump_stats(f"{spec['profile_out']}.{variant}")
        out["profile"] = categorise(stats)
        top = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:60]  # type: ignore[attr-defined]
        out["top"] = [[f"{Path(f).name}:{line}:{name}", round(row[2], 4)] for (f, line, name), row in top]
        ours = [kv for kv in stats.stats.items() if "/poller/" in kv[0][0]]  # type: ignore[attr-defined]
        cum = sorted(ours, key=lambda kv: -kv[1][3])[:40]
        out["cumulative"] = [[f"{Path(f).name}:{line}:{name}", round(row[3], 4)] for (f, line, name), row in cum]
    stop.set()
    if variant == "bare":
        for task in tasks:
            task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return out


def main() -> None:
    die_with_parent()
    raise_nofile()
    variant, spec_path = sys.argv[1], Path(sys.argv[2])
    if variant not in ("bare", "daemon"):
        sys.exit("usage: python -m bench.paced bare|daemon SPEC.json")
    quiet_logging()
    spec = json.loads(spec_path.read_text())
    print(json.dumps(asyncio.run(main_async(variant, spec))), flush=True)


if __name__ == "__main__":
    main()
