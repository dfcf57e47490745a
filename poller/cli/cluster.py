"""`serviceradar-poller cluster status`: the replicas sharing a fleet, as NATS sees them.

Prints the members (capacity, tenants, version, last heartbeat), how many
agents each holds per tenant, the agents with no owner, and the push agents
the gateway replicas have seen (which replica, from where). `--json` prints
one JSON object instead. Exit status: 0 read, 4 NATS unreachable, 2 bad
usage, unreadable creds file, or no such bucket.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

import nats.errors
import nats.js.errors

from poller.cli.common import EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, load_config_or_report
from poller.cli.tail import add_tls_arguments
from poller.cluster.status import ClusterStatus, read_status
from poller.config import DEFAULT_CLUSTER_BUCKET, DEFAULT_NATS_URL
from poller.logs import configure_logging
from poller.nats.connect import NatsTarget, NatsUrlError, connect, target_of
from poller.nats.creds import CredentialsError

_SHOWN = 50  # unowned agents listed by name in the table view (all of them in --json)


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "cluster",
        help="show the poller replicas sharing the agents (dynamic cluster mode)",
        description="Inspect the JetStream KV bucket through which poller replicas share the agents.",
    )
    actions = parser.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)
    status = actions.add_parser(
        "status",
        help="members, their agents per tenant, and agents with no owner",
        description=(
            "Read the cluster bucket once and print the members (capacity, tenants, version, "
            "last heartbeat), how many agents each holds per tenant, and the agents with no "
            "owner. Exit status: 0 read, 4 NATS unreachable, 2 bad usage, unreadable creds "
            "or no such bucket."
        ),
    )
    status.add_argument(
        "--nats", metavar="URL", help=f"NATS server URL(s), comma-separated (default: the config's, else {DEFAULT_NATS_URL})"
    )
    status.add_argument("--creds", metavar="FILE", help="NATS credentials file (default: the config's)")
    status.add_argument("--bucket", metavar="NAME", help=f"KV bucket (default: the config's, else {DEFAULT_CLUSTER_BUCKET})")
    add_tls_arguments(status)
    status.add_argument("--config", metavar="FILE", help="take the NATS URL, creds and bucket from this poller config")
    status.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="connect and read deadline (default 10)")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(func=_status)


def _usage(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _status(args: argparse.Namespace) -> int:
    configure_logging("auto", level=logging.ERROR)  # stdout is for the status only
    url, creds, bucket = args.nats, args.creds, args.bucket
    if args.config:
        settings = load_config_or_report(args.config)
        if settings is None:
            return EXIT_USAGE
        if settings.cluster is None:
            return _usage(f"{args.config} has no cluster section")
        url = url or settings.cluster.nats
        creds = creds or (str(settings.cluster.creds) if settings.cluster.creds else None)
        bucket = bucket or settings.cluster.bucket
        tls = settings.cluster.tls
        if tls is not None and not (args.tls_ca or args.tls_cert or args.tls_key):
            args.tls_ca, args.tls_cert, args.tls_key = tls.ca_file, tls.cert_file, tls.key_file
    url, bucket = url or DEFAULT_NATS_URL, bucket or DEFAULT_CLUSTER_BUCKET
    if creds is not None and not Path(creds).is_file():
        return _usage(f"--creds {creds}: no such file")
    try:
        target = target_of(url, creds, args.tls_ca, args.tls_cert, args.tls_key)
        target.credentials()
    except (NatsUrlError, CredentialsError) as exc:
        return _usage(exc.detail)
    try:
        status = asyncio.run(_read(target, bucket, args.timeout))
    except NatsUrlError as exc:  # the URL's scheme and the server disagree about TLS
        return _usage(exc.detail)
    except nats.js.errors.NotFoundError:
        return _usage(f"no bucket named {bucket} on this NATS server (is cluster.bucket set to another name?)")
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        print(f"error: NATS unreachable: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if args.json:
        sys.stdout.write(json.dumps(status.to_json()) + "\n")
    else:
        sys.stdout.write(_table(status))
    return EXIT_OK


async def _read(target: NatsTarget, bucket: str, timeout: float) -> ClusterStatus:
    async with asyncio.timeout(timeout):
        nc = await connect(
            target,
            name="serviceradar-poller cluster status",
            allow_reconnect=False,
            max_reconnect_attempts=1,
            connect_timeout=max(1, int(timeout)),
        )
    try:
        return await read_status(nc.jetstream(timeout=timeout), bucket, timeout=timeout)
    finally:
        await nc.close()


def _table(status: ClusterStatus) -> str:
    live = sum(1 for m in status.members if m.live)
    held = sum(sum(m.agents.values()) for m in status.members)
    lines = [
        f"bucket {status.bucket}: {live} live member(s) of {len(status.members)}, "
        f"{held} agent(s) held, {len(status.unowned)} without an owner",
        "",
    ]
    rows = [("MEMBER", "STATE", "CAPACITY", "TENANTS", "VERSION", "LAST BEAT", "AGENTS")]
    for m in status.members:
        r = m.record
        agents = ", ".join(f"{t} {n}" for t, n in sorted(m.agents.items())) or "-"
        rows.append(
            (
                r.poller_id,
                "live" if m.live else "gone",
                f"{r.capacity:g}",
                ",".join(r.tenants) if r.tenants is not None else "any",
                r.version,
                f"{m.age:.1f}s ago",
                f"{sum(m.agents.values())} ({agents})",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.append("")
    tenants = status.by_tenant()
    if tenants:
        lines.append(
            "per tenant: " + "; ".join(f"{t} {c['owned']} held, {c['unowned']} without owner" for t, c in tenants.items())
        )
    if status.unowned:
        lines.append("agents without an owner:")
        for item in status.unowned[:_SHOWN]:
            lines.append(f"  {item.agent} ({item.tenant or 'tenant unknown'}): {item.why}")
        if len(status.unowned) > _SHOWN:
            lines.append(f"  ... and {len(status.unowned) - _SHOWN} more (--json lists them all)")
    else:
        lines.append("agents without an owner: none")
    if status.pushes:
        lines.append(f"push agents seen by the gateway replicas: {len(status.pushes)}")
        for seen in status.pushes[:_SHOWN]:
            s = seen.sighting
            lines.append(
                f"  {seen.agent} ({seen.tenant}, push): via {s.poller_id} from {s.peer or '?'}, "
                f"{s.pushes} push(es), sighting {seen.age:.1f}s ago"
            )
        if len(status.pushes) > _SHOWN:
            lines.append(f"  ... and {len(status.pushes) - _SHOWN} more (--json lists them all)")
    if status.unreadable:
        lines.append(f"unreadable keys (not written by a poller): {len(status.unreadable)}")
    return "\n".join(lines) + "\n"
