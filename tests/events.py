"""Scope the poller's log events (the conftest `log_events` fixture) to a block."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def captured(log_events: Callable[[], list[dict[str, Any]]]) -> Iterator[list[dict[str, Any]]]:
    """The events logged inside the block, filled in when it ends."""
    before = len(log_events())
    events: list[dict[str, Any]] = []
    yield events
    events.extend(log_events()[before:])
