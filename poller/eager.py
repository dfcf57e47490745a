"""Start a coroutine in the caller's task; give it a task of its own only if it waits.

The registry runs every handler and sink flush in a task, so that it can stop
waiting for it at its timeout. Most sink steps finish without ever waiting
(FileSink.publish writes a line), and for them the task is pure cost: a
task, a timer and two loop rounds per result, which at a gateway's push rate
is more than the proof (bench.gateway). `start()` runs the coroutine's first
step at once, in the given context: a coroutine that finishes there gives
its outcome (a Finished, read as a done future is); one that waits is handed,
mid-flight, to a task of its own, which the caller then waits for (and may
abandon) as before.

Only for coroutines that declare it safe: during that first step
`asyncio.current_task()` is the caller's task, so a coroutine that enters
`asyncio.timeout()` (or anything else bound to the current task) before its
first await must not be started this way (Python 3.12's eager tasks fix
that with private machinery; 3.11 is this project's floor).

>>> import asyncio, contextvars
>>> async def quick() -> int:
...     return 7
>>> async def main() -> int:
...     future = start(quick(), context=contextvars.copy_context(), name="quick")
...     return future.result() if future.done() else await future
>>> asyncio.run(main())
7
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Generator
from typing import Any, Generic, TypeVar

__all__ = ["Finished", "start"]

T = TypeVar("T")


def start(
    coro: Coroutine[Any, Any, T], *, context: contextvars.Context, name: str | None = None
) -> asyncio.Future[T] | Finished[T]:
    """Run coro up to its first wait, in context: its outcome as a Finished if it
    finished (its result, its exception, or cancelled), else the task continuing it."""
    try:
        waiting_on = context.run(coro.send, None)
    except StopIteration as stop:
        return Finished(stop.value)
    except asyncio.CancelledError:
        return Finished(None, cancelled=True)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # the coroutine's own failure: its outcome, as a task would keep it
        return Finished(None, exc)
    return asyncio.get_running_loop().create_task(_Continue(coro, waiting_on), name=name, context=context)


class Finished(Generic[T]):
    """The outcome of a coroutine that finished in its first step, read as a done
    future's: done(), cancelled(), exception(), result(), or awaited. No future
    and no loop lookup: at a gateway's push rate those are a visible share."""

    __slots__ = ("_cancelled", "_exception", "_value")

    def __init__(self, value: Any, exception: BaseException | None = None, *, cancelled: bool = False) -> None:
        self._value: T = value  # None when it failed or was cancelled: result() raises then
        self._exception, self._cancelled = exception, cancelled

    def done(self) -> bool:
        return True

    def cancelled(self) -> bool:
        return self._cancelled

    def exception(self) -> BaseException | None:
        if self._cancelled:
            raise asyncio.CancelledError
        return self._exception

    def result(self) -> T:
        if self._cancelled:
            raise asyncio.CancelledError
        if self._exception is not None:
            raise self._exception
        return self._value

    def __await__(self) -> Generator[Any, None, T]:
        return self.result()
        yield  # pragma: no cover - a generator that never yields: await gives the outcome at once


class _Continue(Coroutine[Any, Any, T]):
    """A coroutine that was stepped once by hand, as the coroutine a task runs:
    the task's first send gets what that step yielded (the future it waits on),
    and everything after, every value and every throw (a cancellation too, even
    one before the task's first step), goes on to the coroutine itself."""

    __slots__ = ("_coro", "_waiting_on")

    def __init__(self, coro: Coroutine[Any, Any, T], waiting_on: Any) -> None:
        self._coro = coro
        # None is a bare yield (asyncio.sleep(0)): the task just steps it again
        self._waiting_on: Any = _BARE if waiting_on is None else waiting_on

    def send(self, value: Any) -> Any:
        first, self._waiting_on = self._waiting_on, _NOTHING
        if first is _NOTHING:
            return self._coro.send(value)
        return None if first is _BARE else first

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        self._waiting_on = _NOTHING
        if val is None and tb is None:
            return self._coro.throw(typ)
        return self._coro.throw(typ, val, tb)  # pragma: no cover - asyncio throws instances only

    def close(self) -> None:
        self._waiting_on = _NOTHING
        self._coro.close()

    def __await__(self) -> Generator[Any, Any, T]:  # pragma: no cover - tasks drive it by send/throw
        raise TypeError("poller.eager's continuation is run by its task, not awaited")


_NOTHING = object()  # the first step's yield has been handed over
_BARE = object()  # the first step yielded None
