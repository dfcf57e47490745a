"""Moved to poller.config; this name stays so that existing imports keep working."""

from poller.config import *  # noqa: F403
from poller.config import __all__ as __all__
