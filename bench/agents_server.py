"""Many mock agents in one process: one grpc.aio server, one port per agent,
each port serving its own agent certificate (for bench.fleet).

    python -m bench.agents_server SPEC.json

SPEC.json: {"client_ca": "root.pem",
            "agents": [{"chain": "a-chain.pem", "key": "a-key.pem"}, ...]}

Every agent listens on its own 127.0.0.1 port (server.add_secure_port with
that agent's credentials, mTLS: the client must chain to client_ca). The
ports bound are printed as one JSON line on stdout, in the order of "agents":
{"ports": [...], "bind_seconds": ..., "rss_mib": ...}. Then it serves until
SIGTERM/SIGINT.

It answers what the daemon's worker asks every cycle: grpc.health.v1 Check
(SERVING) and monitoring.AgentService GetStatus (available, a small JSON
message). It records nothing, so its cost stays flat however long it runs.
"""

from __future__ import annotations

import asyncio
import gc
import json
import signal
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.common import die_with_parent, raise_nofile, rss_mib
from poller.proto import monitoring_pb2 as pb
from poller.proto import monitoring_pb2_grpc as pb_grpc

_SERVING = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
_MESSAGE = b'{"status":"ok"}'


class _Agents(pb_grpc.AgentServiceServicer):
    async def GetStatus(self, request: pb.StatusRequest, context: grpc.aio.ServicerContext) -> pb.StatusResponse:
        return pb.StatusResponse(
            available=True,
            message=_MESSAGE,
            service_name=request.service_name,
            service_type=request.service_type,
            response_time=1_000_000,
            agent_id=request.agent_id,
            poller_id=request.poller_id,
        )


class _Health(health_pb2_grpc.HealthServicer):
    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        return _SERVING


async def serve(spec_path: Path) -> None:
    spec = json.loads(spec_path.read_text())
    client_ca = Path(spec["client_ca"]).read_bytes()
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_AgentServiceServicer_to_server(_Agents(), server)
    health_pb2_grpc.add_HealthServicer_to_server(_Health(), server)
    started = time.perf_counter()
    ports = []
    for agent in spec["agents"]:
        creds = grpc.ssl_server_credentials(
            [(Path(agent["key"]).read_bytes(), Path(agent["chain"]).read_bytes())],
            root_certificates=client_ca,
            require_client_auth=True,
        )
        port = server.add_secure_port("127.0.0.1:0", creds)
        if not port:
            raise SystemExit(f"agents_server: could not bind a port for {agent['chain']} (after {len(ports)} ports)")
        ports.append(port)
    await server.start()
    bind_seconds = time.perf_counter() - started

    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    gc.freeze()
    sys.stdout.write(json.dumps({"ports": ports, "bind_seconds": round(bind_seconds, 3), "rss_mib": round(rss_mib(), 1)}) + "\n")
    sys.stdout.flush()
    try:
        await done.wait()
    finally:
        await server.stop(0)


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    die_with_parent()
    raise_nofile()
    asyncio.run(serve(Path(sys.argv[1])))


if __name__ == "__main__":
    main()
