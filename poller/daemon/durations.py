"""Moved to poller.config.durations; this name stays so that existing imports keep working."""

from poller.config.durations import *  # noqa: F403
from poller.config.durations import __all__ as __all__
