"""bench.gateway's servers still answer the push agents (no figure is judged here).

The bench's `proven` server borrows the gateway's servicer; when the gateway's
unary methods began to read their own request, it failed on every push and no
test said so. This runs the bench as a user does, in its smallest form, and
checks only that every server took pushes.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_every_server_of_the_gateway_bench_takes_pushes():
    argv = [sys.executable, "-m", "bench.gateway", "--agents", "4", "--procs", "1", "--seconds", "0.5", "--rounds", "1"]
    result = subprocess.run(
        [*argv, "--idle", "0", "--servers", "bare,proven,gateway"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    # The table's rows: "bare  2,095  1,715-2,221 ..." (server, pushes/s, range, ...).
    rows = dict(re.findall(r"^(bare|proven|gateway) +([\d,]+) ", result.stdout, flags=re.MULTILINE))
    assert set(rows) == {"bare", "proven", "gateway"}, result.stdout
    for server, pushes in rows.items():
        assert int(pushes.replace(",", "")) > 0, f"{server} took no pushes:\n{result.stdout}"
