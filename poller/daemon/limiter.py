"""Limiter: a resizable bound on holders, shared fairly between tenants.

A first-come, first-served semaphore lets one tenant's hanging agents take
every slot: fourteen of acme-corp's agents that never answer, polled two at
a time, left xyz-inc one poll in fifteen seconds instead of five. So:

- each tenant is guaranteed its share, `limit // tenants` (at least 1),
  where the tenants are those announced (`set_tenants`, the daemon's
  configured tenants) together with any tenant holding or waiting now;
- a tenant may borrow beyond its share only while `reserve` slots stay free
  for the others (a quarter of the bound, at most one per other tenant, at
  least one), so a large tenant still uses nearly the whole bound when the
  others are idle, but can never take the last free slots;
- a freed slot goes to the earliest waiter of a tenant under its share, and
  only then to a borrower.

One tenant's agents can hold at most `limit - reserve` slots, however many
of them hang.

`slot(None)` (and plain `async with limiter`) is one more tenant of its own:
a library user with no tenants gets a plain resizable semaphore.

>>> limiter = Limiter(4, tenants=["acme-corp", "xyz-inc"])
>>> limiter.share("acme-corp"), limiter.reserve()
(2, 1)
>>> limiter.resize(6); limiter.share("xyz-inc")
3
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from collections.abc import Iterable
from types import TracebackType

__all__ = ["Limiter", "Slot"]


class Limiter:
    """At most `limit` holders at once, shared between tenants (see the module
    docstring); resizable while held.

    Not thread-safe: one limiter belongs to one event loop.
    """

    def __init__(self, limit: int, *, tenants: Iterable[str | None] = ()) -> None:
        self._limit = limit
        self._in_use = 0
        self._announced: frozenset[str | None] = frozenset(tenants)
        self._held: dict[str | None, int] = {}  # tenant -> slots held now (no zero entries)
        # tenant -> its waiters, earliest first, each with its arrival number
        self._waiters: dict[str | None, collections.deque[tuple[int, asyncio.Future[None]]]] = {}
        # tenant -> its waiters not cancelled. A cancelled waiter stays in its queue until
        # it reaches the front (removing it there would cost O(queue) per cancellation:
        # quadratic when thousands of queued cycles hit their deadline together).
        self._live: dict[str | None, int] = {}
        self._arrivals = itertools.count()
        self._tenants: int | None = None  # tenants present (announced, holding or waiting); None: count again

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def in_use(self) -> int:
        return self._in_use

    def held(self, tenant: str | None) -> int:
        """Slots `tenant`'s holders hold now."""
        return self._held.get(tenant, 0)

    def resize(self, limit: int) -> None:
        """A larger limit lets waiters in at once; a smaller one takes effect as holders leave."""
        self._limit = limit
        self._wake()

    def set_tenants(self, tenants: Iterable[str | None]) -> None:
        """The tenants the bound is shared between (a reload may change them)."""
        self._announced = frozenset(tenants)
        self._tenants = None
        self._wake()

    def share(self, tenant: str | None) -> int:
        """The most slots `tenant`'s holders may hold together now."""
        present = tenant in self._announced or tenant in self._held or tenant in self._waiters
        return max(1, self._limit // (self._count() + (0 if present else 1)))

    def reserve(self) -> int:
        """Slots a tenant above its share must leave free for the others."""
        others = self._count() - 1
        return min(max(1, self._limit // 4), others) if others > 0 else 0

    def _count(self) -> int:
        if self._tenants is None:  # cached: shares are read on every acquire
            self._tenants = len(self._announced | self._held.keys() | self._waiters.keys())
        return self._tenants

    def slot(self, tenant: str | None = None) -> Slot:
        """One slot for one holder of `tenant` (use it with `async with`)."""
        return Slot(self, tenant)

    async def __aenter__(self) -> None:
        await self._acquire(None)

    async def __aexit__(self, *exc: object) -> None:
        self._release(None)

    # -- internals -----------------------------------------------------------

    def _may_take(self, tenant: str | None) -> bool:
        if self._in_use >= self._limit:
            return False
        if self._held.get(tenant, 0) < self.share(tenant):
            return True
        return self._limit - self._in_use - 1 >= self.reserve()  # borrowing: leave the reserve free

    def _take(self, tenant: str | None) -> None:
        self._in_use += 1
        held = self._held.get(tenant, 0)
        if not held:
            self._tenants = None
        self._held[tenant] = held + 1

    async def _acquire(self, tenant: str | None) -> None:
        if tenant not in self._waiters and self._may_take(tenant):
            self._take(tenant)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiters.get(tenant)
        if queue is None:
            queue = self._waiters[tenant] = collections.deque()
            self._tenants = None
        queue.append((next(self._arrivals), waiter))
        self._live[tenant] = self._live.get(tenant, 0) + 1
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release(tenant)  # the slot was handed over just as we were cancelled
            else:
                self._forget(tenant, waiter)
            raise

    def _forget(self, tenant: str | None, waiter: asyncio.Future[None]) -> None:
        """A waiter cancelled before it got a slot: counted out now, its entry skipped later."""
        live = self._live.get(tenant, 0) - 1
        if live > 0:
            self._live[tenant] = live
            return
        self._live.pop(tenant, None)
        if self._waiters.pop(tenant, None) is not None:  # only cancelled entries were left
            self._tenants = None
            self._wake()  # a tenant that stopped waiting may change the shares

    def _release(self, tenant: str | None) -> None:
        self._in_use -= 1
        left = self._held[tenant] - 1
        if left:
            self._held[tenant] = left
        else:
            del self._held[tenant]
            self._tenants = None
        self._wake()

    def _wake(self) -> None:
        """Hand free slots to the earliest waiters whose tenant is under its share."""
        while self._in_use < self._limit and self._waiters:
            share = max(1, self._limit // self._count())  # every waiting tenant is counted
            best: tuple[int, str | None] | None = None
            for tenant, queue in self._waiters.items():
                if self._held.get(tenant, 0) < share and (best is None or queue[0][0] < best[0]):
                    best = (queue[0][0], tenant)
            if best is None and self._limit - self._in_use - 1 >= self.reserve():
                for tenant, queue in self._waiters.items():  # a borrower, earliest first
                    if best is None or queue[0][0] < best[0]:
                        best = (queue[0][0], tenant)
            if best is None:
                return  # every waiting tenant holds its share and the rest is the reserve
            tenant = best[1]
            queue = self._waiters[tenant]
            _, waiter = queue.popleft()
            if not waiter.done():
                self._live[tenant] -= 1
            if not queue or not self._live.get(tenant):
                del self._waiters[tenant]  # empty, or only cancelled entries left
                self._live.pop(tenant, None)
                self._tenants = None
            if not waiter.done():
                self._take(tenant)  # handed over: counted before the waiter runs
                waiter.set_result(None)


class Slot:
    """One holder's slot of a Limiter; `waiting` is True while it waits for one."""

    __slots__ = ("_limiter", "tenant", "waiting")

    def __init__(self, limiter: Limiter, tenant: str | None) -> None:
        self._limiter = limiter
        self.tenant = tenant
        self.waiting = False

    async def __aenter__(self) -> Slot:
        self.waiting = True
        await self._limiter._acquire(self.tenant)
        self.waiting = False
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._limiter._release(self.tenant)
