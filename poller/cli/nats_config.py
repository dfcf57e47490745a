"""`serviceradar-poller nats-config`: nats-server configs and credentials that isolate tenants, secure by default.

Reads the tenants from the certs directory (tenants/<slug>/ca.pem) and writes,
all secrets mode 0600:
    OUTDIR/nats-server.conf          load with `nats-server -c` (JetStream on; with
                                     --cluster N: nats-server-1.conf ... nats-server-N.conf)
    OUTDIR/poller.nk                 the poller's NKey seed: publishes under every tenant's prefix
    OUTDIR/tenant-<slug>.nk          one tenant's NKey seed: reads only its own subjects and stream
    OUTDIR/tls/                      ca.pem (verify the servers), the servers' certificates, and a
                                     client certificate per user (the servers require one: mTLS)
    OUTDIR/poller-nats.json          the poller's `url` list, `creds` and `tls` for its config
With --operator: operator mode instead of accounts in the config: operator.nk,
accounts/<account>.nk, and standard .creds files (poller.creds,
tenant-<slug>.creds: user JWT + seed); JetStream limits in each tenant's account JWT.
The servers hold only public keys; TLS certificates come from the certs
directory's platform CA (else its root). --plaintext-dev writes no TLS, for a
server on loopback only (the demo). Existing seeds in OUTDIR are kept, so
re-running it after adding a tenant does not cut off the others.
Exit 0, or 2 on bad usage.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import socket
import sys
from pathlib import Path
from typing import Any

from poller.cli.common import EXIT_OK, EXIT_USAGE
from poller.config import split_host_port
from poller.identity.names import is_label
from poller.trust.layout import CertsLayout

DEFAULT_LISTEN = "127.0.0.1:4222"
DEFAULT_ROUTE_PORT = 6222
SNIPPET = "poller-nats.json"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "nats-config",
        help="write nats-server configs and per-tenant NKeys (tenant isolation by accounts, TLS by default)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--certs", required=True, metavar="DIR", help="certs directory: one tenant per tenants/<slug>/ca.pem")
    p.add_argument("--out", required=True, metavar="OUTDIR", help="where the configs and credentials go")
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="H:P", help=f"client listen address (default {DEFAULT_LISTEN})")
    p.add_argument("--store", metavar="DIR", help="JetStream store directory (default OUTDIR/jetstream)")
    p.add_argument(
        "--cluster-bucket",
        metavar="NAME",
        help="also let the poller's user use this KV bucket (the config's cluster.bucket, dynamic cluster mode)",
    )
    p.add_argument(
        "--cluster",
        type=int,
        default=1,
        metavar="N",
        help="N servers forming one JetStream cluster (routes in TLS); on one host: consecutive ports",
    )
    p.add_argument(
        "--hosts",
        metavar="H1,H2,...",
        help="the servers' hosts (one, or one per server): the names in their certificates and the poller's URLs",
    )
    p.add_argument("--route-port", type=int, default=DEFAULT_ROUTE_PORT, metavar="P", help="cluster route port (default 6222)")
    p.add_argument(
        "--operator",
        nargs="?",
        const="memory",
        choices=("memory", "full"),
        metavar="RESOLVER",
        help="operator mode: operator/account/user JWTs and standard .creds files; resolver memory (default) or full",
    )
    p.add_argument(
        "--plaintext-dev",
        action="store_true",
        help="no TLS (today's demo layout): only for a server listening on loopback",
    )
    p.set_defaults(func=run)


def _usage(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


def tenants_in(certs: Path) -> tuple[list[str], list[str]]:
    """(tenant slugs with a CA, names under tenants/ that are not usable tenants)."""
    layout = CertsLayout(certs)
    slugs, skipped = [], []
    for entry in sorted(layout.tenants_dir.iterdir()) if layout.tenants_dir.is_dir() else []:
        if entry.is_dir() and is_label(entry.name) and layout.tenant_ca(entry.name).is_file():
            slugs.append(entry.name)
        elif entry.is_dir():
            skipped.append(entry.name)
    return slugs, skipped


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _hosts(args: argparse.Namespace, listen_host: str) -> list[str] | str:
    """The servers' hosts, or a usage message."""
    if args.hosts:
        hosts = [h.strip() for h in args.hosts.split(",")]
        if not all(hosts) or any(not re.fullmatch(r"[A-Za-z0-9.:\[\]-]+", h) for h in hosts):
            return f"--hosts: {args.hosts!r} is not a comma-separated list of host names or addresses"
        if len(hosts) not in (1, args.cluster):
            return f"--hosts: {len(hosts)} hosts for {args.cluster} servers (give one host, or one per server)"
        return hosts
    if listen_host in ("", "0.0.0.0", "::"):
        # Every interface: the certificate names this machine and loopback.
        return [socket.getfqdn()] if not args.plaintext_dev else ["127.0.0.1"]
    return [listen_host]


