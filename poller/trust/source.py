"""TrustSource: what dial_agent needs to know to prove and pin an agent.

Anything with a `snapshot` (a TrustSnapshot: tenant anchors, the CRLs in
force, the poller's credentials) is a source: a TrustStore over a certs
directory, a TrustStore.from_pem() fed from a database, or a TrustSnapshot
itself (frozen). A source that also has subscribe()/unsubscribe() (as
TrustStore does) tells live connections at once when its material changes;
for any other source a connection notices a new snapshot at its next call.

>>> conn = await dial_agent(address, tenant="acme-corp", trust=my_source)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Protocol, TypeGuard, runtime_checkable

from poller.trust.snapshot import TrustSnapshot
from poller.trust.store import TrustListener


@runtime_checkable
class TrustSource(Protocol):
    """Provides the trust material in force."""

    @property
    def snapshot(self) -> TrustSnapshot: ...


@runtime_checkable
class NotifyingTrustSource(TrustSource, Protocol):
    """A source that tells listeners when its snapshot changes."""

    def subscribe(self, listener: TrustListener) -> None: ...

    def unsubscribe(self, listener: TrustListener) -> None: ...


def notifies(source: TrustSource) -> TypeGuard[NotifyingTrustSource]:
    """isinstance(source, NotifyingTrustSource), without typing's runtime
    Protocol check, which walks the protocol's members on every call (it was
    ~2 % of a first dial's CPU)."""
    return callable(getattr(source, "subscribe", None)) and callable(getattr(source, "unsubscribe", None))
