"""Push agents behind several gateway replicas: who answers for each, through the cluster bucket.

Behind a load balancer an agent's pushes reach any replica, and a reconnect
may land on another one. Each replica knows only the pushes it took
(poller.gateway.PushTracker), so alone it would call an agent unreachable
that merely pushes elsewhere. So every replica also writes, in the cluster's
JetStream KV bucket, a sighting of each agent that pushed to it::

    push.<tenant>.<agent>     PushSighting: poller_id, instance, peer, pushes (JSON)

(written when the agent pushes here, at most once per half push interval,
and at once when it arrives from another replica; not when another replica
has been seen taking a push since its last push here, which would put older
news over newer), and watches every
replica's sightings, stamping each change with its own clock: no other
host's clock plays a part. Then, for each push agent, `view()` says what this
replica reports:

- `ok`: it pushed here within 2 intervals (and no other replica has seen a
  push since);
- `elsewhere`: another replica saw it push within 2 intervals (`via` names
  it). Not unreachable, no health event, not connected here;
- when no replica has seen a push for 2 intervals, exactly one replica
  answers for it: the rendezvous owner of the agent among the live members
  (poller.cluster.assign, the same on every replica). It reports `pending`
  (never pushed anywhere) or `unreachable` (reason `timeout`); the others
  show `elsewhere` with `via` = that owner.

The watch checks itself: every sighting this replica writes must come back
through it. When one has not within `WATCH_STALL_TICKS` ticks (at least
`WATCH_STALL_MIN` seconds), the watch is taken as stalled (a consumer the
server dropped, a lost subscription), logged as `push_liveness_watch_stalled`
and opened again, which replays the latest sighting of every agent.

Without a bucket (one replica) the tracker's own state is the answer.
Results need nothing of this: a pushed result's Msg-Id is derived from the
agent and its own timestamp (poller.nats.messages), so a push retried
against another replica is stored once.

>>> liveness = SharedPushLiveness(kv, tracker, poller_id="poller-1", members=node.live_members)  # doctest: +SKIP
>>> liveness.start()                                   # doctest: +SKIP
>>> liveness.view(entry).state                         # doctest: +SKIP
'elsewhere'
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import nats.errors
from nats.js.kv import KeyValue

from poller.cluster.assign import Member, owner
from poller.cluster.records import PUSH_PREFIX, PushSighting, RecordError, parse_push_key, push_key
from poller.gateway.liveness import STALE_INTERVALS, PushTracker, live_interval
from poller.gateway.registry import PushEntry
from poller.logs import get_logger

__all__ = ["PUSH_PREFIX", "PushSighting", "PushView", "SharedPushLiveness", "parse_push_key", "push_key"]

log = get_logger("poller.cluster")

# A write of ours not seen back through the watch after this many ticks (and
# at least this many seconds) means the watch stalled: it is opened again.
WATCH_STALL_TICKS = 20
WATCH_STALL_MIN = 2.0
# A NATS failure (a watch that did not open, a put that failed) is tried again after
# at most this long, whatever the tick: the tick paces writes, not recovery.
RETRY_PAUSE = 1.0
PushViewState = Literal["pending", "ok", "unreachable", "elsewhere"]


@dataclass(frozen=True, slots=True)
class PushView:
    """What this replica reports for one push agent.

    `reporter`: this replica answers for it (its state, its health events,
    its log lines); `via`: the replica it pushes to, or that answers for it.
    """

    state: PushViewState
    reporter: bool
    via: str | None = None


@dataclass(slots=True)
class _Seen:
    sighting: PushSighting
    at: float  # this host's wall clock when the change was seen (the tracker's clock)


def _moved_on(other: _Seen | None, last_here: float | None) -> bool:
    """Another replica's sighting came in after the agent's last push here: it moved on."""
    return other is not None and last_here is not None and other.at > last_here


class SharedPushLiveness:
    """This replica's part in shared push liveness (see the module doc). One event loop."""

    def __init__(
        self,
        kv: KeyValue,
        tracker: PushTracker,
        *,
        poller_id: str,
        members: Callable[[], Sequence[Member]],
        instance: str | None = None,
        tick: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kv = kv
        self.tracker = tracker
        self.poller_id = poller_id
        self.instance = instance or secrets.token_hex(8)
        self.members = members
        self.tick = tick
        self._clock = clock
        self._entries: dict[tuple[str, str], PushEntry] = {}
        self._seen: dict[tuple[str, str], _Seen] = {}
        self._written: dict[tuple[str, str], tuple[int, float]] = {}  # pushes written, when
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._changed = asyncio.Condition()
        self._publishing = asyncio.Lock()  # one publish() at a time, or both would write the same news
        self.watcher: Any = None  # the bucket watch open now (nats-py's KeyWatcher)
        self.watch_restarts = 0  # watches opened again after the first
        self._unechoed: float | None = None  # monotonic time of our oldest write the watch has not shown
        self.log = log.bind(poller_id=poller_id)

    def set_entries(self, entries: Iterable[PushEntry]) -> None:
        """The push agents (on start and on reload)."""
        self._entries = {(e.tenant, e.name): e for e in entries}

    def start(self) -> None:
        """Watch every replica's sightings and write ours, in the background (until stop())."""
        if not self._tasks:
            self._stopping = False
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._forever(self._watch), name="push liveness watch"),
                loop.create_task(self._forever(self._publish_loop), name="push liveness publish"),
            ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        self._stopping = True  # the loops end on their own should a cancellation be lost
        # nats-py's watch waits in asyncio.wait_for, which on Python 3.11 returns a result that
        # races a cancellation and drops the cancellation: cancel again until the tasks end.
        while tasks:
            for task in tasks:
                task.cancel()
            _, pending = await asyncio.wait(tasks, timeout=1.0)
            tasks = list(pending)

    async def wait_for(self, predicate: Callable[[SharedPushLiveness], bool]) -> None:
        """Until predicate(self) holds; re-checked at every sighting seen (for tests and tools)."""
        async with self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    def sighting(self, entry: PushEntry) -> PushSighting | None:
        """The latest sighting of entry in the bucket (by any replica, this one included), if any."""
        seen = self._seen.get((entry.tenant, entry.name))
        return seen.sighting if seen is not None else None

    # -- deciding ------------------------------------------------------------------------

    def view(self, entry: PushEntry, *, now: float | None = None) -> PushView:
        """What this replica reports for entry now (the module doc's rules)."""
        now = self._clock() if now is None else now
        key = (entry.tenant, entry.name)
        local = self.tracker.state_of(entry, now=now)
        record = self.tracker.get(entry.tenant, entry.name)
        seen = self._seen.get(key)
        other = seen if seen is not None and seen.sighting.instance != self.instance else None
        interval = live_interval(record, entry)
        if other is not None and other.sighting.told_interval is not None:
            # The replica the agent pushes to told it this interval: after a reload that
            # shortened the entry's, the agent keeps that pace until it asks again.
            interval = max(interval, other.sighting.told_interval)
        window = STALE_INTERVALS * interval
        other_fresh = other is not None and now - other.at <= window
        if local == "ok":
            last_here = record.last_push if record is not None else None
            if other is not None and other_fresh and _moved_on(other, last_here):
                return PushView("elsewhere", False, other.sighting.poller_id)
            return PushView("ok", True)
        if other is not None and other_fresh:
            return PushView("elsewhere", False, other.sighting.poller_id)
        members = list(self.members())
        answering = owner(f"push/{entry.tenant}/{entry.name}", members, entry.tenant) if members else self.poller_id
        if answering is not None and answering != self.poller_id:
            return PushView("elsewhere", False, answering)
        never = seen is None and (record is None or record.last_push is None)
        return PushView("pending" if never else "unreachable", True)

    # -- the bucket ----------------------------------------------------------------------

    async def publish(self) -> int:
        """Write a sighting for every agent that pushed here since our last one (at most once per
        half interval each, at once when another replica's sighting is the latest); returns how many."""
        async with self._publishing:
            return await self._publish()

    async def _publish(self) -> int:
        now = self._clock()
        written = 0
        for key, entry in list(self._entries.items()):
            record = self.tracker.get(*key)
            if record is None or record.last_push is None or record.pushes == 0:
                continue
            count, when = self._written.get(key, (0, 0.0))
            if record.pushes == count:
                continue
            seen = self._seen.get(key)
            moved_here = seen is None or seen.sighting.instance != self.instance
            if moved_here and _moved_on(seen, record.last_push):
                # Writing now would put older news over newer, and that replica would not
                # write again until the agent's next push there.
                continue
            if not moved_here and now - when < entry.interval / 2:
                continue
            sighting = PushSighting(self.poller_id, self.instance, record.peer, record.pushes, record.told_interval)
            await self.kv.put(push_key(*key), sighting.dump())
            if self._unechoed is None:
                self._unechoed = time.monotonic()
            self._written[key] = (record.pushes, now)
            written += 1
        return written

    async def _publish_loop(self) -> None:
        while not self._stopping:
            await self.publish()
            await asyncio.sleep(self.tick)

    async def _watch(self) -> None:
        if self.watcher is not None:  # every watch after the first: a stall, or a failure _forever logged
            self.watch_restarts += 1
        watcher = self.watcher = await self.kv.watch(PUSH_PREFIX + ">")
        self._unechoed = None
        stall = max(WATCH_STALL_MIN, self.tick * WATCH_STALL_TICKS)
        try:
            while not self._stopping:
                try:
                    entry = await watcher.updates(timeout=max(self.tick, 0.05) * 4)  # type: ignore[no-untyped-call]
                except nats.errors.TimeoutError:
                    entry = None  # quiet fleet, or a stalled watch: the echo of our writes tells
                if isinstance(entry, KeyValue.Entry):
                    await self._observe(entry.key, entry.operation, entry.value)
                    continue
                if entry is not None:  # nats-py's end-of-watch marker: the watch was stopped under us
                    self.log.warning("push_liveness_watch_ended", restarts=self.watch_restarts + 1)
                    return
                if self._unechoed is not None and time.monotonic() - self._unechoed > stall:
                    self.log.warning("push_liveness_watch_stalled", waited=round(stall, 2), restarts=self.watch_restarts + 1)
                    return  # _forever opens a new watch, which replays the latest sightings
        finally:
            # Bounded: unsubscribing a watch whose consumer the server dropped can wait on it.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await watcher.stop()  # type: ignore[no-untyped-call]

    async def _observe(self, key: str, operation: str | None, raw: bytes | None) -> None:
        self._unechoed = None  # the watch delivers: a change (ours or another's) came through
        try:
            name = parse_push_key(key)
            if operation in ("DEL", "PURGE"):
                self._seen.pop(name, None)
            else:
                self._seen[name] = _Seen(PushSighting.parse(raw or b""), self._clock())
        except RecordError as exc:
            self.log.warning("push_sighting_unreadable", key=key[:80], problem=str(exc))
            return
        async with self._changed:
            self._changed.notify_all()

    async def _forever(self, step: Callable[[], object]) -> None:
        """Run step again after a NATS failure (logged), at most RETRY_PAUSE later; never end the daemon."""
        warned = -float("inf")
        while not self._stopping:
            try:
                await step()  # type: ignore[misc]
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS down, bucket gone: the tracker's own view still stands
                if time.monotonic() - warned >= 60.0:  # once a minute in an outage, not once per tick
                    warned = time.monotonic()
                    self.log.warning("push_liveness_unavailable", error=str(exc) or type(exc).__name__)
            if self._stopping:
                return
            await asyncio.sleep(min(self.tick, RETRY_PAUSE))
