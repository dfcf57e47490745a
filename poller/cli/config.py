"""`serviceradar-poller config check FILE` and `config example`.

check: validates a daemon config.  Exit 0 and `ok: N agents, M checks,
tenants: a, b` on stdout when it is valid (warnings go to stderr as
`warning: <path>: <message>`, those about the certs directory `run` would
log as `warning: certs: <message>`); exit 2 with every problem on stderr as
`<path>: <message>` when it is not.

example: prints a complete example config that `config check` accepts.
"""

from __future__ import annotations

import argparse
import sys

from poller.cli.common import EXIT_OK, EXIT_USAGE
from poller.cluster.assign import shard_counts
from poller.config import (
    ConfigError,
    ConfigIssue,
    PollerConfig,
    check_files,
    example_config,
    load_config,
    redact_url,
    unsupported,
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "config",
        help="check a daemon config file, or print an example",
        description="Work with the daemon's JSON configuration.",
    )
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)

    check = sub.add_parser(
        "check",
        help="validate a config file (exit 0 if valid, 2 if not)",
        description="Validate FILE and list every problem found. Also loads the certs directory as `run` would "
        "(exit 2 when it is unusable, e.g. without poller.pem; a directory that is not there is a warning).",
    )
    check.add_argument("file", metavar="FILE", help="the JSON config file")
    check.add_argument("--no-files", action="store_true", help="do not look for certs_dir and the tenant CAs on disk")
    check.set_defaults(func=_check)

    example = sub.add_parser("example", help="print a complete example config")
    example.set_defaults(func=_example)


def _check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        for warning in exc.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        return EXIT_USAGE
    blocked = unsupported(config)
    for issue in blocked:
        print(issue, file=sys.stderr)
    if blocked:
        return EXIT_USAGE
    warnings = list(config.warnings)
    if not args.no_files:
        warnings.extend(check_files(config))
        problems, certs_warnings = _load_certs(config)
        warnings.extend(ConfigIssue("certs", warning) for warning in certs_warnings)
        if problems:
            for warning in warnings:
                print(f"warning: {warning}", file=sys.stderr)
            for problem in problems:
                print(f"error: certs: {problem}", file=sys.stderr)
            return EXIT_USAGE
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    tenants = ", ".join(config.tenants) or "(none)"
    print(f"ok: {plural(len(config.agents), 'agent')}, {plural(config.check_count, 'check')}, tenants: {tenants}")
    if config.shard is not None:
        _print_shards(config)
    if config.cluster is not None:
        cluster = config.cluster
        tenants = ", ".join(cluster.tenants) if cluster.tenants is not None else "any"
        print(
            f"cluster: dynamic, bucket {cluster.bucket} on {redact_url(cluster.nats)}, "
            f"capacity {cluster.capacity:g}, tenants: {tenants}"
        )
    return EXIT_OK


def _load_certs(config: PollerConfig) -> tuple[list[str], list[str]]:
    """Load the certs directory as `run` does (root, tenant CAs, CRLs, the poller's
    own certificate and key): why `run` could not use it (nothing when it could),
    and the warnings `run` would log about it (a tenant without a CRL, a CRL past
    its nextUpdate: agents refused). A directory that is not there is only a
    warning (check_files): the daemon may run on another machine."""
    if not config.certs_dir.is_dir():
        return [], []
    from poller.trust.store import TrustStore, TrustStoreError

    try:
        trust = TrustStore(config.certs_dir, require_crl=config.require_crl)
    except TrustStoreError as exc:
        return list(exc.problems), []
    return [], list(trust.snapshot.warnings)


def _print_shards(config: PollerConfig) -> None:
    """How the agents split over the shards, and which share this replica polls."""
    shard = config.shard
    assert shard is not None
    counts = shard_counts((agent.name for agent in config.dial_agents), shard.count)  # push agents dial in
    for index in range(shard.count):
        mine = "  <- this replica" if index == shard.index else ""
        print(f"shard {index}/{shard.count}: {plural(counts[index], 'agent')}{mine}")


def plural(count: int, noun: str) -> str:
    """'1 agent', '2 agents', '0 agents'.

    >>> plural(1, "check"), plural(0, "check")
    ('1 check', '0 checks')
    """
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _example(args: argparse.Namespace) -> int:
    sys.stdout.write(example_config())
    return EXIT_OK
