"""`python -m bench`: every benchmark, one after the other, with their defaults.

    python -m bench [--quick]

--quick runs smaller versions (unary 2 rounds, dial 30 iterations, fleet
100,1000 agents) to check that everything works in about a minute.
Each benchmark runs in its own process so that one's memory, file
descriptors and gRPC state do not colour the next one's figures.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from bench.common import REPO, machine_info

BENCHES: list[tuple[str, list[str], list[str]]] = [
    # module, full arguments, --quick arguments
    ("bench.unary", [], ["--rounds", "2", "--calls", "3000"]),
    ("bench.dial", [], ["--iterations", "30"]),
    ("bench.fleet", [], ["--agents", "100,1000", "--cycles", "2"]),
    ("bench.assign", [], ["--agents", "10000"]),
    ("bench.handlers", [], ["--results", "5000"]),
    ("bench.nats", [], ["--results", "2000", "--rounds", "2"]),
    ("bench.plugin", [], ["--tests", "20", "--runs", "1"]),
    ("bench.status", [], ["--agents", "1000", "--repeat", "2"]),
    ("bench.gateway", [], ["--rounds", "1", "--seconds", "2", "--idle", "200", "--idle-procs", "2"]),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description="Run every benchmark (printed figures, no assertions).")
    p.add_argument("--quick", action="store_true", help="smaller runs, about a minute in all")
    args = p.parse_args(argv)
    print(machine_info(), flush=True)
    failed = []
    started = time.perf_counter()
    for module, full, quick in BENCHES:
        print(flush=True)
        t0 = time.perf_counter()
        try:
            code = subprocess.call([sys.executable, "-m", module, *(quick if args.quick else full)], cwd=REPO)
        except KeyboardInterrupt:
            print(f"\n{module} interrupted", file=sys.stderr)
            return 130
        print(f"[{module} finished in {time.perf_counter() - t0:.0f} s, exit {code}]", flush=True)
        if code:
            failed.append(module)
    print(
        f"\nall benchmarks done in {time.perf_counter() - started:.0f} s" + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
