"""MemorySink: a test double that keeps results in memory.

>>> sink = MemorySink()
>>> sink.results
[]
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from poller.delivery.result import PollResult

__all__ = ["MemorySink"]


class MemorySink:
    """Keeps results in memory; wait_for() lets tests synchronise on arrivals."""

    def __init__(self) -> None:
        self.results: list[PollResult] = []
        self.flushed = 0
        self.closed = False
        self._changed = asyncio.Condition()

    async def publish(self, result: PollResult) -> None:
        async with self._changed:
            self.results.append(result)
            self._changed.notify_all()

    async def flush(self) -> None:
        self.flushed += 1

    async def close(self) -> None:
        self.closed = True

    async def wait_for(self, predicate: Callable[[list[PollResult]], bool]) -> list[PollResult]:
        async with self._changed:
            await self._changed.wait_for(lambda: predicate(self.results))
            return list(self.results)
