"""`serviceradar-poller probe`: prove one agent's identity and print it as JSON.

A stable contract for scripts: exactly one JSON object on stdout, and
exit 0 accepted, 3 refused for identity, 4 unreachable or timed out,
2 bad usage or unreadable certs directory. Logs (the audit line) go to stderr.

- accepted: {"accepted": true, <the proven identity>, "available": ...,
  "response_time_ns": ..., "latency_ms": ..., "status_code": "OK"}: the
  GetStatus outcome over the pinned channel (status_code is the gRPC code the
  agent answered with; available and response_time_ns are its answer's);
- refused / unreachable: {"accepted": false, "reason": ..., "detail": ...};
- bad usage: {"accepted": false, "reason": "usage", "detail": <the error>}.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import sys
import time
from typing import Any, NoReturn

from poller.address import split_host_port
from poller.agent.client import AgentClient
from poller.cli.common import EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE
from poller.dial.dialer import dial_agent
from poller.identity.names import is_label
from poller.identity.reasons import AgentUnreachable, IdentityRefused, Reason
from poller.logs import configure_logging
from poller.trust.store import TrustStore, TrustStoreError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "probe",
        help="prove one agent's tenant identity and print it as JSON",
        description=(
            "Dial HOST:PORT over mTLS, verify that the agent's certificate chains to the "
            "expected tenant's intermediate CA and names that tenant, then make one GetStatus "
            "call over the pinned channel. Prints one JSON object. Exit status: 0 accepted, "
            "3 refused (reason in the JSON), 4 unreachable or timed out, 2 bad usage or "
            "unreadable certs directory."
        ),
    )
    p.add_argument("address", metavar="HOST:PORT", help="the agent's gRPC address")
    p.add_argument("--certs", required=True, metavar="DIR", help="certs directory (root.pem, tenants/<slug>/ca.pem, poller.pem)")
    p.add_argument("--tenant", required=True, metavar="SLUG", help="the tenant the agent must belong to")
    p.add_argument("--component", metavar="ID", help="require this component id in the CN")
    p.add_argument("--partition", metavar="ID", help="require this partition id in the CN")
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS", help="handshake and call deadline (default 5)")
    p.add_argument("--client-cert", metavar="FILE", help="client certificate chain (default DIR/poller.pem)")
    p.add_argument("--client-key", metavar="FILE", help="client key (default DIR/poller-key.pem)")
    p.add_argument("-v", "--verbose", action="store_true", help="log the audit line and details to stderr")
    p.set_defaults(func=run)
    # The JSON contract holds for argparse's own errors (a missing --tenant) too.
    p.error = functools.partial(_argparse_error, p)


def _argparse_error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    sys.stderr.write(parser.format_usage())
    sys.exit(_usage(message))


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _usage(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    _emit({"accepted": False, "reason": Reason.USAGE.value, "detail": message})
    return EXIT_USAGE


def run(args: argparse.Namespace) -> int:
    configure_logging("console" if args.verbose else "json", level=logging.INFO if args.verbose else logging.ERROR)
    try:
        split_host_port(args.address)
    except ValueError as exc:
        return _usage(str(exc))
    for value, what in ((args.tenant, "--tenant"), (args.component, "--component"), (args.partition, "--partition")):
        if value is not None and not is_label(value):
            return _usage(f"{what} {value!r} is not a lowercase DNS label")
    if not args.timeout > 0:
        return _usage("--timeout must be positive")
    if bool(args.client_cert) != bool(args.client_key):
        return _usage("--client-cert and --client-key go together")
    try:
        trust = TrustStore(args.certs, client_cert=args.client_cert, client_key=args.client_key)
    except TrustStoreError as exc:
        return _usage(f"cannot load certs directory {args.certs}: {exc}")
    if args.tenant not in trust.tenants:
        known = ", ".join(sorted(trust.tenants)) or "none"
        return _usage(f"no CA for tenant {args.tenant!r} in {args.certs}/tenants/ (tenants with a CA: {known})")
    return asyncio.run(_probe(args, trust))


def _crl_state(trust: TrustStore, tenant: str) -> str:
    """ "loaded" when a CRL is in force for the tenant, else "absent" (issue 6)."""
    return "loaded" if trust.tenant(tenant).crl_loaded else "absent"


async def _probe(args: argparse.Namespace, trust: TrustStore) -> int:
    crl = _crl_state(trust, args.tenant)
    try:
        async with asyncio.timeout(args.timeout * 2 + 1):  # backstop; each step has its own deadline
            conn = await dial_agent(
                args.address,
                tenant=args.tenant,
                trust=trust,
                component=args.component,
                partition=args.partition,
                timeout=args.timeout,
            )
            try:
                status = await _status_call(conn, args.timeout)
                ctx = conn.context
            finally:
                await conn.close()
    except IdentityRefused as err:
        _emit({"accepted": False, "reason": err.reason.value, "detail": err.detail})
        return EXIT_REFUSED
    except AgentUnreachable as err:
        _emit({"accepted": False, "reason": err.reason.value, "detail": err.detail})
        return EXIT_UNREACHABLE
    except TimeoutError:
        _emit({"accepted": False, "reason": Reason.UNREACHABLE.value, "detail": f"no answer from {args.address} in time"})
        return EXIT_UNREACHABLE
    _emit({"accepted": True, **ctx.as_dict(), "crl": crl, **status})
    return EXIT_OK


# Codes that mean the call never reached an agent that answers; any other code is
# an answer from the agent over the pinned channel, which is what probe proves.
_TRANSPORT_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"})


async def _status_call(conn: Any, timeout: float) -> dict[str, Any]:
    """The GetStatus outcome, for the JSON; raises if no answer came back."""
    client = AgentClient(conn, timeout=timeout)
    started = time.perf_counter()
    try:
        # No service type: the agent runs no check for it (a check could be
        # slow or have side effects); any answer proves the pinned channel works.
        reply = await client.get_status("probe", "")
    except AgentUnreachable as err:
        if err.code is None or err.code in _TRANSPORT_CODES:
            raise
        # An error status is still an answer over the pinned channel.
        latency = time.perf_counter() - started
        return {"available": False, "response_time_ns": 0, "latency_ms": _ms(latency), "status_code": err.code}
    return {
        "available": reply.response.available,
        "response_time_ns": reply.response.response_time,
        "latency_ms": _ms(reply.latency),
        "status_code": "OK",
    }


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)
