"""Coarse deadlines for the many waits that almost never expire.

Every agent-cycle has a cycle deadline, and every delivery and sink flush has
a handler deadline. With asyncio's own timers each of those is a TimerHandle
pushed onto the event loop's heap and cancelled a few milliseconds later;
cancelled handles stay in the heap until they surface, so at thousands of
agents the heap holds several times more dead handles than live ones and the
loop spends its time comparing them (bench.fleet --paced, issue 10).

Here deadlines are rounded up to a tick (50 ms) and share one loop timer per
tick: arming one is a list append, cancelling one a flag. A deadline fires at
most one tick late, never early.

>>> import asyncio
>>> async def main():
...     async with coarse_timeout(5.0):  # like asyncio.timeout(5.0)
...         await asyncio.sleep(0)
>>> asyncio.run(main())
"""

from __future__ import annotations

import asyncio
import math
import time
import types
import weakref
from collections.abc import Callable
from typing import Any, Protocol

TICK = 0.05  # seconds: how late a coarse deadline may fire


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Wall-clock time and a timer on it: the seam that lets tests move time
    (poller.testing.ManualClock) instead of waiting for it."""

    def time(self) -> float:
        """Seconds since the epoch (time.time())."""
        ...

    def call_at(self, when: float, callback: Callable[[], object]) -> Cancellable:
        """Run callback in the running event loop once time() reaches when."""
        ...


class WallClock:
    """The real clock: time.time(), and the running loop's timers.

    >>> WallClock().time() > 0
    True
    """

    def time(self) -> float:
        return time.time()

    def call_at(self, when: float, callback: Callable[[], object]) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(max(0.0, when - time.time()), callback)


class MonotonicClock:
    """A Clock on time.monotonic(): for windows and intervals that a step of the
    wall clock (NTP, an operator) must not stretch or shrink.

    >>> MonotonicClock().time() > 0
    True
    """

    def time(self) -> float:
        return time.monotonic()

    def call_at(self, when: float, callback: Callable[[], object]) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(max(0.0, when - time.monotonic()), callback)


class CoarseHandle:
    """One armed deadline; cancel() makes it a no-op."""

    __slots__ = ("_callback",)

    def __init__(self, callback: Callable[[], object]) -> None:
        self._callback: Callable[[], object] | None = callback

    def cancel(self) -> None:
        self._callback = None

    def _fire(self) -> None:
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()


class CoarseTimers:
    """Deadlines of one event loop, grouped by tick."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tick: float = TICK) -> None:
        self._loop = loop
        self._tick = tick
        self._buckets: dict[int, list[CoarseHandle]] = {}

    def call_later(self, delay: float, callback: Callable[[], object]) -> CoarseHandle:
        """Run callback (in the loop) delay seconds from now, or up to one tick after."""
        handle = CoarseHandle(callback)
        slot = math.ceil((self._loop.time() + max(delay, 0.0)) / self._tick)
        bucket = self._buckets.get(slot)
        if bucket is None:
            bucket = self._buckets[slot] = []
            self._loop.call_at(slot * self._tick, self._expire, slot)
        bucket.append(handle)
        return handle

    def _expire(self, slot: int) -> None:
        for handle in self._buckets.pop(slot, ()):
            handle._fire()


_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CoarseTimers] = weakref.WeakKeyDictionary()


def coarse_timers() -> CoarseTimers:
    """The running loop's CoarseTimers (made on first use, gone with the loop)."""
    loop = asyncio.get_running_loop()
    timers = _per_loop.get(loop)
    if timers is None:
        timers = _per_loop[loop] = CoarseTimers(loop)
    return timers


class coarse_timeout:  # lower case: used like asyncio.timeout
    """`async with coarse_timeout(seconds):` raises TimeoutError when the block
    is still running after seconds (plus at most one tick), as asyncio.timeout
    does: the task is cancelled, and that cancellation becomes TimeoutError."""

    __slots__ = ("_cancelling", "_delay", "_expired", "_handle", "_task")

    def __init__(self, delay: float) -> None:
        self._delay = delay
        self._expired = False
        self._handle: CoarseHandle | None = None

    async def __aenter__(self) -> coarse_timeout:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("coarse_timeout must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._handle = coarse_timers().call_later(self._delay, self._on_timeout)
        return self

    def _on_timeout(self) -> None:
        self._expired = True
        self._task.cancel()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: types.TracebackType | None
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        # Ours only if we cancelled and no one else asked for a cancellation too.
        if self._expired and self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc

    @property
    def expired(self) -> bool:
        return self._expired


async def wait_done(task: asyncio.Future[Any], timeout: float) -> bool:
    """Wait for task to finish, at most timeout seconds (coarse); True if it did.

    asyncio.wait({task}, timeout=...) without its loop timer; the task is
    neither cancelled nor awaited here.
    """
    if task.done():
        return True
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    task.add_done_callback(wake)
    handle = coarse_timers().call_later(timeout, wake)
    try:
        await waiter
    finally:
        handle.cancel()
        task.remove_done_callback(wake)
    return task.done()


def task_cancelling() -> bool:
    """True when the running task has a cancellation requested (its own, or a timeout's).

    grpc.aio raises asyncio.CancelledError in a call whose channel was closed,
    though nobody cancelled the task awaiting it; a task that is itself being
    cancelled has a cancel request counted (Task.cancelling()). Code that maps
    a cut call to an error re-raises a real cancellation, so that shutdown and
    timeouts still work.

    >>> async def main():
    ...     return task_cancelling()
    >>> asyncio.run(main())
    False
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
