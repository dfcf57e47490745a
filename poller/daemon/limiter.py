"""Limiter: a semaphore whose bound can change while it is held."""

from __future__ import annotations

import asyncio
import collections

__all__ = ["Limiter"]


class Limiter:
    """At most `limit` holders at once, like a semaphore, but resizable while held.

    >>> limiter = Limiter(2)
    >>> limiter.resize(5); limiter.limit
    5
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._in_use = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def in_use(self) -> int:
        return self._in_use

    def resize(self, limit: int) -> None:
        """A larger limit lets waiters in at once; a smaller one takes effect as holders leave."""
        self._limit = limit
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._in_use < self._limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._in_use += 1  # handed over: counted before the waiter runs
                waiter.set_result(None)

    async def __aenter__(self) -> None:
        if self._in_use < self._limit and not self._waiters:
            self._in_use += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # the slot was handed over just as we were cancelled
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._release()

    def _release(self) -> None:
        self._in_use -= 1
        self._wake()
