"""What the operator's view costs at fleet size (printed, nothing asserted).

    python -m bench.status [--agents 1000,5000] [--repeat 5]

For N agents (a tenth refused, a twentieth unreachable, the rest proven, two
checks each), times the parts of a request: the snapshot taken on the event
loop (the only part that holds up polling), JSON and HTML rendering (in a
worker thread), and a whole GET /status and GET / over loopback through the
daemon's OperatorServer, with the response sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import urllib.request
from statistics import median

from poller.config import AgentConfig, CheckConfig
from poller.daemon.http import OperatorServer
from poller.daemon.status import AgentState, AgentStatus, CheckStatus, StatusBoard, to_json
from poller.daemon.targets import render_targets_page
from poller.identity.reasons import Reason
from poller.metrics import PollerMetrics
from poller.testing.identity import unverified_tenant_context


def fleet(n: int) -> tuple[StatusBoard, list[AgentConfig]]:
    board = StatusBoard()
    agents = []
    now = time.time()
    for i in range(n):
        tenant = f"tenant-{i % 20}"
        checks = (CheckConfig("process", "nginx"), CheckConfig("icmp", "ping"))
        address = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:50051"
        agent = AgentConfig(name=f"agent-{i:05d}", address=address, tenant=tenant, checks=checks)
        agents.append(agent)
        outcomes = {
            (c.service_type, c.service_name): CheckStatus(c.service_name, c.service_type, "status", Reason.OK, now)
            for c in checks
        }
        common = dict(agent=agent, last_poll=now, last_latency=0.004, checks=outcomes)
        if i % 10 == 0:
            peer = {"subject": f"CN=agent-{i}.p.{tenant}.serviceradar", "issuer": "CN=tenant-x.ca.serviceradar"}
            status = AgentStatus(
                state=AgentState.REFUSED, reason=Reason.TENANT_MISMATCH, detail="issued by x", peer=peer, **common
            )
        elif i % 20 == 1:
            status = AgentStatus(state=AgentState.UNREACHABLE, reason=Reason.UNREACHABLE, **common)
        else:
            status = AgentStatus(state=AgentState.PROVEN, identity=unverified_tenant_context(tenant, f"agent-{i:05d}"), **common)
        board._records[agent.name] = status  # bench only: fill the board without polling N agents
    return board, agents


def _timed(fn: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return median(times)


async def _http(board: StatusBoard, agents: list[AgentConfig], repeat: int) -> tuple[float, int, float, int]:
    registry = PollerMetrics().registry
    server = OperatorServer(("127.0.0.1", 0), statuses=lambda t: board.snapshot(agents, t), poller_id="bench", registry=registry)
    await server.start()
    try:
        out = []
        for path in ("/status", "/"):
            url = f"http://127.0.0.1:{server.port}{path}"
            sizes, times = [], []
            for _ in range(repeat):
                t0 = time.perf_counter()
                body = await asyncio.to_thread(lambda u=url: urllib.request.urlopen(u, timeout=60).read())
                times.append(time.perf_counter() - t0)
                sizes.append(len(body))
            out += [median(times), sizes[-1]]
        return out[0], out[1], out[2], out[3]
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.status", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--agents", default="1000,5000", help="comma-separated fleet sizes")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    print("agents  snapshot (on the loop)  to_json + encode   html      GET /status (size)      GET / (size)")
    for n in (int(x) for x in args.agents.split(",")):
        board, agents = fleet(n)
        snap = _timed(lambda b=board, a=agents: b.snapshot(a), args.repeat)  # type: ignore[misc]
        statuses = board.snapshot(agents)
        enc = _timed(lambda s=statuses: json.dumps(to_json(s), separators=(",", ":")), args.repeat)  # type: ignore[misc]
        docs = to_json(statuses)
        page = _timed(lambda d=docs: render_targets_page(d, poller_id="bench"), args.repeat)  # type: ignore[misc]
        get_status, status_size, get_page, page_size = asyncio.run(_http(board, agents, args.repeat))
        print(
            f"{n:>6}  {snap * 1000:>18.1f} ms  {enc * 1000:>13.1f} ms  {page * 1000:>6.1f} ms  "
            f"{get_status * 1000:>7.1f} ms ({status_size / 1e6:.1f} MB)  {get_page * 1000:>7.1f} ms ({page_size / 1e6:.1f} MB)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
