"""Assignment of agents to replicas at internet scale (printed, nothing asserted).

    python -m bench.assign [--agents 100000] [--replicas 20]

Times the balanced rendezvous assignment (poller.cluster.assign) of N agents
to R replicas, and counts the agents that move when one replica leaves and
when one joins, against the ideal (N/R and N/(R+1)).
"""

from __future__ import annotations

import argparse
import time

from poller.cluster.assign import DEFAULT_BALANCE, Member, assign


def _moved(before: dict[str, str | None], after: dict[str, str | None]) -> int:
    return sum(before[name] != after[name] for name in before)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.assign", description=__doc__.splitlines()[0])
    p.add_argument("--agents", type=int, default=100_000)
    p.add_argument("--replicas", type=int, default=20)
    args = p.parse_args(argv)
    n, r = args.agents, args.replicas
    agents = {f"agent-{i:06d}": f"tenant-{i % 50}" for i in range(n)}
    members = [Member(f"poller-{i}") for i in range(r)]

    for label, balance in (("plain rendezvous", None), (f"balanced ({DEFAULT_BALANCE:g}x cap)", DEFAULT_BALANCE)):
        t0 = time.perf_counter()
        base = assign(agents, members, balance=balance)
        took = time.perf_counter() - t0
        counts = sorted(sum(o == m.name for o in base.values()) for m in members)
        left = assign(agents, members[:-1], balance=balance)
        joined = assign(agents, [*members, Member(f"poller-{r}")], balance=balance)
        print(
            f"{label:<22} {n:,} agents / {r} replicas: {took:.2f} s to compute "
            f"({took / n * 1e6:.1f} us per agent); share min {counts[0]:,} max {counts[-1]:,} (fair {n / r:,.0f})"
        )
        print(
            f"{'':<22} one replica leaves: {_moved(base, left):,} moved (ideal {n / r:,.0f}); "
            f"one joins: {_moved(base, joined):,} moved (ideal {n / (r + 1):,.0f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
