"""What the pytest plugin's fixtures cost: N copies of the README's isolation test.

    python -m bench.plugin [--tests 50] [--runs 3]

Each run is a fresh `pytest` process over a directory holding N tests, each
the README example (3 mock agents, a PKI, a poller, 3 results awaited); it
prints the wall time of the run, of pytest's own collection/start-up alone
(the same directory with `--collect-only`), and the time per test.
Printed figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, machine_info


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(r"<!-- plugin-example -->\n```python\n(.*?)```\n<!-- /plugin-example -->", text, re.S)
    if match is None:
        raise SystemExit("README.md has no plugin example")
    return match.group(1)


def write_suite(directory: Path, tests: int) -> None:
    example = readme_example()
    for i in range(tests):
        (directory / f"test_isolation_{i:03d}.py").write_text(example)


def timed_pytest(directory: Path, *extra: str) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "ignore::DeprecationWarning",
            *extra,
            str(directory),
        ],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    last = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
    if result.returncode != 0:
        print(result.stdout[-3000:], result.stderr[-2000:], file=sys.stderr)
    return elapsed, last


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.plugin", description=__doc__.splitlines()[0])
    p.add_argument("--tests", type=int, default=50, help="tests per run (default 50)")
    p.add_argument("--runs", type=int, default=3, help="runs (default 3)")
    args = p.parse_args(argv)
    print(machine_info())
    print(f"pytest plugin: {args.tests} copies of the README isolation test (3 agents, PKI, poller, 3 results each)")
    with tempfile.TemporaryDirectory(prefix="bench-plugin-") as tmp:
        directory = Path(tmp)
        write_suite(directory, args.tests)
        startup, _ = timed_pytest(directory, "--collect-only")
        walls: list[float] = []
        for run in range(1, args.runs + 1):
            wall, summary = timed_pytest(directory)
            walls.append(wall)
            print(f"  run {run}: {wall:5.1f} s wall  ({summary})", flush=True)
    median = statistics.median(walls)
    print(f"  pytest start-up + collection alone: {startup:.1f} s")
    print(
        f"  median {median:.1f} s for {args.tests} tests: {median / args.tests * 1000:.0f} ms per test "
        f"({(median - startup) / args.tests * 1000:.0f} ms without start-up)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
