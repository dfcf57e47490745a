"""ManualClock: a wall clock that moves only when a test says so.

Pass it where a `clock` is taken (dial_agent, AgentConnection); advance()
moves time and runs, in order, the timers that came due, so an expiry is
tested without waiting for it.

>>> clock = ManualClock(1_000.0)
>>> fired = []
>>> _ = clock.call_at(1_005.0, lambda: fired.append(clock.time()))
>>> clock.advance(4.0); fired
[]
>>> clock.advance(1.0); fired
[1005.0]
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["ManualClock"]


class _Timer:
    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[], object]) -> None:
        self.callback: Callable[[], object] | None = callback

    def cancel(self) -> None:
        self.callback = None


class ManualClock:
    """poller.timers.Clock for tests: starts at `now` (default: the real time)."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now
        self._timers: list[tuple[float, int, _Timer]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    def utcnow(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)

    def call_at(self, when: float, callback: Callable[[], object]) -> _Timer:
        timer = _Timer(callback)
        heapq.heappush(self._timers, (when, next(self._order), timer))
        return timer

    def advance(self, seconds: float) -> None:
        """Move time forward, then run the timers due by then, in order (as a
        loop that woke late would); a timer armed meanwhile for a time already
        reached runs too."""
        self.now += seconds
        for _ in range(10_000):
            if not self._timers or self._timers[0][0] > self.now:
                return
            _, _, timer = heapq.heappop(self._timers)
            if timer.callback is not None:
                timer.callback()
        raise RuntimeError("timers keep arming themselves for times already past")
