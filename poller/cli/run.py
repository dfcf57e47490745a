"""`serviceradar-poller run [--config FILE]`: the long-running poller daemon.

The config is `--config`, else $SERVICERADAR_POLLER_CONFIG, else
/etc/serviceradar/poller.json. `--poller-id`, `--log-level` and
`--log-format` (or SERVICERADAR_POLLER_ID, SERVICERADAR_POLLER_LOG_LEVEL,
SERVICERADAR_POLLER_LOG_FORMAT) win over the file's keys: flag > environment
> file > default (poller.config.overrides).

`run --once` polls every agent once and exits, for cron and CI. It prints one
summary line per tenant on stdout (`summary tenant=acme-corp agents=3 ok=2
refused=1`) and exits 0 when every agent was proven and answered, 3 when any
agent's identity was refused, 5 when some result was not durably handed over
to the sink (durable: committed to the NATS outbox, acknowledged by JetStream
when the outbox is off, or written and flushed by the file sink) and none was
refused, 4 when any agent gave no proven answer (unreachable, timed out, not
serving, ...); 2 for a bad config or certs directory, as `run`. The order is
3 > 5 > 4 > 0: a refusal says most, then a result lost, then an agent silent.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
from collections.abc import Iterable
from typing import Any

from poller.cli.common import EXIT_OK, EXIT_REFUSED, EXIT_UNDELIVERED, EXIT_UNREACHABLE, EXIT_USAGE, load_config_or_report
from poller.config import LOG_FORMATS, LOG_LEVELS, ConfigError, unsupported
from poller.config.overrides import (
    DEFAULT_CONFIG_PATH,
    ENV_CONFIG,
    ENV_LOG_FORMAT,
    ENV_LOG_LEVEL,
    ENV_POLLER_ID,
    Overrides,
    config_path,
)
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
            "each result, stamped with the proven tenant, to the sink. With a `gateway` section "
            'it also serves AgentGatewayService over mTLS: agents listed with "push": true dial '
            "in, each call is proven from the client certificate, and their pushes go through the "
            "same handlers and sink (docs/gateway.md). SIGTERM/SIGINT stop cleanly (exit 0), "
            "SIGHUP reloads the config and the certs directory."
        ),
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help=f"JSON config (see `config example`); default ${ENV_CONFIG}, else {DEFAULT_CONFIG_PATH}",
    )
    p.add_argument("--poller-id", metavar="ID", help=f"this poller's id, over the config's poller_id (env {ENV_POLLER_ID})")
    p.add_argument(
        "--log-level", type=str.lower, choices=LOG_LEVELS, help=f"over the config's log_level (default info; env {ENV_LOG_LEVEL})"
    )
    p.add_argument(
        "--once",
        action="store_true",
        help="poll every agent once (and wait up to one interval for each push agent's "
        "push), print a summary line per tenant, then exit "
        "(0 all answered and delivered, 3 an identity refused, 5 a result not durably "
        "handed to the sink, 4 an agent without a proven answer)",
    )
    p.add_argument("--log-format", choices=LOG_FORMATS, help=f"over the config's log_format (default auto; env {ENV_LOG_FORMAT})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    overrides = Overrides.gather(poller_id=args.poller_id, log_level=args.log_level, log_format=args.log_format)
    settings = load_config_or_report(path, overrides)
    if settings is None:
        if not args.config:
            print(f"hint: the config was {path}; pass --config FILE or set {ENV_CONFIG}", file=sys.stderr)
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
    configure_logging(settings.log_format, level=getattr(logging, settings.log_level.upper()), route_native=True)
    try:
        daemon = PollerDaemon(settings, overrides=overrides)
    except TrustStoreError as exc:
        return _cannot_start(f"certs: {problem}" for problem in exc.problems)
    except PollerError as exc:  # e.g. the NATS sink's credentials file is unusable
        return _cannot_start([f"sink: {getattr(exc, 'detail', exc)}"])
    tune_gc()
    try:
        if args.once:
            asyncio.run(daemon.run_once())
            tally = daemon.scheduler.take_tally()
            undelivered = daemon.undelivered
            log.info("poll_summary", tenants=tally, undelivered=undelivered)
            status = once_summary(tally, undelivered=undelivered)
            if undelivered:
                # A log line, not a print: stderr is the JSON log here (native output is routed into it).
                log.error(
                    "results_not_durable",
                    undelivered=undelivered,
                    sink=settings.sink.type,
                    detail=f"{undelivered} result(s) were not durably handed over to the {settings.sink.type} sink; "
                    "the handler_failed, sink_flush_failed or outbox_full_dropped_oldest lines say why",
                )
            return status
        return asyncio.run(daemon.run())
    except ConfigError as exc:  # what only starting can find: e.g. the gateway's certificate or port
        return _cannot_start(str(issue) for issue in exc.issues)


def _cannot_start(problems: Iterable[str]) -> int:
    """Why the daemon cannot start, once its log is configured: stderr is the JSON log
    then (native output is routed into it), so each problem is an error event whose
    `line` is the `error: ...` line a config problem found earlier prints."""
    for problem in problems:
        log.error("startup_error", line=f"error: {problem}")
    return EXIT_USAGE


# A poller's heap is mostly long-lived (channels, workers, certificates) and
# its per-poll garbage dies young: collecting the young generation every 700
# allocations (CPython's default) took 18 % of the steady CPU at 2,000 agents,
# every 10,000 takes 2 % (bench.fleet --separate, side +t10000). Process-wide,
# so the program sets it, not the library.
YOUNG_GC_THRESHOLD = 10_000


def tune_gc() -> None:
    """The young generation's threshold for a poller process (the older two stay)."""
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(YOUNG_GC_THRESHOLD, young), middle, old)


def once_summary(tally: dict[str, dict[str, int]], *, undelivered: int = 0) -> int:
    """Print a line per tenant; the exit status of `run --once` from the agents'
    outcomes and the count of results the sink did not make durable.

    >>> once_summary({"acme-corp": {"ok": 2}}, undelivered=1)
    summary tenant=acme-corp agents=2 ok=2
    5
    """
    for tenant, counts in tally.items():
        fields = " ".join(f"{outcome}={n}" for outcome, n in counts.items())
        print(f"summary tenant={tenant} agents={sum(counts.values())} {fields}", flush=True)
    outcomes = {outcome for counts in tally.values() for outcome in counts}
    if Reason.REFUSED in outcomes:
        return EXIT_REFUSED
    if undelivered:
        return EXIT_UNDELIVERED
    if outcomes - {Reason.OK}:
        return EXIT_UNREACHABLE
    return EXIT_OK
