"""`serviceradar-poller`: the command line.

Each subcommand lives in its own module with a `register(subparsers)` that
adds its parser and sets `func` to a handler returning the exit status.
Exit statuses are part of the contract: 0 ok, 2 bad usage or unreadable
input, 3 identity refused, 4 unreachable (for `run --once`: some agent gave
no proven answer and none was refused).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from poller.cli.common import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNDELIVERED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    load_config_or_report,
)

# Re-exported: the statuses' home is poller.cli.common.
__all__ = [
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_UNDELIVERED",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "build_parser",
    "load_config_or_report",
    "main",
]


def build_parser() -> argparse.ArgumentParser:
    from poller._version import __version__
    from poller.cli import commands

    parser = argparse.ArgumentParser(
        prog="serviceradar-poller",
        description="Tenant-validating mTLS poller for ServiceRadar agents.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in commands.REGISTRARS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse exits 2 on bad usage
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
