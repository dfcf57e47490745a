"""`serviceradar-poller run --config FILE`: the long-running poller daemon.

`run --once` polls every agent once and exits, for cron and CI. It prints one
summary line per tenant on stdout (`summary tenant=acme-corp agents=3 ok=2
refused=1`) and exits 0 when every agent was proven and answered, 3 when any
agent's identity was refused, 4 when any agent gave no proven answer
(unreachable, timed out, not serving, ...) and none was refused; 2 for a bad
config or certs directory, as `run`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from poller.cli.common import EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE, load_config_or_report
from poller.config import unsupported
from poller.daemon.daemon import PollerDaemon
from poller.identity.reasons import PollerError, Reason
from poller.logs import configure_logging, get_logger
from poller.trust.store import TrustStoreError

log = get_logger("poller.cli.run")


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
    p.add_argument(
        "--once",
        action="store_true",
        help="poll every agent once, print a summary line per tenant, then exit "
        "(0 all answered, 3 an identity refused, 4 an agent without a proven answer)",
    )
    p.add_argument("--log-format", choices=("auto", "json", "console"), help="override the config's log_format")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = load_config_or_report(args.config)
    if settings is None:
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
    except PollerError as exc:  # e.g. the NATS sink's credentials file is unusable
        print(f"error: sink: {getattr(exc, 'detail', exc)}", file=sys.stderr)
        return EXIT_USAGE
    if args.once:
        asyncio.run(daemon.run_once())
        tally = daemon.scheduler.take_tally()
        log.info("poll_summary", tenants=tally)
        return once_summary(tally)
    return asyncio.run(daemon.run())


def once_summary(tally: dict[str, dict[str, int]]) -> int:
    """Print a line per tenant; the exit status of `run --once` from the agents' outcomes."""
    for tenant, counts in tally.items():
        fields = " ".join(f"{outcome}={n}" for outcome, n in counts.items())
        print(f"summary tenant={tenant} agents={sum(counts.values())} {fields}", flush=True)
    outcomes = {outcome for counts in tally.values() for outcome in counts}
    if Reason.REFUSED in outcomes:
        return EXIT_REFUSED
    if outcomes - {Reason.OK}:
        return EXIT_UNREACHABLE
    return EXIT_OK
