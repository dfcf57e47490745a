"""JetStreamSink: results to `<tenant>.<channel>` on NATS JetStream, through a durable outbox.

publish() derives the messages of a result (the result on its channel, plus a
health event when the agent's state changed), commits them to the outbox and
returns: from then on they survive a crash of the poller and an outage of
NATS. A sender task publishes the outbox in order, waits for each JetStream
ack (with the stream's name expected, and a deterministic Nats-Msg-Id so a
replay is stored once) and removes what was acked. One tenant's trouble (a
stream that cannot be created, a permission the server refuses) holds back
only that tenant's rows. Heartbeats (`<tenant>.pollers.heartbeat`) are a sign
of life, so they are sent only while connected, never replayed.

Without an outbox (outbox=None, for benchmarks and embedded use) publish()
waits for the ack itself and raises DeliveryError when there is none.

>>> sink = JetStreamSink(JetStreamSettings(url="nats://127.0.0.1:4222", creds=Path("poller.creds"),
...                                        outbox=Path("outbox.db")))                  # doctest: +SKIP
>>> await sink.publish(result); await sink.close()                                          # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError
from prometheus_client import CollectorRegistry

from poller.config import PollerConfig
from poller.config.model import DEFAULT_NATS_URL, DEFAULT_PUBLISH_TIMEOUT
from poller.delivery.result import PollResult
from poller.identity.reasons import PollerError, ResultRefused
from poller.logs import get_logger
from poller.nats.connect import NatsTarget, TlsFiles, cluster_size, connect
from poller.nats.creds import NatsCredentials
from poller.nats.health import HealthTracker
from poller.nats.messages import Message, heartbeat_message, result_message
from poller.nats.metrics import DeliveryMetrics
from poller.nats.outbox import DEFAULT_MAX_BYTES, DEFAULT_MAX_ROWS, Outbox, OutboxRow
from poller.nats.streams import StreamLimits, StreamMismatch, ensure_stream
from poller.nats.subjects import SubjectError, stream_name

__all__ = ["DeliveryError", "JetStreamSettings", "JetStreamSink", "sink_from_config"]

log = get_logger("poller.nats")

MSG_ID = "Nats-Msg-Id"
# Errors a retry cannot fix: the message is dropped, counted and logged.
_TOO_LARGE_CODES = frozenset({10054})  # "message size exceeds maximum allowed"


class DeliveryError(PollerError):
    """A message was not acknowledged by JetStream (outbox off), or the sink is closed."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True, slots=True)
class JetStreamSettings:
    """How the sink reaches NATS and how much it keeps while it cannot.

    url: one server URL, a comma-separated string or a list (the client's server pool).
    creds: an NKey seed, `.creds` or nats-config JSON file (None: connect without auth,
    JetStream API at `$JS.API`). tls: CA and client certificate for tls:// URLs.
    outbox: the SQLite file (None: no outbox). replicas: of each stream the sink
    creates (None: 3 on a JetStream cluster of at least 3 servers, else 1).
    """

    url: str | Sequence[str] = DEFAULT_NATS_URL
    creds: Path | None = None
    tls: TlsFiles | None = None
    replicas: int | None = None
    outbox: Path | None = None
    outbox_max_rows: int = DEFAULT_MAX_ROWS
    outbox_max_bytes: int = DEFAULT_MAX_BYTES
    limits: StreamLimits = field(default_factory=StreamLimits)
    publish_timeout: float = DEFAULT_PUBLISH_TIMEOUT
    window: int = 256  # publishes in flight at once (acks awaited together)
    heartbeat_interval: float | None = 30.0
    poller_id: str = "poller"
    retry_initial: float = 0.5
    retry_max: float = 30.0