def run(args: argparse.Namespace) -> int:
    from poller.nats.accounts import creds_path, plan_layout, plan_nodes, user_name, write_layout
    from poller.nats.creds import CredentialsError, NatsCredentials, load_credentials
    from poller.nats.tlsfiles import issue_tls
    from poller.pki.errors import PkiError

    certs, out = Path(args.certs), Path(args.out)
    try:
        listen_host, port = split_host_port(args.listen, listen=True)
    except ValueError as exc:
        return _usage(f"--listen: {exc}")
    if not certs.is_dir():
        return _usage(f"--certs: {certs} is not a directory")
    if args.cluster < 1 or args.cluster > 32:
        return _usage("--cluster: between 1 and 32 servers")
    if not 0 < args.route_port < 65536:
        return _usage("--route-port: a port in 1-65535")
    hosts = _hosts(args, listen_host)
    if isinstance(hosts, str):
        return _usage(hosts)
    if args.plaintext_dev and not (is_loopback(listen_host) and all(is_loopback(h) for h in hosts)):
        return _usage(
            f"--plaintext-dev: {args.listen} is not a loopback address; plaintext NATS is for a server on "
            "127.0.0.1 only (drop --plaintext-dev for TLS)"
        )
    bucket = args.cluster_bucket
    if bucket is not None and not re.fullmatch(r"[A-Za-z0-9_-]+", bucket):
        return _usage(f"--cluster-bucket: {bucket!r} is not a bucket name (letters, digits, '_' and '-')")
    slugs, skipped = tenants_in(certs)
    for name in skipped:
        print(f"warning: {certs}/tenants/{name}: not a tenant slug or no ca.pem; skipped", file=sys.stderr)
    if not slugs:
        return _usage(f"no tenants in {certs}/tenants/ (each needs tenants/<slug>/ca.pem)")
    if out.exists() and not out.is_dir():
        return _usage(f"--out: {out} is not a directory")
    existing: dict[str | None, NatsCredentials] = {}
    for tenant in [None, *slugs]:
        path = creds_path(out, tenant)
        if path.exists():
            try:
                existing[tenant] = load_credentials(path)
            except CredentialsError as exc:
                print(f"warning: {exc.detail}; writing a new one", file=sys.stderr)
    store = (Path(args.store) if args.store else out / "jetstream").absolute()
    wildcard = listen_host in ("", "0.0.0.0", "::")
    nodes = plan_nodes(
        args.cluster, hosts=hosts, port=port, route_port=args.route_port, store_dir=store, bind=listen_host if wildcard else None
    )
    tls = None
    if not args.plaintext_dev:
        names = {node.name: [hosts[min(i, len(hosts) - 1)]] for i, node in enumerate(nodes)}
        try:
            tls = issue_tls(certs, out, servers=names, users=[user_name(t) for t in [None, *slugs]])
        except PkiError as exc:
            return _usage(f"cannot issue the servers' TLS certificates from {certs}: {exc} (or use --plaintext-dev on loopback)")
    out.mkdir(parents=True, exist_ok=True)
    layout = plan_layout(slugs, listen=(listen_host, port), store_dir=store, existing=existing, nodes=nodes, tls=tls)
    if args.operator is not None:
        from poller.nats.operator import write_operator_layout

        written = write_operator_layout(out, layout, resolver=args.operator, cluster_bucket=bucket)
    else:
        written = write_layout(out, layout, cluster_bucket=bucket)
    urls = layout.urls  # the hosts of the certificates, whatever address the servers bind
    snippet: dict[str, Any] = {"url": urls, "creds": str(creds_path(out, None).absolute())}
    if tls is not None:
        snippet["tls"] = {
            "ca_file": str(tls.ca.absolute()),
            "cert_file": str(tls.user_cert(user_name(None)).absolute()),
            "key_file": str(tls.user_key(user_name(None)).absolute()),
        }
    (out / SNIPPET).write_text(json.dumps(snippet, indent=2) + "\n")
    servers = len(layout.nodes)
    print(
        f"wrote {servers} server config(s) (tenants: {', '.join(slugs)}; JetStream store {store}; "
        f"{'TLS with client certificates' if tls else 'PLAINTEXT, loopback only'})"
    )
    for path in written:
        print(f"wrote {path}")
    if tls is not None:
        print(f"wrote {tls.directory}/ (ca.pem, server and client certificates)")
    print(f"wrote {out / SNIPPET} (the poller's url, creds and tls)")
    kept = sum(1 for t in existing if t is None or t in slugs) if args.operator is None else 0
    if kept:
        print(f"kept the NKeys of {kept} existing credentials file(s)")
    print(f"poller URLs: {','.join(urls)}")
    for path in written[:servers]:
        print(f"start it: nats-server -c {path}")
    return EXIT_OK
