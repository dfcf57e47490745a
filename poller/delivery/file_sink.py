"""The file sink: each tenant's results as JSON lines in a file of its own.

The destination is derived from the result's tenant, which for a proven
result is the proven tenant (see poller.delivery.sink).

>>> sink = FileSink(Path("data"))  # data/<tenant>/results.jsonl  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import IO

from poller.delivery.result import PollResult
from poller.identity.names import InvalidName, is_label


class FileSink:
    """JSON lines per tenant at <dir>/<tenant>/results.jsonl (appended).

    Durable per cycle: publish() writes into the file's buffer, flush() (the
    daemon calls it at the end of every agent's cycle) writes the buffers out
    and fsyncs every file written since the last flush, so `kill -9` loses at
    most the cycle in flight and a power cut at most the cycles not yet
    flushed. Concurrent flushes share one fsync round (group commit): a round
    waits `commit_delay` (default 20 ms) before it syncs, so that the cycles
    ending meanwhile join it. Paced over the interval, thousands of agents end
    their cycles one by one; without that wait each would pay an fsync and a
    thread hand-off of its own (bench.fleet --paced, issue 10).
    """

    # publish() never waits (no task per result); flush() waits only for a round's
    # delay and fsync, never under asyncio.timeout (poller.eager).
    eager = True

    def __init__(self, directory: Path, *, commit_delay: float = 0.02) -> None:
        self.directory = Path(directory)
        self.commit_delay = commit_delay
        self._files: dict[str, IO[str]] = {}
        self._dirty: set[str] = set()
        self._sync_lock = asyncio.Lock()
        self.syncs = 0  # fsync rounds done (for tests and benchmarks)

    def path_for(self, tenant: str) -> Path:
        if not is_label(tenant):  # a slug never contains '/' or '..'; refuse anything else
            raise InvalidName(f"{tenant!r} is not a tenant slug")
        return self.directory / tenant / "results.jsonl"

    async def publish(self, result: PollResult) -> None:
        handle = self._files.get(result.tenant)
        if handle is None:
            handle = self._open(result.tenant)
        handle.write(json.dumps(result.to_json(), separators=(",", ":"), allow_nan=False) + "\n")
        self._dirty.add(result.tenant)

    def _open(self, tenant: str) -> IO[str]:
        path = self.path_for(tenant)
        created = not path.exists()
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Tenant data: owner only, from the first byte (a file an older version made 0644 is tightened).
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
        handle = self._files[tenant] = os.fdopen(fd, "a", encoding="utf-8")
        if created:  # the new directory entry must survive a crash too
            _fsync_dir(path.parent)
            _fsync_dir(path.parent.parent)
        return handle

    async def flush(self) -> None:
        """Write out and fsync every file written since the last flush."""
        async with self._sync_lock:
            if not self._dirty:
                return  # a concurrent flush already made our lines durable
            if self.commit_delay > 0:
                await asyncio.sleep(self.commit_delay)  # let the cycles ending now join this round
            dirty = set(self._dirty)
            self._dirty.clear()
            handles = [self._files[t] for t in dirty if t in self._files]
            try:
                for handle in handles:
                    handle.flush()
                await asyncio.to_thread(_fsync_all, handles)
            except BaseException:
                self._dirty |= dirty  # not durable: the next flush tries again
                raise
            self.syncs += 1

    async def close(self) -> None:
        await self.flush()
        for handle in self._files.values():
            handle.close()
        self._files.clear()


def _fsync_all(handles: list[IO[str]]) -> None:
    for handle in handles:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the file itself is synced
    finally:
        os.close(fd)
