"""Sinks: where the daemon hands results. One tenant's results never share a
destination with another's; the destination is derived from the result's
tenant, which for a proven result is the proven tenant.

>>> sink = FileSink(Path("data"))  # data/<tenant>/results.jsonl  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol

from poller.daemon.results import PollResult
from poller.identity.names import InvalidName, is_label


class Sink(Protocol):
    async def publish(self, result: PollResult) -> None: ...
    async def flush(self) -> None: ...
    async def close(self) -> None: ...


class FileSink:
    """JSON lines per tenant at <dir>/<tenant>/results.jsonl (appended)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._files: dict[str, IO[str]] = {}

    def path_for(self, tenant: str) -> Path:
        if not is_label(tenant):  # a slug never contains '/' or '..'; refuse anything else
            raise InvalidName(f"{tenant!r} is not a tenant slug")
        return self.directory / tenant / "results.jsonl"

    async def publish(self, result: PollResult) -> None:
        handle = self._files.get(result.tenant)
        if handle is None:
            path = self.path_for(result.tenant)
            path.parent.mkdir(parents=True, exist_ok=True)
            # Line-buffered: a result is on disk once published, even if the process is killed.
            handle = self._files[result.tenant] = path.open("a", encoding="utf-8", buffering=1)
        handle.write(json.dumps(result.to_json(), separators=(",", ":")) + "\n")

    async def flush(self) -> None:
        for handle in self._files.values():
            handle.flush()

    async def close(self) -> None:
        await self.flush()
        for handle in self._files.values():
            handle.close()
        self._files.clear()


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
