"""What the subcommands share: the exit statuses (part of the contract) and config loading.

Exit statuses: 0 ok, 2 bad usage or unreadable input, 3 identity refused,
4 unreachable (for `run --once`: some agent gave no proven answer and none
was refused).

>>> EXIT_OK, EXIT_USAGE, EXIT_REFUSED, EXIT_UNREACHABLE
(0, 2, 3, 4)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from poller.config import PollerConfig

__all__ = ["EXIT_OK", "EXIT_REFUSED", "EXIT_UNREACHABLE", "EXIT_USAGE", "load_config_or_report"]

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_UNREACHABLE = 4


def load_config_or_report(path: str | Path) -> PollerConfig | None:
    """The config at path, or None after printing each problem as `error: ...`
    on stderr (the caller then exits EXIT_USAGE)."""
    from poller.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
        return None
