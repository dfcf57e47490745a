"""`serviceradar-poller mock-agent`: run a mock agent until SIGINT/SIGTERM.

The first line of stdout is the port it listens on (just the number), so a
test or script can start it with `--listen 127.0.0.1:0` and read the port;
a human line goes to stderr. Unreadable certificates exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from poller.address import split_host_port
from poller.cli.common import EXIT_OK, EXIT_REFUSED, EXIT_USAGE
from poller.identity.names import InvalidName, format_edge_cn
from poller.identity.reasons import InvalidArgument
from poller.trust.layout import CertsLayout

if TYPE_CHECKING:
    from poller.testing.mock_agent import MockAgent


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "mock-agent",
        help="run a mock ServiceRadar agent (mTLS gRPC server) for tests",
        description="Run a mock agent serving monitoring.AgentService and grpc.health.v1 "
        "over mTLS until SIGINT/SIGTERM. Prints the port as the first line of stdout. "
        "Its identity comes from --certs/--tenant/--component/--partition, or from an onboarding --package.",
    )
    p.add_argument(
        "--package",
        type=Path,
        metavar="FILE.tar.gz",
        help="serve the identity of an onboarding package (checked first; against --certs when given)",
    )
    p.add_argument("--certs", type=Path, metavar="DIR", help="certs directory (required without --package)")
    p.add_argument("--tenant", metavar="SLUG", help="required without --package")
    p.add_argument("--component", metavar="ID", help="component id, e.g. agent-001 (required without --package)")
    p.add_argument("--partition", metavar="ID", help="partition id, e.g. partition-1 (required without --package)")
    p.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT", help="default 127.0.0.1:0")
    p.add_argument("--cert", type=Path, metavar="FILE", help="serve this certificate (chain) instead")
    p.add_argument("--key", type=Path, metavar="FILE", help="private key for --cert")
    p.add_argument("--client-ca", type=Path, metavar="FILE", help="client CA instead of <certs>/root.pem")
    p.add_argument("--agent-id", metavar="ID", help="agent_id put in payloads (default: the component id)")
    p.add_argument(
        "--platform-clients-only",
        action="store_true",
        help="refuse clients whose certificate a tenant CA issued (agents polling agents)",
    )
    p.add_argument("--status-message", metavar="TEXT", help="GetStatus message payload")
    p.add_argument("--stream-chunks", type=int, metavar="N", help="chunks per StreamResults")
    p.add_argument("--delay", type=float, metavar="SECONDS", help="delay before every answer")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here so that other commands' --help does not load grpc.
    from poller.logs import configure_logging
    from poller.testing.mock_agent import MockAgent, MockAgentError

    configure_logging("auto")  # stderr: stdout carries only the port

    if (args.cert is None) != (args.key is None):
        print("error: --cert and --key go together", file=sys.stderr)
        return EXIT_USAGE
    if args.stream_chunks is not None and args.stream_chunks < 1:
        print("error: --stream-chunks must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    if args.delay is not None and args.delay < 0:
        print("error: --delay must not be negative", file=sys.stderr)
        return EXIT_USAGE
    if args.package is not None:
        if args.cert is not None or args.tenant or args.component or args.partition:
            print("error: --package brings its own identity; leave out --cert/--tenant/--component/--partition", file=sys.stderr)
            return EXIT_USAGE
        return _run_package(args)
    identity = (
        ("--certs", args.certs),
        ("--tenant", args.tenant),
        ("--component", args.component),
        ("--partition", args.partition),
    )
    missing = [flag for flag, value in identity if not value]
    if missing:
        print(f"error: mock-agent needs {', '.join(missing)} (or --package)", file=sys.stderr)
        return EXIT_USAGE
    try:
        cn = format_edge_cn(args.component, args.partition, args.tenant)
        host, port = split_host_port(args.listen, listen=True)
    except InvalidName as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except InvalidArgument as exc:
        print(f"error: --listen: {exc}", file=sys.stderr)
        return EXIT_USAGE

    kw = _agent_options(args, host, port, args.component)
    try:
        if args.cert is not None:
            agent = MockAgent(
                cert_chain_pem=args.cert.read_bytes(),
                key_pem=args.key.read_bytes(),
                client_ca_pem=(args.client_ca or CertsLayout(args.certs).root_ca).read_bytes(),
                **kw,
            )
        else:
            agent = MockAgent.from_certs_dir(
                args.certs, args.tenant, args.component, args.partition, client_ca=args.client_ca, **kw
            )
    except (OSError, MockAgentError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    try:
        return asyncio.run(_serve(agent, agent.cn or cn))
    except MockAgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _agent_options(args: argparse.Namespace, host: str, port: int, component: str) -> dict[str, Any]:
    from poller.testing.mock_agent import AgentBehaviour

    behaviour = AgentBehaviour()
    if args.status_message is not None:
        behaviour.message = args.status_message.encode()
    if args.stream_chunks is not None:
        behaviour.stream_chunks = args.stream_chunks
    if args.delay is not None:
        behaviour.delay = args.delay
    return dict(
        behaviour=behaviour,
        host=host or "0.0.0.0",  # an empty host listens on every interface
        port=port,
        platform_clients_only=args.platform_clients_only,
        agent_id=args.agent_id or component,
    )


def _run_package(args: argparse.Namespace) -> int:
    """Serve the certificate of an onboarding package, after checking the package."""
    from poller.identity.reasons import IdentityRefused
    from poller.onboard import PackageRefused, verify_package
    from poller.testing.mock_agent import MockAgent, MockAgentError
    from poller.trust.store import TrustStore, TrustStoreError

    try:
        host, port = split_host_port(args.listen, listen=True)
    except InvalidArgument as exc:
        print(f"error: --listen: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        trust = TrustStore(args.certs, require_client=False).snapshot if args.certs is not None else None
    except TrustStoreError as exc:
        print(f"error: cannot load certs directory {args.certs}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        package = verify_package(args.package, trust=trust)
    except (PackageRefused, IdentityRefused) as err:
        print(f"error: package {args.package} refused: {err}", file=sys.stderr)
        return EXIT_REFUSED
    except OSError as exc:
        print(f"error: cannot read {args.package}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        client_ca = args.client_ca.read_bytes() if args.client_ca is not None else package.root_pem
        agent = MockAgent(
            cert_chain_pem=package.chain_pem,
            key_pem=package.key_pem,
            client_ca_pem=client_ca,
            **_agent_options(args, host, port, package.context.component_id),
        )
        return asyncio.run(_serve(agent, package.context.cn))
    except (OSError, MockAgentError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


async def _serve(agent: MockAgent, cn: str) -> int:
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    try:
        port = await agent.start()
        sys.stdout.write(f"{port}\n")
        sys.stdout.flush()
        print(f"mock agent {cn} listening on {agent.address}", file=sys.stderr, flush=True)
        await done.wait()
    finally:
        await agent.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return EXIT_OK
