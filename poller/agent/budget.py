"""ReassemblyBudget: one memory bound for every StreamResults document being
reassembled, with a fair share per tenant.

The per-stream cap (256 MB) alone bounds one stream, not a fleet: twenty
agents of one tenant streaming without ever sending is_final would hold
twenty times that and take every other tenant down with the poller. The
budget bounds the sum, and no tenant may hold more than its share
(total / number of tenants), so one tenant's agents can only exhaust their
own share: a stream that would take its tenant over the share is refused
as incomplete_stream, saying so, and its bytes are given back at once.

The number of tenants is those the daemon was configured with (set_tenants)
together with any tenant holding a stream now, so a tenant nobody announced
still gets a share, and an announced tenant's share is never taken by another.

>>> budget = ReassemblyBudget(64 * 1024 * 1024, tenants=["acme-corp", "globex"])
>>> budget.share("acme-corp") == 32 * 1024 * 1024
True
>>> with budget.lease("acme-corp") as lease:
...     lease.grow(1024)
...     budget.in_use("acme-corp")
1024
>>> budget.in_use("acme-corp")
0
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType

from poller.identity.reasons import IncompleteStream, InvalidArgument

__all__ = ["DEFAULT_REASSEMBLY_BUDGET", "ReassemblyBudget", "StreamLease"]

#: 1 GiB for every stream being reassembled at once, all tenants together.
DEFAULT_REASSEMBLY_BUDGET = 1024 * 1024 * 1024


class ReassemblyBudget:
    """Bytes held by streams being reassembled, bounded in total and per tenant.

    Not thread-safe: one budget belongs to one event loop (the daemon's).
    """

    def __init__(self, total_bytes: int = DEFAULT_REASSEMBLY_BUDGET, *, tenants: Iterable[str] = ()) -> None:
        if total_bytes <= 0:
            raise InvalidArgument(f"reassembly budget must be positive, got {total_bytes}")
        self.total_bytes = total_bytes
        self._announced: frozenset[str] = frozenset(tenants)
        self._held: dict[str, int] = {}  # tenant -> bytes held now (only tenants holding streams)
        self._streams: dict[str, int] = {}  # tenant -> streams open now
        # Kept as they change, so a lease costs the same with 1 tenant or 10,000:
        # every push the gateway takes is one (poller.gateway).
        self._held_total = 0
        self._unannounced = 0  # tenants holding streams that set_tenants did not name
        self.peak = 0  # the most bytes held at once, all tenants

    def set_tenants(self, tenants: Iterable[str]) -> None:
        """The tenants the poller serves (a config reload may change them)."""
        self._announced = frozenset(tenants)
        self._unannounced = len(self._streams.keys() - self._announced)

    def _tenant_count(self) -> int:
        return (len(self._announced) + self._unannounced) or 1

    def share(self, tenant: str) -> int:
        """The most bytes `tenant`'s streams may hold together now."""
        count = self._tenant_count() + (0 if tenant in self._announced or tenant in self._streams else 1)
        return self.total_bytes // count

    def in_use(self, tenant: str | None = None) -> int:
        """Bytes held now by `tenant`'s streams, or by all when None."""
        if tenant is None:
            return self._held_total
        return self._held.get(tenant, 0)

    def lease(self, tenant: str) -> StreamLease:
        """A lease for one stream of `tenant`; release it (or use `with`) when done."""
        open_now = self._streams.get(tenant, 0)
        if not open_now:
            self._held[tenant] = 0
            if tenant not in self._announced:
                self._unannounced += 1
        self._streams[tenant] = open_now + 1
        return StreamLease(self, tenant)

    def _grow(self, tenant: str, size: int) -> None:
        held = self._held[tenant] + size
        share = self.share(tenant)
        if held > share:
            raise IncompleteStream(
                f"reassembly budget exhausted for tenant {tenant}: its streams and pushes in flight would hold {held} bytes, "
                f"its share is {share} of {self.total_bytes} bytes"
            )
        total = self._held_total + size
        if total > self.total_bytes:  # only while shares shrink as tenants arrive
            raise IncompleteStream(
                f"reassembly budget exhausted for tenant {tenant}: all streams would hold {total} bytes of {self.total_bytes}"
            )
        self._held[tenant] = held
        self._held_total = total
        if total > self.peak:
            self.peak = total

    def _release(self, tenant: str, size: int) -> None:
        self._held[tenant] -= size
        self._held_total -= size
        self._streams[tenant] -= 1
        if not self._streams[tenant]:
            del self._streams[tenant]
            del self._held[tenant]
            if tenant not in self._announced:
                self._unannounced -= 1


class StreamLease:
    """The bytes one stream holds against its tenant's share."""

    __slots__ = ("_budget", "_released", "size", "tenant")

    def __init__(self, budget: ReassemblyBudget, tenant: str) -> None:
        self._budget = budget
        self.tenant = tenant
        self.size = 0
        self._released = False

    def grow(self, size: int) -> None:
        """Take `size` more bytes; IncompleteStream (nothing taken) if over the share."""
        if self._released:
            raise IncompleteStream("stream lease used after release")
        self._budget._grow(self.tenant, size)
        self.size += size

    def release(self) -> None:
        """Give every byte back (idempotent)."""
        if not self._released:
            self._released = True
            self._budget._release(self.tenant, self.size)
            self.size = 0

    def __enter__(self) -> StreamLease:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc_val: BaseException | None, exc_tb: TracebackType | None) -> None:
        self.release()
