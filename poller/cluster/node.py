"""ClusterNode: this replica's part in dynamic membership on a JetStream KV bucket.

What it does, every heartbeat (a quarter of the poll interval):

- writes its MemberRecord under `member.<poller_id>` (created with a revision
  check, then updated against its last revision: a second live process with
  the same poller_id is detected and refused, never silently merged);
- reads every member record; a member is live while its record keeps
  changing (judged by this replica's own monotonic clock, so clocks of other
  hosts play no part) and gone after one poll interval without a change, or
  at once when it left cleanly (its record deleted);
- computes the assignment of every agent over the live members with
  poller.cluster.assign (capacity as weight, `tenants` as restriction): every
  replica has the same inputs, so every replica computes the same owners;
- releases the leases of agents it no longer owns.

The scheduler asks `may_poll(agent)` at every slot of the agent
(poller.cluster.slots). The answer is yes only while this replica holds the
agent's lease for the whole slot:

- held: renew it (update against the last revision) to cover the next slot
  too, and poll if the lease, as last acknowledged, covers this slot;
- owned but not held: take it if the stored lease ends at or before this
  slot's start (create if absent, else update against the revision read),
  never otherwise.

A lease write that another process made first fails the revision check, so
two replicas never both believe they hold one agent for the same slot. When
NATS is unreachable, held leases are polled until their acknowledged end (the
end of the next slot), then polling stops: no agent is ever polled by two
replicas in one slot, at the price of up to one interval of polls lost to an
outage, and none polled after that until NATS is back (docs/deployment.md).

>>> node = ClusterNode(settings)              # doctest: +SKIP
>>> node.start()                              # doctest: +SKIP
>>> await node.may_poll(settings.agents[0])   # doctest: +SKIP
False
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from poller.cluster.assign import MAX_CAPACITY, Member, assign
from poller.cluster.records import (
    MAX_RECORD_BYTES,
    MEMBER_PREFIX,
    UNOWNED_SHOWN,
    LeaseRecord,
    MemberRecord,
    RecordError,
    lease_key,
    member_key,
)
from poller.cluster.slots import Slot, slot_at
from poller.config import AgentConfig, ClusterConfig, PollerConfig
from poller.identity.reasons import PollerError
from poller.logs import get_logger
from poller.metrics import PollerMetrics, default_metrics
from poller.nats.connect import NatsTarget, NatsUrlError, cluster_size, connect
from poller.nats.creds import CredentialsError
from poller.nats.streams import default_replicas

__all__ = ["ClusterError", "ClusterNode", "bucket_ttl", "fleet_digest", "min_bucket_ttl"]

log = get_logger("poller.cluster")

T = TypeVar("T")

# Errors that mean "NATS did not answer": the state of a write is unknown.
_UNANSWERED: tuple[type[BaseException], ...] = (nats.errors.Error, TimeoutError, OSError)
_EPSILON = 1e-6  # slot edges are computed by the same formula everywhere; this only absorbs float noise
EXPIRED_SHOWN = 20  # agents named in one lease_expired line
# Records are data another process wrote: what a replica never writes is bounded, and said.
CLOCK_SKEW = 2.0  # seconds of clock difference between hosts a lease end is allowed (NTP keeps far less)


class ClusterError(PollerError):
    """The cluster cannot be joined safely (e.g. a bucket whose TTL would drop live leases)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def min_bucket_ttl(interval: float) -> float:
    """The shortest bucket TTL that never drops a lease before its end (which is
    at most two intervals after its last write), with room for a slow write."""
    return 3 * interval + 5.0


def bucket_ttl(interval: float) -> float:
    """TTL of a bucket this replica creates: long enough for leases, short
    enough that keys of removed agents and dead replicas go away."""
    return max(60.0, 10 * interval)


def fleet_digest(agents: Iterable[AgentConfig]) -> str:
    """A short digest of (name, tenant) of every agent: replicas must share the agent list."""
    h = hashlib.blake2b(digest_size=8)
    for name, tenant in sorted((a.name, a.tenant) for a in agents):
        h.update(f"{len(name)}:{name}:{tenant};".encode())
    return h.hexdigest()


