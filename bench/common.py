"""Shared helpers of the benchmarks: machine info, certificates, child
processes that always die with the benchmark, CPU and memory readings."""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import math
import os
import platform
import re
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Self

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TENANT = "acme-corp"
COMPONENT = "agent-001"
PARTITION = "partition-1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- printing


def machine_info() -> str:
    import grpc

    cores = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = cores
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB RAM"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return (
        f"date {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC} | "
        f"cores {cores} (usable {usable}){' ' + model if model else ''} | {mem} | "
        f"python {platform.python_version()} ({platform.python_implementation()}) | "
        f"grpcio {grpc.__version__} | {platform.system()} {platform.release()} | "
        f"RLIMIT_NOFILE {soft}/{hard}"
    )


def header(title: str) -> None:
    line = "=" * 78
    print(line)
    print(title)
    print(machine_info())
    print(line, flush=True)


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    for n, row in enumerate(cells):
        out.append("  ".join(c.rjust(w) if n and _numeric(c) else c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


_NUMBER = re.compile(r"[-+]?\d[\d.,]*(?:%|x|-\d[\d.,]*)?")


def _numeric(text: str) -> bool:
    return bool(_NUMBER.fullmatch(text))


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[k]


# --------------------------------------------------------------------------- process set-up


def quiet_logging() -> None:
    """Log as the daemon does (structlog JSON lines, INFO) but into /dev/null:
    the rendering cost stays in the figures, the terminal stays readable."""
    from poller.logs import configure_logging

    configure_logging("json", stream=open(os.devnull, "w"))  # noqa: SIM115 - for the process lifetime


def raise_nofile() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit; returns the new (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def make_dev_certs(directory: Path) -> Path:
    """The dev PKI (root, poller, acme-corp/xyz-inc CAs, agent-001 ...) in directory."""
    from poller.pki import create_dev_pki

    create_dev_pki(directory)
    return directory


PARENT_ENV = "BENCH_PARENT_PID"


def die_with_parent() -> None:
    """In a child started by spawn(): get SIGTERM when the benchmark process
    dies, even by SIGKILL (Linux PR_SET_PDEATHSIG); exit at once if it is
    already gone. Called by the child itself (no preexec_fn: the parent may
    have threads)."""
    parent = os.environ.get(PARENT_ENV)
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if parent is not None and os.getppid() != int(parent):
        sys.exit("benchmark process gone")


def spawn(args: Sequence[str], *, stderr: int | None = subprocess.DEVNULL, cwd: Path = REPO) -> subprocess.Popen[str]:
    """A child process; the bench children call die_with_parent() first thing."""
    return subprocess.Popen(
        list(args),
        stdout=subprocess.PIPE,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=cwd,
        env={**os.environ, PARENT_ENV: str(os.getpid())},
    )


def stop(proc: subprocess.Popen[str], timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after timeout; only this one process."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout)
    if proc.stdout is not None:
        proc.stdout.close()


def read_line(proc: subprocess.Popen[str], timeout: float, what: str) -> str:
    """The next stdout line of proc, within timeout seconds."""
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise RuntimeError(f"{what}: no output within {timeout:g}s")
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"{what}: exited with code {proc.wait()} before printing")
    return line.strip()


@contextlib.contextmanager
def mock_agent_process(
    certs: Path, *, tenant: str = TENANT, component: str = COMPONENT, partition: str = PARTITION
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A MockAgent in its own process (bench.mock_agent_proc, the equivalent of
    `python -m poller mock-agent`); yields (address, process)."""
    proc = spawn([PYTHON, "-m", "bench.mock_agent_proc", str(certs), tenant, component, partition])
    try:
        port = int(read_line(proc, 30, "mock agent"))
        yield f"127.0.0.1:{port}", proc
    finally:
        stop(proc)


def stat_cpu(stat: str) -> float:
    """CPU seconds (user + system) in the text of a /proc/<pid>[/task/<tid>]/stat file."""
    fields = stat.rsplit(")", 1)[1].split()  # after the name, which may hold spaces and ')'
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a live process has used so far."""
    return stat_cpu(Path(f"/proc/{pid}/stat").read_text())


def rss_mib() -> float:
    """Current resident set size of this process (VmRSS), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def proc_rss_mib(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def max_rss_mib() -> float:
    """Peak RSS of this process so far (ru_maxrss, KiB on Linux), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Clock:
    """Wall and process-CPU time of a block: `with Clock() as c: ...; c.wall, c.cpu`."""

    wall: float
    cpu: float

    def __enter__(self) -> Self:
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._w
        self.cpu = time.process_time() - self._c


# --------------------------------------------------------------------------- the grpc-go agent

GO_AGENT_DIR = REPO / "bench" / "go-agent"


def go_agent_binary() -> Path | None:
    """bench/go-agent built (bench/go-agent/build.sh, Debian's golang-go and
    grpc-go packages), or None when Go or grpc-go is not installed."""
    proc = subprocess.run(["sh", str(GO_AGENT_DIR / "build.sh")], capture_output=True, text=True, cwd=REPO, check=False)
    if proc.returncode == 3:
        return None
    if proc.returncode:
        raise RuntimeError(f"bench/go-agent/build.sh failed ({proc.returncode}): {proc.stderr.strip()}")
    return Path(proc.stdout.strip().splitlines()[-1])


def agent_server_command(kind: str, spec: Path) -> list[str]:
    """The command serving the agents of an agents_server SPEC.json: kind
    "python" (bench.agents_server, grpc.aio) or "go" (bench/go-agent, grpc-go);
    "auto" is go when it can be built, else python."""
    if kind in ("go", "auto"):
        binary = go_agent_binary()
        if binary is not None:
            return [str(binary), str(spec)]
        if kind == "go":
            raise SystemExit(
                "--agent-server go: no Go toolchain or grpc-go "
                "(apt-get install golang-go golang-google-grpc-dev golang-google-protobuf-dev)"
            )
    return [PYTHON, "-m", "bench.agents_server", str(spec)]


def add_agent_server_args(p: Any) -> None:
    """--agent-server and --servers, for the benches that serve many agents."""
    p.add_argument(
        "--agent-server",
        choices=("auto", "go", "python"),
        default="auto",
        help="what serves the agents: go = bench/go-agent (grpc-go, built from Debian's packages), "
        "python = bench.agents_server (grpc.aio); auto (default) = go when Go and grpc-go are installed",
    )
    p.add_argument("--servers", type=int, default=0, help="agent server processes (default: 1 grpc-go process, or 2 Python ones)")


def resolve_agent_server(kind: str, servers: int) -> tuple[str, int]:
    """("go" | "python", process count) for --agent-server / --servers."""
    if kind == "auto":
        kind = "go" if go_agent_binary() is not None else "python"
    return kind, servers or (1 if kind == "go" else 2)
