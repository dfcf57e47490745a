"""`serviceradar-poller run --config FILE`: the long-running poller daemon."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from poller.cli.main import EXIT_OK, EXIT_USAGE
from poller.daemon.config import ConfigError, load_config, unsupported
from poller.daemon.daemon import PollerDaemon
from poller.logs import configure_logging
from poller.trust.store import TrustStoreError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run the poller daemon",
        description=(
            "Poll every agent of the config on its interval over tenant-pinned mTLS and write "
            "each result, stamped with the proven tenant, to the sink. SIGTERM/SIGINT stop "
            "cleanly (exit 0), SIGHUP reloads the config and the certs directory."
        ),
    )
    p.add_argument("--config", required=True, metavar="FILE", help="JSON config (see `config example`)")
    p.add_argument("--once", action="store_true", help="poll every agent once, then exit")
    p.add_argument("--log-format", choices=("auto", "json", "console"), help="override the config's log_format")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_config(args.config)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
        return EXIT_USAGE
    if blocked := unsupported(settings):
        for issue in blocked:
            print(f"error: {issue}", file=sys.stderr)
        return EXIT_USAGE
    if args.once and settings.cluster is not None:
        print(
            "error: cluster: run --once polls every agent without taking leases, which in dynamic "
            "cluster mode would poll other replicas' agents; run without --once",
            file=sys.stderr,
        )
        return EXIT_USAGE
    configure_logging(args.log_format or settings.log_format)
    try:
        daemon = PollerDaemon(settings)
    except TrustStoreError as exc:
        for problem in exc.problems:
            print(f"error: certs: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if args.once:
        asyncio.run(daemon.run_once())
        return EXIT_OK
    return asyncio.run(daemon.run())