@dataclass
class _Lease:
    """What this replica knows of one agent's lease."""

    key: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    held: bool = False
    revision: int = 0
    until: float = 0.0  # the lease's end as last acknowledged by NATS
    renewal: asyncio.Task[None] | None = None  # the renewal in flight, if any
    last_slot: int | None = None  # the last slot this replica polled
    polled_end: float = 0.0  # the end of that slot
    state: str = ""  # the last reason logged, so each change is logged once
    seen_revision: int = 0  # the stored revision last read, and when it was first read (wall clock)
    seen_at: float = 0.0


@dataclass
class _Seen:
    """A member record as this replica last saw it, and since when (monotonic)."""

    record: MemberRecord | None
    revision: int
    since: float


class ClusterNode:
    """Membership, assignment and leases of one replica (see the module doc)."""

    def __init__(
        self,
        settings: PollerConfig,
        *,
        version: str | None = None,
        clock: Callable[[], float] = time.time,
        metrics: PollerMetrics | None = None,
    ) -> None:
        if settings.cluster is None:
            raise ValueError("settings have no cluster section")
        self.config: ClusterConfig = settings.cluster
        self.poller_id = settings.poller_id
        self.instance = secrets.token_hex(8)
        self.interval = settings.poll_interval
        # A dead member is noticed within about 0.85 interval (timeout plus one
        # heartbeat to see its last write and one to judge), so its agents are
        # taken over at the second slot after its death at the latest.
        self.heartbeat_every = self.interval / 8
        self.member_timeout = self.interval * 0.6
        self.call_timeout = min(2.0, max(0.05, self.interval / 2))
        self.version = version or _package_version()
        self._clock = clock
        self.metrics = metrics if metrics is not None else default_metrics()
        self._agents: dict[str, AgentConfig] = {}
        self._leases: dict[str, _Lease] = {}
        self._owners: dict[str, str | None] = {}
        self._members: dict[str, _Seen] = {}
        self._join_seen: _Seen | None = None
        self._own_seen_at = 0.0  # when the member watch last showed our own heartbeat
        self._joined_at = 0.0
        self.members: list[str] = []  # poller_ids of the live members the current assignment is over
        self._live_key: tuple[tuple[str, float, frozenset[str] | None], ...] | None = None
        self._nc: NATS | None = None
        self._kv: KeyValue | None = None
        self._member_revision = 0
        self.beats = 0  # heartbeats written
        self._joined = False
        self._outage: float | None = None  # since when NATS has not answered (monotonic), None: answering
        self._last_failure = 0.0
        self._expired: list[AgentConfig] = []  # leases that lapsed since the last summary line
        self._resumed_at = 0.0  # when our own heartbeat came through again after a gap
        self._capped: set[str] = set()  # members whose capacity was capped (logged once each)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._setup = asyncio.Lock()  # one connect and one join, whichever loop gets there first
        self.ready = asyncio.Event()  # joined, and the first assignment is computed
        # "starting", "member", "refused" (see the log for why) or "duplicate_poller_id"
        self.state = "starting"
        self._changed = asyncio.Condition()
        self.log = log.bind(poller_id=self.poller_id, bucket=self.config.bucket)
        self.target = NatsTarget.of(self.config.nats, self.config.creds, self.config.tls)
        self.set_agents(settings.dial_agents)  # push agents dial in: no lease

    # ------------------------------------------------------------------ public

    def set_agents(self, agents: Iterable[AgentConfig]) -> None:
        """The fleet to share (on start and on reload); the assignment is recomputed."""
        self._agents = {a.name: a for a in agents}
        for name in [n for n in self._leases if n not in self._agents]:
            lease = self._leases[name]
            if not lease.held:
                del self._leases[name]
        self._fleet = fleet_digest(self._agents.values())
        self._live_key = None  # recompute on the next heartbeat

    def start(self) -> None:
        """Connect, join, heartbeat and watch the members in the background (until stop())."""
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._run(self._heartbeat), name="cluster heartbeat"),
                loop.create_task(self._run(self._watch_members), name="cluster members"),
                loop.create_task(self._run(self._reassign), name="cluster assignment"),
            ]

    async def stop(self, timeout: float = 5.0) -> None:
        """Leave cleanly: release held leases and delete the member record, so the
        other replicas take over at once instead of after the timeouts."""
        tasks, self._tasks = self._tasks, []
        self._stopping = True  # a cancellation lost in a timeout race still ends the loops
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                if self._kv is not None and self._joined:
                    await self._release_all(list(self._leases))
                    with contextlib.suppress(*_UNANSWERED):
                        await self._kv.delete(member_key(self.poller_id), last=self._member_revision)
                    self.log.info("cluster_left")
        self._joined = False
        self.ready.clear()
        if self._nc is not None:
            with contextlib.suppress(*_UNANSWERED):
                await asyncio.wait_for(self._nc.close(), timeout)
            self._nc = None
            self._kv = None

    def next_slot(self, agent: str) -> float:
        """The monotonic time of the next slot start of `agent` (the scheduler waits for it)."""
        now = self._clock()
        slot = slot_at(agent, now, self.interval)
        # A hair after the edge, so that the slot read back on waking is the new one.
        return time.monotonic() + (slot.end - now) + min(0.005, self.interval / 100)

    def slot_deadline(self, agent: str) -> float:
        """The monotonic time by which a poll begun in the current slot must end:
        a fifth of an interval before the slot does (the default cycle_timeout),
        so that it does not run into the next slot, which may belong to another
        replica, even when this process's event loop runs late."""
        now = self._clock()
        return time.monotonic() + (slot_at(agent, now, self.interval).end - now) - self.interval / 5

    async def wait_for(self, predicate: Callable[[ClusterNode], bool]) -> None:
        """Return once predicate(self) holds; it is checked at every change of
        state, membership or assignment (bound it with asyncio.timeout)."""
        async with self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    async def _signal(self, state: str | None = None) -> None:
        if state is not None:
            self.state = state
        async with self._changed:
            self._changed.notify_all()

    def live_members(self) -> list[Member]:
        """The members judged live now (what the assignment is computed over); [] before joining."""
        return self._live_members() if self._joined else []

    @property
    def bucket(self) -> KeyValue | None:
        """The cluster's KV bucket once connected (for other records in it, e.g. push sightings)."""
        return self._kv

    def owner(self, agent: str) -> str | None:
        """The replica that owns `agent` in this replica's current view (None: no member serves it)."""
        return self._owners.get(agent)

    @property
    def held(self) -> list[str]:
        return sorted(name for name, lease in self._leases.items() if lease.held)

    async def may_poll(self, agent: AgentConfig) -> bool:
        """May this replica poll `agent` now, in its current slot? (the scheduler's one question)"""
        slot = slot_at(agent.name, self._clock(), self.interval)
        lease = self._leases.get(agent.name)
        if lease is None:
            lease = self._leases[agent.name] = _Lease(lease_key(agent.tenant, agent.name))
        async with lease.lock:
            if lease.last_slot is not None and lease.last_slot >= slot.index:
                return False  # already polled in this slot (a late wake-up): never twice
            if not self.ready.is_set() or self._kv is None:
                return False
            await self._settle(lease)
            owner = self._owners.get(agent.name)
            if lease.held and owner != self.poller_id:
                await self._release(lease, agent)
                return False
            if lease.held:
                allowed = lease.until + _EPSILON >= slot.end  # as acknowledged: never on hope
                if allowed:
                    lease.state = "lease_held"
                    # Renew for the next slot while this one is polled.
                    lease.renewal = asyncio.get_running_loop().create_task(self._renew(lease, agent, slot.end + self.interval))
                else:
                    lease.held = False
                    if lease.state != "lease_expired":
                        lease.state = "lease_expired"
                        self._expired.append(agent)  # summed up in one line by _run
            elif owner == self.poller_id:
                allowed = await self._acquire(lease, agent, slot)
            else:
                allowed = False
            if allowed:
                lease.last_slot, lease.polled_end = slot.index, slot.end
            return allowed

    async def _settle(self, lease: _Lease) -> None:
        """Let a renewal still in flight finish, so its answer counts: up to half
        an interval, which still leaves the poll most of its slot."""
        if lease.renewal is not None and not lease.renewal.done():
            await asyncio.wait({lease.renewal}, timeout=self.interval / 2)

    # ------------------------------------------------------------------ leases

    async def _call(self, make: Callable[[], Awaitable[T]]) -> T:
        async with asyncio.timeout(self.call_timeout):
            return await make()

    def _note(self, lease: _Lease, agent: AgentConfig, state: str, level: str = "info", **fields: Any) -> None:
        """Log a lease's change of state once (not every slot)."""
        if lease.state != state:
            lease.state = state
            getattr(self.log, level)(state, agent=agent.name, tenant=agent.tenant, **fields)

    async def _renew(self, lease: _Lease, agent: AgentConfig, until: float) -> None:
        """Extend the lease to `until`; a write NATS did not answer is tried again
        while the current slot lasts (the next one needs the extension)."""
        assert self._kv is not None
        kv = self._kv
        record = LeaseRecord(self.poller_id, self.instance, until).dump()
        while lease.held:
            try:
                revision = await self._call(lambda: kv.update(lease.key, record, last=lease.revision))
            except nats.js.errors.KeyWrongLastSequenceError:
                # Lost, or our own earlier try landed after all: read and see.
                await self._reread_own(lease, agent)
                return
            except _UNANSWERED as exc:
                self._unreachable(exc)
                if self._clock() + self.call_timeout >= until - self.interval:
                    return
                continue
            if lease.held:
                lease.revision, lease.until = revision, until
            self._reached()
            return

    async def _reread_own(self, lease: _Lease, agent: AgentConfig) -> bool:
        """A renewal failed its revision check: was it our own write whose ack got lost?"""
        assert self._kv is not None
        kv = self._kv
        try:
            entry = await self._call(lambda: kv.get(lease.key))
            record = LeaseRecord.parse(entry.value or b"")
        except (nats.js.errors.KeyNotFoundError, RecordError):
            record, entry = None, None
        except _UNANSWERED as exc:
            self._unreachable(exc)
            return True  # unknown: keep what was acknowledged
        if record is not None and entry is not None and (record.owner, record.instance) == (self.poller_id, self.instance):
            if lease.held:  # our own write whose ack was lost
                lease.revision, lease.until = entry.revision or 0, max(lease.until, record.until)
            return True
        lease.held = False
        self._note(lease, agent, "lease_lost", "warning", holder=record.owner if record else None)
        return False

    async def _acquire(self, lease: _Lease, agent: AgentConfig, slot: Slot) -> bool:
        assert self._kv is not None
        kv = self._kv
        until = slot.end + self.interval
        record = LeaseRecord(self.poller_id, self.instance, until).dump()
        try:
            try:
                entry = await self._call(lambda: kv.get(lease.key))
            except nats.js.errors.KeyNotFoundError:
                # Absent: never held, or expired by the bucket TTL long after its end.
                revision = await self._call(lambda: kv.create(lease.key, record))
            else:
                try:
                    current = LeaseRecord.parse(entry.value or b"")
                except RecordError as exc:
                    # Fail closed: its end is unknown. The bucket TTL removes it in time.
                    self._note(lease, agent, "lease_unreadable", "error", problem=str(exc))
                    return False
                ours = (current.owner, current.instance) == (self.poller_id, self.instance)
                ends = self._lease_end(lease, current, entry.revision or 0, agent)
                if ours and ends + _EPSILON >= slot.end:
                    revision, until = entry.revision or 0, ends  # our own write whose ack was lost
                elif ends > slot.start + _EPSILON:
                    if current.owner not in self.members:
                        self._note(
                            lease,
                            agent,
                            "lease_held_by_non_member",
                            "warning",
                            holder=current.owner,
                            until=round(ends, 3),
                            why="a poller_id that is not a live member holds this agent's lease; polled again after it ends",
                        )
                    else:
                        self._note(lease, agent, "lease_held_elsewhere", "debug", holder=current.owner, until=ends)
                    return False
                else:
                    revision = await self._call(lambda: kv.update(lease.key, record, last=entry.revision))
        except nats.js.errors.KeyWrongLastSequenceError:
            self._note(lease, agent, "lease_taken_first", "debug")
            return False
        except _UNANSWERED as exc:
            self._unreachable(exc)
            return False
        self._reached()
        lease.held, lease.revision, lease.until = True, revision, until
        self._note(lease, agent, "lease_acquired", "debug")
        return True

    def _lease_end(self, lease: _Lease, record: LeaseRecord, revision: int, agent: AgentConfig) -> float:
        """The end of a stored lease, bounded: a replica writes at most the end of the slot after
        the current one, so no lease ends later than 2 intervals (plus clock skew) after this
        replica first saw that revision of it. A later `until` is ignored beyond that bound, and said."""
        if lease.seen_revision != revision:
            lease.seen_revision, lease.seen_at = revision, self._clock()
        bound = lease.seen_at + 2 * self.interval + CLOCK_SKEW
        if record.until <= bound:
            return record.until
        self.log.warning(
            "lease_until_ignored",
            agent=agent.name,
            tenant=agent.tenant,
            holder=record.owner,
            until=round(record.until, 3),
            bounded_to=round(bound, 3),
            why="no replica writes a lease ending more than 2 intervals after it was stored",
        )
        return bound

    async def _release(self, lease: _Lease, agent: AgentConfig) -> None:
        """Give the lease up, keeping the end of the last slot polled so the
        next owner starts after it (and at once if that slot is over)."""
        assert self._kv is not None
        kv = self._kv
        lease.held = False
        await self._settle(lease)
        record = LeaseRecord(self.poller_id, self.instance, lease.polled_end, released=True).dump()
        try:
            await self._call(lambda: kv.update(lease.key, record, last=lease.revision))
        except nats.js.errors.KeyWrongLastSequenceError:
            pass  # someone else wrote it since: not ours any more anyway
        except _UNANSWERED as exc:
            self._unreachable(exc)  # it ends by itself at lease.until
        self._note(lease, agent, "lease_released", "debug", owner=self._owners.get(agent.name))

    async def _release_all(self, names: Iterable[str]) -> None:
        batch: list[Awaitable[None]] = []
        for name in list(names):
            lease, agent = self._leases.get(name), self._agents.get(name)
            if lease is not None and lease.held and agent is not None:
                batch.append(self._locked_release(lease, agent))
            if len(batch) >= 256:
                await asyncio.gather(*batch)
                batch = []
        await asyncio.gather(*batch)

    async def _locked_release(self, lease: _Lease, agent: AgentConfig) -> None:
        async with lease.lock:
            if lease.held:
                await self._release(lease, agent)

    def _unreachable(self, exc: BaseException) -> None:
        """NATS did not answer: one `cluster_unreachable` line per outage (an outage ends
        only after a whole interval of answers, so a flapping link is one outage)."""
        now = time.monotonic()
        self._last_failure = now
        if self._outage is None:
            self._outage = now
            ends = max((lease.until for lease in self._leases.values() if lease.held), default=0.0)
            self.log.warning(
                "cluster_unreachable",
                error=str(exc) or exc.__class__.__name__,
                held=len(self.held),
                polling_until=round(ends, 3) if ends else None,
                why="held agents are polled until their leases end, then not at all until NATS answers",
            )

    def _reached(self) -> None:
        """NATS answered; after a whole interval without a failure an outage is over (logged once)."""
        if self._outage is not None and time.monotonic() - self._last_failure >= self.interval:
            self.log.info("cluster_reachable", outage=round(self._last_failure - self._outage, 3))
            self._outage = None

    async def _expired_summary(self) -> None:
        """One `lease_expired` line for every lease that lapsed since the last one (not one per agent)."""
        expired, self._expired = self._expired, []
        if expired:
            by_tenant = Counter(agent.tenant for agent in expired)
            self.log.warning(
                "lease_expired",
                count=len(expired),
                tenants=dict(sorted(by_tenant.items())),
                agents=sorted(agent.name for agent in expired)[:EXPIRED_SHOWN],
                why="NATS did not confirm the renewal in time",
            )
            await self._signal()

    # ------------------------------------------------------------------ membership

    async def _run(self, step: Callable[[], Awaitable[None]]) -> None:
        """Connect and join if need be, then `step` every heartbeat; errors are logged, never fatal."""
        delay = self.heartbeat_every
        while not self._stopping:
            try:
                async with self._setup:
                    if self._kv is None:
                        await self._connect()
                    if not self._joined:
                        await self._join()
                if self._joined:
                    await step()
                delay = self.heartbeat_every
            except (ClusterError, CredentialsError, NatsUrlError) as exc:
                self.log.error("cluster_refused", problem=exc.detail)
                await self._signal("refused")
                delay = min(30.0, max(delay * 2, 1.0))
            except _UNANSWERED as exc:
                self._unreachable(exc)
                await self._signal()  # waiters on the node's state see the outage
                delay = min(self.heartbeat_every * 4, max(delay * 2, self.heartbeat_every))
            await self._expired_summary()
            await asyncio.sleep(delay)

    async def _connect(self) -> None:
        if self._nc is None:
            self._nc = await connect(
                self.target,
                name=f"serviceradar-poller {self.poller_id}",
                logger=self.log,
                connect_timeout=max(1.0, self.call_timeout),
                reconnect_time_wait=min(2.0, self.heartbeat_every),
                allow_reconnect=True,
            )
        js = self._nc.jetstream(timeout=self.call_timeout * 2)
        try:
            kv = await js.key_value(self.config.bucket)
        except nats.js.errors.BucketNotFoundError:
            replicas = self.config.replicas or default_replicas(await cluster_size(self.target))
            try:
                kv = await js.create_key_value(
                    bucket=self.config.bucket,
                    history=1,
                    ttl=bucket_ttl(self.interval),
                    max_value_size=MAX_RECORD_BYTES,  # records are small; a huge one is refused by the server
                    description="serviceradar-poller cluster",
                    replicas=replicas,
                )
                self.log.info("cluster_bucket_created", ttl=bucket_ttl(self.interval), replicas=replicas)
            except nats.js.errors.BadRequestError:  # another replica made it first, with other settings
                kv = await js.key_value(self.config.bucket)
        info = await js.stream_info(f"KV_{self.config.bucket}")
        ttl = float(info.config.max_age or 0)
        if 0 < ttl < min_bucket_ttl(self.interval):
            raise ClusterError(
                f"bucket {self.config.bucket} has a TTL of {ttl:g}s, under {min_bucket_ttl(self.interval):g}s: "
                "it could drop a lease before its end and let two replicas poll one agent"
            )
        have = info.config.num_replicas or 1
        if self.config.replicas is not None and have != self.config.replicas:
            self.log.warning(
                "cluster_bucket_replicas_differ",
                replicas=have,
                configured=self.config.replicas,
                why="the poller never changes an existing bucket's replicas; change them with `nats kv edit`",
            )
        self._kv = kv

    def _record(self) -> MemberRecord:
        held = Counter(self._agents[n].tenant for n, lease in self._leases.items() if lease.held and n in self._agents)
        unowned = sorted((n, a.tenant) for n, a in self._agents.items() if n in self._owners and self._owners[n] is None)
        return MemberRecord(
            poller_id=self.poller_id,
            instance=self.instance,
            capacity=self.config.capacity,
            version=self.version,
            interval=self.interval,
            fleet=self._fleet,
            tenants=self.config.tenants,
            agents=len(self._agents),
            held=sum(held.values()),
            held_by_tenant=dict(sorted(held.items())),
            unowned=tuple(unowned[:UNOWNED_SHOWN]),
            unowned_count=len(unowned),
            beat=self.beats,
        )

    async def _join(self) -> None:
        """Create our member record; take over a stale one of an earlier process
        with our poller_id; refuse while another live process writes it."""
        assert self._kv is not None
        kv, key = self._kv, member_key(self.poller_id)
        record = self._record().dump()
        try:
            self._member_revision = await self._call(lambda: kv.create(key, record))
        except nats.js.errors.KeyWrongLastSequenceError:
            entry = await self._call(lambda: kv.get(key))
            revision = entry.revision or 0
            if self._is_mine(entry.value):  # our own write whose ack was lost
                self._member_revision = revision
                return await self._joined_now()
            seen = self._join_seen
            now = time.monotonic()
            if seen is None or seen.revision != revision:
                self._join_seen = _Seen(None, revision, now)
                if seen is not None:
                    await self._signal("duplicate_poller_id")
                    self.log.error(
                        "cluster_duplicate_poller_id",
                        why="another live process writes this poller_id's member record; not joining",
                    )
                return
            if now - seen.since < self.member_timeout:
                return  # wait: is it an earlier, dead process of ours, or a live duplicate?
            self._member_revision = await self._call(lambda: kv.update(key, record, last=revision))
        await self._joined_now()

    def _is_mine(self, raw: bytes | None) -> bool:
        try:
            return MemberRecord.parse(raw or b"").instance == self.instance
        except RecordError:
            return False

    async def _joined_now(self) -> None:
        self._joined_at = time.monotonic()
        self._joined = True
        self._reached()
        self._live_key = None
        self.log.info("cluster_joined", instance=self.instance, capacity=self.config.capacity, tenants=self.config.tenants)
        await self._signal("member")

    async def _heartbeat(self) -> None:
        assert self._kv is not None
        kv, key = self._kv, member_key(self.poller_id)
        self.beats += 1
        record = self._record().dump()
        held = Counter(self._agents[n].tenant for n in self.held if n in self._agents)
        for tenant in self.config.tenants or sorted({a.tenant for a in self._agents.values()}):
            self.metrics.cluster_leases.labels(tenant=tenant).set(held.get(tenant, 0))
        try:
            self._member_revision = await self._call(lambda: kv.update(key, record, last=self._member_revision))
            self._reached()
            await self._signal()
        except nats.js.errors.KeyWrongLastSequenceError:
            try:
                entry = await self._call(lambda: kv.get(key))
            except nats.js.errors.KeyNotFoundError:
                entry = None
            if entry is not None and self._is_mine(entry.value):  # our own write whose ack was lost
                self._member_revision = entry.revision or 0
                return
            # Someone else wrote our record (or it expired during an outage): join again,
            # which tells a restart of ours from a live duplicate.
            self._joined = False
            self.ready.clear()
            self.log.warning("cluster_membership_lost", why="our member record was changed or removed by someone else")
            await self._release_all(list(self._leases))

    async def _watch_members(self) -> None:
        """Follow every member record as it changes, until the watch goes quiet.

        Our own heartbeat passes through every eighth of an interval, so a
        watch silent for much longer is broken (e.g. by an outage): return,
        and the caller starts a new one.
        """
        assert self._kv is not None
        watcher = await self._kv.watch(MEMBER_PREFIX + ">")
        try:
            while True:
                try:
                    entry = await watcher.updates(timeout=max(2.0, self.member_timeout * 4))  # type: ignore[no-untyped-call]
                except nats.errors.TimeoutError:
                    return
                if entry is not None:
                    self._observe(entry.key, entry.revision or 0, entry.operation, entry.value)
        finally:
            with contextlib.suppress(*_UNANSWERED):
                await watcher.stop()  # type: ignore[no-untyped-call]

    def _observe(self, key: str, revision: int, operation: str | None, raw: bytes | None) -> None:
        if operation in ("DEL", "PURGE"):  # left cleanly
            self._members.pop(key, None)
            return
        seen = self._members.get(key)
        if seen is not None and seen.revision >= revision:
            return
        record = None
        try:
            record = MemberRecord.parse(raw or b"")
            if member_key(record.poller_id) != key:
                raise RecordError("record names another poller_id than its key")
        except RecordError as exc:
            self.log.warning("cluster_member_unreadable", key=key[:80], problem=str(exc))
            record = None
        now = time.monotonic()
        self._members[key] = _Seen(record, revision, now)
        if record is not None and record.instance == self.instance:
            if self._own_seen_at and now - self._own_seen_at >= self.member_timeout:
                # Our own heartbeat was held up too (a leader election, an outage): the
                # others' were too, so they get a full member_timeout from now to show theirs.
                self._resumed_at = now
            self._own_seen_at = now

    def _live_members(self) -> list[Member]:
        """Members whose heartbeat we saw change within member_timeout of the last
        time we saw our own: when this process or its watch runs late, nobody is
        declared gone for it (a false death would only move agents back and forth)."""
        now = self._own_seen_at
        members: list[Member] = []
        for key, seen in self._members.items():
            record = seen.record
            if record is None:
                continue
            mine = key == member_key(self.poller_id)
            if mine and (record.instance != self.instance or not self._joined):
                continue
            if not mine and now - max(seen.since, self._resumed_at) >= self.member_timeout:
                continue
            tenants = frozenset(record.tenants) if record.tenants is not None else None
            members.append(Member(record.poller_id, self._capacity(record), tenants))
        if self._joined and not any(m.name == self.poller_id for m in members):
            tenants = frozenset(self.config.tenants) if self.config.tenants is not None else None
            members.append(Member(self.poller_id, self.config.capacity, tenants))
        return members

    def _capacity(self, record: MemberRecord) -> float:
        """A member's weight, capped at MAX_CAPACITY (a record claiming more is bounded, and said once)."""
        if record.capacity <= MAX_CAPACITY:
            return record.capacity
        if record.poller_id not in self._capped:
            self._capped.add(record.poller_id)
            self.log.warning(
                "cluster_member_capacity_capped",
                member=record.poller_id,
                capacity=record.capacity,
                capped_to=MAX_CAPACITY,
                why="a member's capacity above the largest a config allows is not believed",
            )
        return MAX_CAPACITY

    async def _reassign(self) -> None:
        if time.monotonic() - self._joined_at < 2 * self.heartbeat_every:
            return  # let the member watch deliver what is there before deciding anything
        members = self._live_members()
        key = tuple(sorted((m.name, m.weight, m.tenants) for m in members))
        if key == self._live_key:
            return
        self._live_key = key
        self._check_peers()
        agents = {name: agent.tenant for name, agent in self._agents.items()}
        # Pure CPU (about a second at 100,000 agents): off the event loop's thread.
        owners = await asyncio.to_thread(assign, agents, members)
        moved = sum(1 for name, owner in owners.items() if self._owners.get(name) != owner)
        self._owners = owners
        mine = sum(1 for owner in owners.values() if owner == self.poller_id)
        unowned = sorted(name for name, owner in owners.items() if owner is None)
        self.metrics.cluster_members.set(len(members))
        self.log.info(
            "cluster_assignment",
            members=[m.name for m in sorted(members, key=lambda m: m.name)],
            agents=len(owners),
            mine=mine,
            moved=moved,
            unowned=len(unowned),
        )
        for name in unowned:
            agent = self._agents[name]
            self.log.warning("agent_unowned", agent=name, tenant=agent.tenant, why="no live member serves this tenant")
        self.members = sorted(m.name for m in members)
        await self._release_all(name for name, lease in self._leases.items() if lease.held and owners.get(name) != self.poller_id)
        self.ready.set()
        await self._signal()

    def _check_peers(self) -> None:
        for seen in self._members.values():
            record = seen.record
            if record is None or record.poller_id == self.poller_id:
                continue
            if record.fleet != self._fleet or record.interval != self.interval:
                self.log.warning(
                    "cluster_config_mismatch",
                    member=record.poller_id,
                    why="replicas must share the agent list and poll_interval, or they compute different owners",
                    their_interval=record.interval,
                    same_agents=record.fleet == self._fleet,
                )


def _package_version() -> str:
    from poller._version import __version__

    return __version__
