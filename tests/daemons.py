"""A PollerDaemon run in the test's event loop, for the tests that drive one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from poller.daemon.daemon import PollerDaemon


@asynccontextmanager
async def running(
    daemon: PollerDaemon, *, start_within: float = 60.0, install_signals: bool = False
) -> AsyncIterator[PollerDaemon]:
    """The daemon started (within `start_within` s); on exit stopped, its exit status 0.
    `install_signals`: its SIGHUP, SIGTERM and SIGINT handlers on the test's loop."""
    task = asyncio.ensure_future(daemon.run(install_signals=install_signals))
    try:
        async with asyncio.timeout(start_within):
            await daemon.started.wait()
        yield daemon
    finally:
        daemon.request_stop()
        assert await task == 0
