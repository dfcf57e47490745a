"""`serviceradar-poller nats-config`: a nats-server config and credentials that isolate tenants.

Reads the tenants from the certs directory (tenants/<slug>/ca.pem) and writes,
all mode 0600:
    OUTDIR/nats-server.conf          load with `nats-server -c` (JetStream on)
    OUTDIR/poller.creds              the poller: publishes under every tenant's prefix
    OUTDIR/tenant-<slug>.creds       one tenant: reads only its own subjects and stream
Existing credentials files in OUTDIR are kept (same passwords), so re-running
it after adding a tenant does not cut off the others. Exit 0, or 2 on bad usage.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from poller.cli.common import EXIT_OK, EXIT_USAGE
from poller.config import split_host_port
from poller.identity.names import is_label
from poller.trust.layout import CertsLayout

DEFAULT_LISTEN = "127.0.0.1:4222"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "nats-config",
        help="write a nats-server config and per-tenant credentials (tenant isolation by accounts)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--certs", required=True, metavar="DIR", help="certs directory: one tenant per tenants/<slug>/ca.pem")
    p.add_argument("--out", required=True, metavar="OUTDIR", help="where the config and credentials go")
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="H:P", help=f"client listen address (default {DEFAULT_LISTEN})")
    p.add_argument("--store", metavar="DIR", help="JetStream store directory (default OUTDIR/jetstream)")
    p.add_argument(
        "--cluster-bucket",
        metavar="NAME",
        help="also let the poller's user use this KV bucket (the config's cluster.bucket, dynamic cluster mode)",
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


def run(args: argparse.Namespace) -> int:
    from poller.nats.accounts import SERVER_CONF, creds_path, plan_layout, write_layout
    from poller.nats.creds import CredentialsError, NatsCredentials, load_credentials

    certs, out = Path(args.certs), Path(args.out)
    try:
        listen = split_host_port(args.listen, listen=True)
    except ValueError as exc:
        return _usage(f"--listen: {exc}")
    if not certs.is_dir():
        return _usage(f"--certs: {certs} is not a directory")
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
    store = Path(args.store) if args.store else out / "jetstream"
    layout = plan_layout(slugs, listen=listen, store_dir=store.absolute(), existing=existing)
    out.mkdir(parents=True, exist_ok=True)
    written = write_layout(out, layout, cluster_bucket=bucket)
    kept = sum(1 for t in existing if t is None or t in slugs)
    print(f"wrote {out / SERVER_CONF} (tenants: {', '.join(slugs)}; JetStream store {store})")
    for path in written[1:]:
        print(f"wrote {path}")
    if kept:
        print(f"kept the passwords of {kept} existing credentials file(s)")
    print(f"start it: nats-server -c {out / SERVER_CONF}")
    return EXIT_OK
