"""DialGate: how many agents the daemon dials at once, sized from measured capacity.

A first wave of thousands of dials is bounded by the poller's CPU (two TLS
handshakes and a chain verification per agent), not by a fixed rate. The
gate starts small and adapts like TCP's congestion window: one more slot
per fast dial until the first slow one (slow start), then one more per
`limit` dials that finish within `target` seconds (additive); a dial
slower than that, or one whose handshake timed out, shrinks the limit by a
quarter (at most once per `target` seconds, so one slow burst counts once).
It settles where dials still take less than `target`, i.e. near what this
machine can prove per second, wherever it runs.

Time spent waiting for a slot is the poller's, not the agent's: a cycle that
ends while its agent still waits is reported as `pending`, not as a failure.
The slots are shared between tenants as the poll slots are (poller.daemon.
limiter): one tenant's agents whose handshakes hang cannot hold every dial.

The limit starts at `initial`, held between `low` (64 by default: a small
fleet is dialed at once) and `high`:

>>> DialGate(initial=8, low=4).limit
8
>>> DialGate(initial=8).limit
64
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from poller.daemon.limiter import Limiter
from poller.identity.reasons import AgentUnreachable

__all__ = ["DialGate"]

DEFAULT_TARGET = 1.0  # seconds a dial may take before the gate reads it as congestion


class DialGate:
    """An adaptive bound on concurrent dials (see module docstring)."""

    # low: never fewer dials at once than this, so a small fleet (or a
    # replica taking over a share) is dialed at once even when the machine is
    # loaded by others and every dial is slow; the gate matters for waves of
    # thousands.
    def __init__(
        self,
        *,
        initial: int = 64,
        low: int = 64,
        high: int = 1024,
        target: float = DEFAULT_TARGET,
        tenants: Iterable[str] = (),
    ) -> None:
        self.low, self.high, self.target = low, high, target
        self._limiter = Limiter(max(low, min(high, initial)), tenants=tenants)
        self._credit = 0  # fast dials since the last increase
        self._slow_start = True  # until the first slow dial: one more slot per fast dial
        self._last_cut = 0.0
        self.dials = 0
        self.slow = 0

    @property
    def limit(self) -> int:
        return self._limiter.limit

    @property
    def in_use(self) -> int:
        return self._limiter.in_use

    def set_tenants(self, tenants: Iterable[str]) -> None:
        """The tenants the dial slots are shared between (a reload may change them)."""
        self._limiter.set_tenants(tenants)

    @asynccontextmanager
    async def admit(self, tenant: str | None = None) -> AsyncIterator[None]:
        """Hold a slot of `tenant`'s for one dial; the dial's duration and outcome adjust the limit."""
        async with self._limiter.slot(tenant):
            started = time.monotonic()
            try:
                yield
            except AgentUnreachable as err:
                self._observe(time.monotonic() - started, timed_out=err.code == "DEADLINE_EXCEEDED")
                raise
            else:
                self._observe(time.monotonic() - started, timed_out=False)

    def _observe(self, seconds: float, *, timed_out: bool) -> None:
        self.dials += 1
        now = time.monotonic()
        if timed_out or seconds > self.target:
            self.slow += 1
            self._credit = 0
            if now - self._last_cut >= self.target:
                self._last_cut = now
                self._slow_start = False
                self._limiter.resize(max(self.low, int(self.limit * 0.75)))
            return
        self._credit += 1
        if (self._slow_start or self._credit >= self.limit) and self.limit < self.high:
            self._credit = 0
            self._limiter.resize(self.limit + 1)
