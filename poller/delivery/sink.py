"""The Sink protocol: where results end up (a file, NATS JetStream, a test's memory).

One tenant's results never share a destination with another's; a sink
derives the destination from the result's tenant, which for a proven result
is the proven tenant. A sink is registered in a HandlerRegistry like any
handler; the registry flushes it at the end of each agent's cycle.

>>> from poller.delivery.file_sink import FileSink
>>> isinstance(FileSink(Path("data")), Sink)
True
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from poller.delivery.result import PollResult

__all__ = ["Sink"]

_ = Path  # the doctest's name


@runtime_checkable
class Sink(Protocol):
    """A sink: publish each result; flush (make durable) at the end of a cycle; close at shutdown.

    A sink may also set `eager = True` when its methods neither enter
    asyncio.timeout() nor read asyncio.current_task() before their first
    await: the registry then runs each up to its first await in the delivering
    task and makes a task only if it waits (poller.eager), which for a sink
    that mostly does not wait saves a task and a loop round per result.
    """

    async def publish(self, result: PollResult) -> None: ...
    async def flush(self) -> None: ...
    async def close(self) -> None: ...
