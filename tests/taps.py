"""A sink that also hands every result to a MemorySink, to wait on what a real sink was given."""

from __future__ import annotations

from poller.delivery.result import PollResult
from poller.delivery.sink import Sink
from poller.testing.memory_sink import MemorySink


class Tapped:
    """Hands every result to `sink`, then to `tap` (a MemorySink whose wait_for a test awaits)."""

    def __init__(self, sink: Sink, tap: MemorySink) -> None:
        self.sink, self.tap = sink, tap

    async def publish(self, result: PollResult) -> None:
        await self.sink.publish(result)
        await self.tap.publish(result)

    async def flush(self) -> None:
        await self.sink.flush()

    async def close(self) -> None:
        await self.sink.close()
