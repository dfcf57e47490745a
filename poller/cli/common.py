"""What the subcommands share: the exit statuses (part of the contract) and config loading.

Exit statuses: 0 ok, 2 bad usage or unreadable input, 3 identity refused,
4 unreachable (for `run --once`: some agent gave no proven answer and none
was refused), 5 not durable (`run --once`: some result was not durably handed
over to the sink, and no identity was refused).

>>> EXIT_OK, EXIT_USAGE, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_UNDELIVERED
(0, 2, 3, 4, 5)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from poller.config import PollerConfig
    from poller.config.overrides import Overrides

__all__ = ["EXIT_OK", "EXIT_REFUSED", "EXIT_UNDELIVERED", "EXIT_UNREACHABLE", "EXIT_USAGE", "load_config_or_report"]

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_UNREACHABLE = 4
EXIT_UNDELIVERED = 5


def load_config_or_report(path: str | Path, overrides: Overrides | None = None) -> PollerConfig | None:
    """The config at path (with `overrides` from flags and environment applied),
    or None after printing each problem as `error: ...` on stderr (the caller
    then exits EXIT_USAGE)."""
    from poller.config import ConfigError, load_config

    try:
        config = load_config(path)
        return overrides.apply(config) if overrides is not None else config
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
        return None
