"""What the cluster bucket says right now: members, who holds which agents,
agents with no owner, and the push agents the gateway replicas have seen
(for `serviceradar-poller cluster status`).

A one-shot reader cannot watch heartbeats change, so a member's age is the
time since the server stored its last heartbeat, by this host's clock; a
lease is held while its end is ahead of this host's clock and it was not
released.

>>> status = await read_status(js, "serviceradar-poller")  # doctest: +SKIP
>>> [m.poller_id for m in status.members]                   # doctest: +SKIP
['poller-a', 'poller-b']
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import nats.errors
from nats.js.client import JetStreamContext

from poller.cluster.records import (
    LEASE_PREFIX,
    MEMBER_PREFIX,
    PUSH_PREFIX,
    LeaseRecord,
    MemberRecord,
    PushSighting,
    RecordError,
    parse_lease_key,
    parse_push_key,
)

__all__ = ["ClusterStatus", "MemberStatus", "PushSeen", "Unowned", "read_status"]


@dataclass(frozen=True, slots=True)
class MemberStatus:
    record: MemberRecord
    age: float  # seconds since its last heartbeat was stored
    agents: dict[str, int]  # leases it holds now, by tenant

    @property
    def live(self) -> bool:
        """Heard from within the time after which the other replicas count it as gone."""
        return self.age < 0.6 * self.record.interval + self.record.interval / 8

    def to_json(self) -> dict[str, Any]:
        r = self.record
        return {
            "poller_id": r.poller_id,
            "live": self.live,
            "last_heartbeat_seconds_ago": round(self.age, 3),
            "capacity": r.capacity,
            "tenants": list(r.tenants) if r.tenants is not None else None,
            "version": r.version,
            "poll_interval": r.interval,
            "agents": dict(sorted(self.agents.items())),
            "agents_total": sum(self.agents.values()),
        }


@dataclass(frozen=True, slots=True)
class Unowned:
    agent: str
    tenant: str | None
    why: str

    def to_json(self) -> dict[str, Any]:
        return {"agent": self.agent, "tenant": self.tenant, "why": self.why}


@dataclass(frozen=True, slots=True)
class PushSeen:
    """A push agent as the gateway replicas' sightings show it: the replica that last
    took its pushes, from where, how many, and how long ago that sighting was stored."""

    tenant: str
    agent: str
    sighting: PushSighting
    age: float

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "agent": self.agent,
            "mode": "push",
            "poller_id": self.sighting.poller_id,
            "peer": self.sighting.peer,
            "pushes": self.sighting.pushes,
            "last_sighting_seconds_ago": round(self.age, 3),
        }


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    bucket: str
    members: list[MemberStatus] = field(default_factory=list)
    unowned: list[Unowned] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # keys whose value is not what a replica writes
    leases: int = 0
    pushes: list[PushSeen] = field(default_factory=list)  # push agents seen by the gateway replicas

    def by_tenant(self) -> dict[str, dict[str, int]]:
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        for member in self.members:
            for tenant, n in member.agents.items():
                counts[tenant]["owned"] += n
        for item in self.unowned:
            counts[item.tenant or "?"]["unowned"] += 1
        return {tenant: {"owned": c["owned"], "unowned": c["unowned"]} for tenant, c in sorted(counts.items())}

    def to_json(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "members": [m.to_json() for m in self.members],
            "tenants": self.by_tenant(),
            "unowned": [u.to_json() for u in self.unowned],
            "push_agents": [p.to_json() for p in self.pushes],
            "unreadable_keys": self.unreadable,
        }


async def _snapshot(js: JetStreamContext, bucket: str, timeout: float) -> list[tuple[str, bytes | None, float]]:
    """(key, value or None if deleted, stored-at epoch seconds) of every key, latest revision each."""
    info = await js.stream_info(f"KV_{bucket}")
    if not info.state.messages:
        return []
    kv = await js.key_value(bucket)
    watcher = await kv.watch(">")
    found: dict[str, tuple[bytes | None, float]] = {}
    try:
        async with asyncio.timeout(timeout):
            while True:
                entry = await watcher.updates(timeout=timeout)  # type: ignore[no-untyped-call]
                if entry is None:
                    if len(found) >= info.state.messages:
                        break
                    continue
                deleted = entry.operation in ("DEL", "PURGE")
                stored = entry.created.timestamp() if entry.created is not None else time.time()
                found[entry.key] = (None if deleted else entry.value, stored)
                if not entry.delta:
                    break
    finally:
        try:
            await watcher.stop()  # type: ignore[no-untyped-call]
        except nats.errors.Error:
            pass
    return [(key, value, stored) for key, (value, stored) in sorted(found.items())]


async def read_status(js: JetStreamContext, bucket: str, *, now: float | None = None, timeout: float = 10.0) -> ClusterStatus:
    """Read the bucket once; raises nats.js.errors.NotFoundError if it does not exist."""
    entries = await _snapshot(js, bucket, timeout)
    now = time.time() if now is None else now
    records: list[tuple[MemberRecord, float]] = []
    held: dict[str, Counter[str]] = defaultdict(Counter)
    unowned: dict[str, Unowned] = {}
    unreadable: list[str] = []
    leases = 0
    pushes: list[PushSeen] = []
    for key, raw, stored in entries:
        if raw is None:
            continue
        try:
            if key.startswith(MEMBER_PREFIX):
                records.append((MemberRecord.parse(raw), stored))
            elif key.startswith(LEASE_PREFIX):
                tenant, agent = parse_lease_key(key)
                lease = LeaseRecord.parse(raw)
                leases += 1
                if not lease.released and lease.until > now:
                    held[lease.owner][tenant] += 1
                else:
                    why = f"released by {lease.owner}" if lease.released else f"lease of {lease.owner} ended"
                    unowned[agent] = Unowned(agent, tenant, why + ", not taken over yet")
            elif key.startswith(PUSH_PREFIX):
                tenant, agent = parse_push_key(key)
                pushes.append(PushSeen(tenant, agent, PushSighting.parse(raw), max(0.0, now - stored)))
            else:
                raise RecordError("not a key a replica writes")
        except RecordError:
            unreadable.append(key[:120])
    members = [MemberStatus(record, max(0.0, now - stored), dict(held.get(record.poller_id, {}))) for record, stored in records]
    for member in members:
        if member.live:
            for agent, tenant in member.record.unowned:
                unowned.setdefault(agent, Unowned(agent, tenant, "no live member serves its tenant"))
    return ClusterStatus(
        bucket=bucket,
        members=sorted(members, key=lambda m: m.record.poller_id),
        unowned=sorted(unowned.values(), key=lambda u: ((u.tenant or ""), u.agent)),
        unreadable=unreadable,
        leases=leases,
        pushes=sorted(pushes, key=lambda p: (p.tenant, p.agent)),
    )
