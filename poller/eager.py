"""Start a coroutine in the caller's task; give it a task of its own only if it waits.

The registry runs every handler and sink flush in a task, so that it can stop
waiting for it at its timeout. Most sink steps finish without ever waiting
(FileSink.publish writes a line), and for them the task is pure cost: a
task, a timer and two loop rounds per result, which at a gateway's push rate
is more than the proof (bench.gateway). `start()` runs the coroutine's first
step at once, in the given context: a coroutine that finishes there gives a
finished future; one that waits is handed, mid-flight, to a task of its own,
which the caller then waits for (and may abandon) as before.

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
from typing import Any, TypeVar

__all__ = ["start"]

T = TypeVar("T")


def start(coro: Coroutine[Any, Any, T], *, context: contextvars.Context, name: str | None = None) -> asyncio.Future[T]:
    """Run coro up to its first wait, in context: a done future if it finished
    (with its result, its exception, or cancelled), else the task continuing it."""
    loop = asyncio.get_running_loop()
    try:
        waiting_on = context.run(coro.send, None)
    except StopIteration as stop:
        return _finished(loop, stop.value, None)
    except asyncio.CancelledError:
        future: asyncio.Future[T] = loop.create_future()
        future.cancel()
        return future
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # the coroutine's own failure: its outcome, as a task would keep it
        return _finished(loop, None, exc)
    return loop.create_task(_Continue(coro, waiting_on), name=name, context=context)


def _finished(loop: asyncio.AbstractEventLoop, value: Any, exc: BaseException | None) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = loop.create_future()
    if exc is None:
        future.set_result(value)
    else:
        future.set_exception(exc)
    return future


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
