"""Moved to poller.delivery.result; this name stays so that existing imports keep working."""

from poller.delivery.result import *  # noqa: F403
from poller.delivery.result import __all__ as __all__