class JetStreamSink:
    """The daemon's Sink protocol (publish, flush, close) over NATS JetStream."""

    def __init__(
        self, settings: JetStreamSettings, *, tenants: Iterable[str] = (), metrics: DeliveryMetrics | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics if metrics is not None else DeliveryMetrics()
        # Tenants served (heartbeats go to each) and the agents seen per tenant.
        self.served: dict[str, set[str]] = {tenant: set() for tenant in tenants}
        # Bad URLs, TLS files or credentials are refused here, before anything is polled.
        self.target = NatsTarget.of(settings.url, settings.creds, settings.tls)
        self.creds: NatsCredentials | None = self.target.credentials()
        self.health = HealthTracker()
        self.outbox: Outbox | None = None
        self.nc: NatsClient | None = None
        self.acked = 0
        self.dropped = 0  # results the outbox dropped when full: never delivered
        self._js: JetStreamContext | None = None
        self._admin: dict[str, JetStreamContext] = {}
        self._streams_ready: set[str] = set()
        self._servers: int | None = None  # servers in the JetStream cluster, asked once
        self._blocked: dict[str, tuple[float, int]] = {}  # tenant -> (retry at, failures)
        self._wake = asyncio.Event()
        self._acked = asyncio.Condition()
        self._connected = asyncio.Event()
        self._closing = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._start_lock = asyncio.Lock()

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Open the outbox and start connecting (publish() does this on first use)."""
        async with self._start_lock:
            if self._started:
                return
            if self._closing.is_set():
                raise DeliveryError("the NATS sink is closed")
            if self.settings.outbox is not None:
                self.outbox = await Outbox.open(
                    self.settings.outbox,
                    max_rows=self.settings.outbox_max_rows,
                    max_bytes=self.settings.outbox_max_bytes,
                    on_drop=self._dropped,
                )
                self.metrics.outbox_pending.set(self.outbox.rows)
                if self.outbox.rows:
                    log.info("outbox_replay", pending=self.outbox.rows, path=str(self.settings.outbox))
            loop = asyncio.get_running_loop()
            self._tasks.append(loop.create_task(self._connect(), name="nats connect"))
            if self.outbox is not None:
                self._tasks.append(loop.create_task(self._send_loop(), name="nats outbox sender"))
            if self.settings.heartbeat_interval:
                self._tasks.append(loop.create_task(self._heartbeat_loop(), name="nats heartbeat"))
            self._started = True

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    async def publish(self, result: PollResult) -> None:
        """Make the result durable (outbox) or acknowledged (no outbox) before returning."""
        await self.start()
        try:
            messages = [result_message(result), *self.health.observe(result)]
        except (SubjectError, ResultRefused) as err:
            # Never silent: the result has no subject it may go to (e.g. a service type with a '.').
            self.metrics.undeliverable.labels(tenant=result.tenant, reason=err.reason.value).inc()
            log.error(
                "result_undeliverable", tenant=result.tenant, agent=result.agent, reason=err.reason.value, detail=err.detail
            )
            return
        self.served.setdefault(result.tenant, set()).add(result.agent)
        if self.outbox is not None:
            await self.outbox.put(messages)
            self.metrics.outbox_pending.set(self.outbox.rows)
            self._wake.set()
            return
        for message in messages:
            await self._publish_direct(message)

    async def flush(self) -> None:
        """Nothing to do: publish() already made each result durable (the registry calls
        this at the end of every cycle, so it must not wait on the network)."""

    async def wait_drained(self, timeout: float) -> bool:
        """True once the outbox is empty (everything acked), False at the timeout."""
        if self.outbox is None:
            return True
        outbox = self.outbox
        try:
            async with asyncio.timeout(timeout), self._acked:
                await self._acked.wait_for(lambda: outbox.rows == 0)
        except TimeoutError:
            return False
        return True

    async def close(self, drain: float = 2.0) -> None:
        """While connected, give the sender up to `drain` seconds to empty the outbox; then stop
        (what is not acked stays in the outbox for the next start) and disconnect."""
        if self.connected:
            await self.wait_drained(drain)
        self._closing.set()
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
            self.nc = None
        if self.outbox is not None:
            await self.outbox.close()
            log.info("nats_sink_closed", pending=self.outbox.rows, acked=self.acked)

    # -- connection ----------------------------------------------------------

    async def _connect(self) -> None:
        """Connect (nats-py retries until a server answers, and reconnects after that);
        an unexpected failure is logged and retried, never left to end the task silently."""
        delay = self.settings.retry_initial
        while self.nc is None:
            try:
                self.nc = await connect(
                    self.target,
                    name=f"serviceradar-poller {self.settings.poller_id}",
                    on_disconnected=self._on_disconnected,
                    on_reconnected=self._on_reconnected,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,  # also retries the first connect: the outbox holds results meanwhile
                    reconnect_time_wait=1,
                    connect_timeout=2,
                )
            except Exception as exc:  # e.g. a TLS mismatch: said once per retry, with backoff
                log.error("nats_connect_failed", servers=self.target.shown, error=str(exc) or repr(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(self.settings.retry_max, delay * 2)
        self._js = self.nc.jetstream(timeout=self.settings.publish_timeout)
        self._connected.set()
        self.metrics.connected.set(1)

    async def _on_disconnected(self) -> None:
        if self._connected.is_set() and not self._closing.is_set():
            self._connected.clear()
            self.metrics.connected.set(0)
            log.warning("nats_sink_waiting", pending=self.outbox.rows if self.outbox else None)

    async def _on_reconnected(self) -> None:
        self._connected.set()
        self._blocked.clear()  # retry every tenant now rather than at its backoff
        self._wake.set()
        self.metrics.connected.set(1)
        if self.outbox is not None and self.outbox.rows:
            log.info("nats_sink_resumed", pending=self.outbox.rows)

    async def _cluster_size(self) -> int:
        if self._servers is None:
            self._servers = await cluster_size(self.target)
        return self._servers

    def _admin_js(self, tenant: str) -> JetStreamContext:
        """The JetStream API that manages `tenant`'s stream (through the account import for the poller)."""
        js = self._admin.get(tenant)
        if js is None:
            assert self.nc is not None
            prefix = self.creds.api_prefix(tenant) if self.creds is not None else "$JS.API"
            js = self._admin[tenant] = self.nc.jetstream(prefix=prefix, timeout=self.settings.publish_timeout)
        return js

    async def _ready(self, tenant: str) -> None:
        if tenant in self._streams_ready:
            return
        await ensure_stream(
            self._admin_js(tenant), tenant, self.settings.limits, replicas=self.settings.replicas, cluster_size=self._cluster_size
        )
        self._streams_ready.add(tenant)

    # -- sending -------------------------------------------------------------

    async def _publish_one(self, message: Message) -> None:
        assert self._js is not None
        ack = await self._js.publish(
            message.subject,
            message.payload,
            stream=stream_name(message.tenant),  # Nats-Expected-Stream: never lands in another stream
            headers={MSG_ID: message.msg_id},
        )
        if ack.duplicate:
            self.metrics.duplicates.labels(tenant=message.tenant).inc()
        self.metrics.published.labels(tenant=message.tenant).inc()

    async def _publish_direct(self, message: Message) -> None:
        try:
            async with asyncio.timeout(self.settings.publish_timeout):
                await self._connected.wait()
            await self._ready(message.tenant)
            await self._publish_one(message)
        except (TimeoutError, nats.errors.Error, PollerError) as exc:
            if isinstance(exc, NoStreamResponseError):
                self._streams_ready.discard(message.tenant)
            raise DeliveryError(f"{message.subject}: not acknowledged: {exc or exc.__class__.__name__}") from exc
        self.acked += 1

    async def _send_loop(self) -> None:
        """Publish the outbox, oldest first. A cursor walks forward while every publish
        is acked (the removal of one batch overlaps the sending of the next); any
        failure, or reaching the end, sends it back to the oldest row."""
        assert self.outbox is not None
        outbox = self.outbox
        cursor = 0
        removing: asyncio.Task[None] | None = None
        try:
            while not self._closing.is_set():
                await self._connected.wait()
                self._wake.clear()
                now = time.monotonic()
                blocked = {t for t, (at, _) in self._blocked.items() if at > now}
                # Read past the rows of blocked tenants only when there are any.
                rows = await outbox.peek(self.settings.window * (4 if blocked else 1), after=cursor)
                rows = [r for r in rows if r.tenant not in blocked][: self.settings.window]
                if not rows:
                    if removing is not None:
                        await removing
                        removing = None
                    if cursor:
                        cursor = 0  # back to the oldest: rows of blocked or failed tenants
                        continue
                    await self._idle(blocked)
                    continue
                self._note_old(rows)
                acked, dropped = await self._send(rows)
                if removing is not None:
                    await removing  # one removal in flight at a time
                removing = asyncio.ensure_future(self._remove(acked + dropped, len(acked)))
                if len(acked) + len(dropped) < len(rows):
                    await removing
                    removing = None
                    cursor = 0
                else:
                    cursor = rows[-1].id
        finally:
            if removing is not None:
                await asyncio.gather(removing, return_exceptions=True)

    async def _remove(self, ids: list[int], acked: int) -> None:
        assert self.outbox is not None
        await self.outbox.remove(ids)
        self.acked += acked
        self.metrics.outbox_pending.set(self.outbox.rows)
        async with self._acked:
            self._acked.notify_all()

    async def _idle(self, blocked: set[str]) -> None:
        """Wait for new rows, or for the earliest blocked tenant's retry time."""
        retry_at = min((self._blocked[t][0] for t in blocked), default=None)
        timeout = None if retry_at is None else max(0.0, retry_at - time.monotonic())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()

    async def _send(self, rows: list[OutboxRow]) -> tuple[list[int], list[int]]:
        """Publish rows (order kept per tenant); returns (acked ids, dropped ids)."""
        by_tenant: dict[str, list[OutboxRow]] = {}
        for row in rows:
            by_tenant.setdefault(row.tenant, []).append(row)
        sendable: list[OutboxRow] = []
        dropped: list[int] = []
        for tenant, tenant_rows in by_tenant.items():
            try:
                await self._ready(tenant)
            except StreamMismatch as err:
                self._block(tenant, "stream_mismatch", err.detail)
                continue
            except (TimeoutError, nats.errors.Error) as err:
                self._block(tenant, "stream_unavailable", str(err) or err.__class__.__name__)
                continue
            for row in tenant_rows:
                if _subject_of(row) is None:
                    dropped.append(row.id)
                    self._drop(row, "invalid_subject")
                else:
                    sendable.append(row)
        outcomes = await asyncio.gather(*(self._publish_one(row.message()) for row in sendable), return_exceptions=True)
        acked: list[int] = []
        failed: Counter[str] = Counter()
        last: BaseException | None = None
        for row, outcome in zip(sendable, outcomes, strict=True):
            if outcome is None:
                acked.append(row.id)
                self._blocked.pop(row.tenant, None)
            elif isinstance(outcome, nats.errors.MaxPayloadError) or (
                isinstance(outcome, APIError) and outcome.err_code in _TOO_LARGE_CODES
            ):
                dropped.append(row.id)
                self._drop(row, "too_large")
            elif isinstance(outcome, (nats.errors.Error, TimeoutError)):
                if isinstance(outcome, NoStreamResponseError):
                    self._streams_ready.discard(row.tenant)  # e.g. a server that lost its store: check again
                failed[row.tenant] += 1
                last = outcome
            else:
                raise outcome  # a bug, not a delivery problem: let it surface
        for tenant, n in failed.items():
            self._block(tenant, "not_acknowledged", f"{n} publishes: {last!r}")
        return acked, dropped

    def _note_old(self, rows: list[OutboxRow]) -> None:
        """A row older than the streams' duplicate window may already be stored (its ack
        lost before the outage): JetStream can no longer tell, so say so."""
        horizon = time.time() - self.settings.limits.duplicate_window
        old = Counter(r.tenant for r in rows if r.enqueued_at < horizon)
        for tenant, n in old.items():
            self.metrics.replayed_beyond_window.labels(tenant=tenant).inc(n)
            log.warning(
                "outbox_replay_beyond_duplicate_window", tenant=tenant, rows=n, window=self.settings.limits.duplicate_window
            )

    def _block(self, tenant: str, reason: str, detail: str) -> None:
        _, failures = self._blocked.get(tenant, (0.0, 0))
        failures += 1
        delay = min(self.settings.retry_max, self.settings.retry_initial * 2 ** (failures - 1))
        delay = random.uniform(delay / 2, delay)
        self._blocked[tenant] = (time.monotonic() + delay, failures)
        self.metrics.publish_failures.labels(tenant=tenant, reason=reason).inc()
        logger = log.warning if failures == 1 else log.debug
        logger("nats_publish_failed", tenant=tenant, reason=reason, detail=detail, retry_in=round(delay, 2), failures=failures)

    def _drop(self, row: OutboxRow, reason: str) -> None:
        self.metrics.undeliverable.labels(tenant=row.tenant, reason=reason).inc()
        log.error("result_undeliverable", tenant=row.tenant, subject=row.subject, msg_id=row.msg_id, reason=reason)

    def _dropped(self, per_tenant: dict[str, int]) -> None:
        for tenant, n in per_tenant.items():
            self.dropped += n
            self.metrics.outbox_dropped.labels(tenant=tenant).inc(n)
            log.error("outbox_full_dropped_oldest", tenant=tenant, dropped=n, max_rows=self.settings.outbox_max_rows)

    # -- heartbeats ----------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_interval
        assert interval
        while not self._closing.is_set():
            if self.connected:
                await self._heartbeat()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._closing.wait()

    async def _heartbeat(self) -> None:
        now = time.time()
        for tenant in sorted(self.served):
            message = heartbeat_message(
                tenant,
                poller_id=self.settings.poller_id,
                at=now,
                interval=self.settings.heartbeat_interval or 0.0,
                agents=len(self.served.get(tenant, ())),
            )
            try:
                await self._ready(tenant)
                await self._publish_one(message)
            except (TimeoutError, nats.errors.Error, PollerError) as err:
                log.debug("heartbeat_not_sent", tenant=tenant, error=str(err) or err.__class__.__name__)


def _subject_of(row: OutboxRow) -> str | None:
    """The row's subject if it lies under the row's tenant (a tampered outbox cannot
    cross tenants: the publish also expects the stream tenant-<row's tenant>)."""
    subject = row.subject
    if (
        not subject.startswith(row.tenant + ".")
        or "*" in subject
        or ">" in subject
        or not subject.isprintable()
        or " " in subject
    ):
        return None
    return subject


def sink_from_config(settings: PollerConfig, registry: CollectorRegistry | None = None) -> JetStreamSink:
    """The daemon's NATS sink from its config (`sink: {"type": "nats", ...}`), its metrics in `registry`."""
    sink = settings.sink
    metrics = DeliveryMetrics(registry)
    return JetStreamSink(
        JetStreamSettings(
            url=sink.url or DEFAULT_NATS_URL,
            creds=sink.creds,
            tls=sink.tls,
            replicas=sink.replicas,
            outbox=sink.outbox,
            outbox_max_rows=sink.outbox_max_rows,
            outbox_max_bytes=sink.outbox_max_bytes,
            limits=StreamLimits(
                max_age=sink.max_age,
                max_bytes=sink.max_bytes if sink.max_bytes is not None else -1,
                duplicate_window=sink.duplicate_window,
            ),
            publish_timeout=sink.publish_timeout,
            heartbeat_interval=settings.poll_interval,
            poller_id=settings.poller_id,
        ),
        metrics=metrics,
    )
