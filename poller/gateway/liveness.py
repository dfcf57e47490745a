"""What the gateway knows of each push agent: its last push, its peer, its open streams.

The gateway records; the daemon reads (status board, health events,
metrics). A push agent is `pending` until its first push and `unreachable`
(reason `timeout`) once its last push is older than `STALE_INTERVALS` push
intervals; `connected` counts agents that pushed within that window or hold a
stream (a ControlStream, a StreamStatus) open now.

>>> tracker = PushTracker()
>>> tracker.pushed(entry, peer="10.0.0.5:41000", at=1000.0, outcome=Reason.OK)  # doctest: +SKIP
>>> tracker.state_of(entry, now=1010.0)  # doctest: +SKIP
'ok'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from poller.gateway.registry import PushEntry
from poller.identity.context import TenantContext
from poller.identity.reasons import Reason

__all__ = ["STALE_INTERVALS", "PushRecord", "PushTracker", "live_interval"]

#: A push agent is unreachable once its last push is older than this many intervals.
STALE_INTERVALS = 2

PushState = Literal["pending", "ok", "unreachable"]


@dataclass(slots=True)
class PushRecord:
    """One push agent as this gateway saw it."""

    tenant: str
    name: str
    peer: str = ""
    last_push: float | None = None  # when a push was last accepted (this host's clock)
    last_outcome: Reason | None = None  # of the last push call, accepted or refused
    last_seen: float | None = None  # any call, accepted or not
    pushes: int = 0
    open_streams: int = 0
    identity: TenantContext | None = None  # proven at the last accepted push
    # Why the last call was refused, and the certificate it presented when that was the
    # refusal (as a polled agent's board row has them); None once a push is accepted.
    last_detail: str | None = None
    last_certificate: Mapping[str, str] | None = None
    # The push interval this gateway last answered it (Hello, GetConfig): what it pushes
    # by until it asks again, which after a reload may be longer than its entry's.
    told_interval: float | None = None


class PushTracker:
    """Per push agent (tenant, entry name): what it last did. One event loop."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, str], PushRecord] = {}

    def _record(self, entry: PushEntry) -> PushRecord:
        key = (entry.tenant, entry.name)
        record = self._records.get(key)
        if record is None:
            record = self._records[key] = PushRecord(tenant=entry.tenant, name=entry.name)
        return record

    def seen(self, entry: PushEntry, *, peer: str, at: float) -> None:
        """Any call of the agent (Hello, GetConfig, a refused push, ...)."""
        record = self._record(entry)
        record.peer, record.last_seen = peer, at

    def pushed(
        self,
        entry: PushEntry,
        *,
        peer: str,
        at: float,
        outcome: Reason,
        identity: TenantContext | None = None,
        detail: str | None = None,
        certificate: Mapping[str, str] | None = None,
    ) -> None:
        """A push call ended with `outcome` (OK: its results were delivered, proven as `identity`),
        or any call of the agent was refused: for its certificate (revoked, expired, ...; then
        `certificate` describes it) or for what it claimed (identity_mismatch, ...); `detail` why."""
        record = self._record(entry)
        record.peer, record.last_seen, record.last_outcome = peer, at, outcome
        record.last_detail, record.last_certificate = detail, certificate
        if outcome is Reason.OK:
            record.last_push = at
            record.pushes += 1
            record.identity = identity

    def told(self, entry: PushEntry, interval: float) -> None:
        """The agent was answered `interval` as its push interval (Hello, GetConfig)."""
        self._record(entry).told_interval = interval

    def stream_opened(self, entry: PushEntry, *, peer: str, at: float) -> None:
        record = self._record(entry)
        record.peer, record.last_seen = peer, at
        record.open_streams += 1

    def stream_closed(self, entry: PushEntry) -> None:
        record = self._record(entry)
        record.open_streams = max(0, record.open_streams - 1)

    def get(self, tenant: str, name: str) -> PushRecord | None:
        return self._records.get((tenant, name))

    def records(self) -> tuple[PushRecord, ...]:
        return tuple(self._records.values())

    def state_of(self, entry: PushEntry, *, now: float) -> PushState:
        """pending (never pushed), ok, or unreachable (last push older than 2 intervals)."""
        record = self._records.get((entry.tenant, entry.name))
        if record is None or record.last_push is None:
            return "pending"
        return "ok" if _fresh(record, live_interval(record, entry), now) else "unreachable"

    def connected(self, entries: Iterable[PushEntry], *, now: float, unlisted_interval: float | None = None) -> dict[str, int]:
        """Per tenant: the agents that pushed within 2 intervals or hold a stream open.
        `unlisted_interval`: also count the agents recorded without an entry here (those
        accept_unlisted admitted), with that push interval."""
        counts: dict[str, int] = {}
        listed: set[tuple[str, str]] = set()
        for entry in entries:
            listed.add((entry.tenant, entry.name))
            record = self._records.get((entry.tenant, entry.name))
            live = record is not None and (record.open_streams > 0 or self.state_of(entry, now=now) == "ok")
            counts[entry.tenant] = counts.get(entry.tenant, 0) + (1 if live else 0)
        if unlisted_interval is not None:
            for key, record in self._records.items():
                if key in listed:
                    continue
                live = record.open_streams > 0 or _fresh(record, unlisted_interval, now)
                counts[record.tenant] = counts.get(record.tenant, 0) + (1 if live else 0)
        return counts

    def forget_idle_unlisted(self, listed: Iterable[PushEntry], *, idle_since: float) -> int:
        """Drop the records of agents no entry lists (those accept_unlisted admitted)
        that have made no call since `idle_since` and hold no stream; how many. Each
        identity a tenant's CA mints would otherwise keep its record until a reload."""
        keep = {(e.tenant, e.name) for e in listed}
        idle = [
            key
            for key, record in self._records.items()
            if key not in keep and record.open_streams == 0 and (record.last_seen is None or record.last_seen < idle_since)
        ]
        for key in idle:
            del self._records[key]
        return len(idle)

    def forget(self, keep: Iterable[PushEntry]) -> None:
        """Drop the records of agents no longer listed (after a reload)."""
        wanted = {(e.tenant, e.name) for e in keep}
        for key in [k for k in self._records if k not in wanted]:
            del self._records[key]


def live_interval(record: PushRecord | None, entry: PushEntry) -> float:
    """The interval an agent's liveness is judged by: its entry's, or the one it was last
    told when that is longer. A reload that shortens an interval reaches the agent only
    when it next asks (ServiceRadar's agent: at its next Hello, or GetConfig every 5
    minutes); until then it pushes at the old pace, which must not read as silence."""
    told = record.told_interval if record is not None else None
    return entry.interval if told is None else max(entry.interval, told)


def _fresh(record: PushRecord, interval: float, now: float) -> bool:
    """Pushed within STALE_INTERVALS intervals of `now`."""
    return record.last_push is not None and now - record.last_push <= STALE_INTERVALS * interval
