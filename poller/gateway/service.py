"""AgentGateway: the AgentGatewayService servicer (Hello, GetConfig, PushStatus,
StreamStatus, ControlStream), behind TenantServerInterceptor.

By the time a handler runs the interceptor has proven the caller (the same
proof as for any server call) and the push registry's policy has admitted
it. Each handler then holds the request to that proof:

- `agent_id` must be the proven component and `partition`, when set, the
  proven partition (else `identity_mismatch`, audited), in the request and in
  every status it carries;
- `tenant_slug` (any value but the proven tenant) and `tenant_id` (a value
  naming another tenant the gateway knows) are `payload_mismatch`, audited;
  otherwise these fields, which report the agent's own idea of its tenant,
  are ignored;
- `gateway_id` is ours (the daemon's poller_id), never the agent's.

Each status becomes a PollResult with the proven TenantContext, delivered
through the HandlerRegistry exactly as a polled result (same channels, payload
and label checks, sinks), then the sinks are flushed: `received` is answered
only once the results are as durable as a polled cycle's. Every result of a
request passes the registry's checks before any is delivered: a request
refused by them files nothing. A sink that fails part way files at least once
(the agent may resend; NATS stores a resend with the same timestamp once).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterator, Mapping
from typing import Any, NoReturn, Protocol, TypeVar, cast

import grpc

from poller.agent.budget import ReassemblyBudget, StreamLease
from poller.agent.stream import IncompleteStream, StreamAssembler
from poller.delivery.registry import Checked, Delivery
from poller.delivery.result import PollResult
from poller.gateway.bounds import GatewayBounds, TenantLimits
from poller.gateway.liveness import STALE_INTERVALS, PushTracker, live_interval
from poller.gateway.reads import AgentReads
from poller.gateway.registry import PushEntry, PushRegistry
from poller.identity.context import TenantContext, current_tenant
from poller.identity.reasons import IdentityRefused, PollerError, Reason
from poller.logs import LineLimiter, get_logger
from poller.metrics import GATEWAY_METHODS, LabelCache, PollerMetrics, default_metrics
from poller.proto import monitoring_pb2 as pb
from poller.proto import monitoring_pb2_grpc as pb_grpc
from poller.server.interceptor import (
    IDENTITY_ENDED,
    IdentityEnded,
    SnapshotSource,
    abort_refused,
    caller_still_holds,
    current_caller,
)

__all__ = ["KEPT_CHUNK_BYTES", "KEPT_STATUS_BYTES", "RESULT_SOURCES", "AgentGateway", "Deliverer"]

log = get_logger("poller.gateway")
audit_log = get_logger("poller.audit")

SERVICE = "monitoring.AgentGatewayService"
PUSH_METHODS = frozenset({f"/{SERVICE}/PushStatus", f"/{SERVICE}/StreamStatus"})
# A status's source decides its kind, and so its channel and size bound. The
# agent's results documents come under several sources: "results" (sweeps),
# and from cf23e4b05 (2026-02) on, its metrics streams "sysmon-metrics",
# "snmp-metrics", "plugin-telemetry" and "plugin-result" (upstream's own
# gateway gives those the results bound). Any other source is a status, as
# upstream's gateway takes it: the tag is the agent's word about what the
# payload is, never about whose it is, and refusing an unknown one would cut
# off every newer agent at its first new stream.
RESULT_SOURCES = frozenset({"results", "sysmon-metrics", "snmp-metrics", "plugin-telemetry", "plugin-result"})
_STATUS_SOURCES = frozenset({"", "status"})  # what nearly every status says: nothing to check
# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: what a
# terminal, a log viewer or a page would act on (a regex search: no set per field).
_has_control = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]").search
T = TypeVar("T")
M = TypeVar("M")
#: A unary method's request, read when awaited (poller.server.read_after_proof, reads_itself).
Read = Callable[[], Awaitable[M | None]]
CONFIG_POLL_INTERVAL = 300  # seconds: how often an agent asks GetConfig again
# The cancellation message of a long-lived call whose caller a reload delisted.
DELISTED = "poller: the push entries no longer admit the caller"
# ... and of a control stream whose agent opened a newer one.
SUPERSEDED = "poller: the agent's newer control stream took its place"
# Seconds a control stream may take to send its hello (the agent sends it at once).
CONTROL_HELLO_TIMEOUT = 30.0
# A tenant over its rate is refused every call, counted in full, but each agent's
# refusals of one method are logged once in this many seconds (with the number held
# back): a flood must not become one, and one agent's flood hides no other agent's.
# The count of a flood that stops inside a window is written a window later (LineLimiter).
OVER_RATE_LOG_EVERY = 10.0
# What a status kept for reassembly holds beyond its wire bytes: a parsed
# GatewayServiceStatus takes 205-225 bytes more of the chunk's upb arena than it
# has on the wire, whatever its size (measured by RSS over 300,000 parsed statuses,
# protobuf 7.36 upb, 64-bit; rounded up for the allocator). Without it, 5,000
# empty statuses lease 44 KB while holding over 1 MB.
KEPT_STATUS_BYTES = 256
# What a chunk kept for reassembly holds beyond its wire bytes, services aside: an
# empty GatewayStatusChunk kept in a list grows the gateway by about 934 bytes (RSS
# over 200,000 of them, same protobuf), so 1 KiB each; charged 15, a stream of
# empty chunks held twenty times what it leased.
KEPT_CHUNK_BYTES = 1024


def _held_bytes(wire_bytes: int, statuses: int) -> int:
    """What a request (or chunk) of `wire_bytes` with `statuses` holds while it is
    checked and delivered: the parsed message, and each status's message copied
    again into its PollResult (upb hands out a copy of a bytes field), so twice
    its bytes, and KEPT_STATUS_BYTES per status."""
    return 2 * wire_bytes + statuses * KEPT_STATUS_BYTES


class Deliverer(Protocol):
    """Where results go: a poller.delivery.HandlerRegistry (check, deliver, flush).

    check refuses a result (its Delivery) or passes it (a Checked that deliver
    takes without checking again); flush answers the sinks that did not make
    the results durable (name -> why), empty when all did: a push is
    `received` only on an empty answer."""

    def check(self, result: PollResult) -> Checked | Delivery: ...

    async def deliver(self, result: PollResult, checked: Checked | None = None) -> Delivery: ...

    async def flush(self) -> Mapping[str, Reason]: ...


class _Refusal(PollerError):
    """A request refused by a gateway handler (answered, never raised to grpc)."""

    def __init__(
        self, reason: Reason, code: grpc.StatusCode, detail: str, *, audited: bool = False, certificate: bool = False
    ) -> None:
        super().__init__(detail)
        self.reason, self.code, self.detail, self.audited = reason, code, detail, audited
        self.certificate = certificate  # the caller's certificate stopped holding (not something it said)


def _mismatch(detail: str) -> _Refusal:
    return _Refusal(Reason.IDENTITY_MISMATCH, grpc.StatusCode.PERMISSION_DENIED, detail, audited=True)


def _exhausted(detail: str) -> _Refusal:
    return _Refusal(Reason.RESOURCE_EXHAUSTED, grpc.StatusCode.RESOURCE_EXHAUSTED, detail)


def _invalid(detail: str) -> _Refusal:
    return _Refusal(Reason.INVALID_PAYLOAD, grpc.StatusCode.INVALID_ARGUMENT, detail)


class _Call:
    """One gateway call: the proven caller, its push entry, its peer."""

    __slots__ = ("agent", "ctx", "delivered", "entry", "method", "peer", "started")

    def __init__(self, ctx: TenantContext, entry: PushEntry, method: str, peer: str) -> None:
        self.ctx, self.entry, self.method, self.peer = ctx, entry, method, peer
        self.agent = (ctx.tenant, ctx.component_id, ctx.partition_id)  # whose read places it takes
        self.started = time.time()
        self.delivered = 0  # results handed to the handlers so far (a cut push may have filed some)


_ADDRESS_FAMILIES = frozenset({"ipv4:", "ipv6:"})


def peer_address(peer: str) -> str:
    """grpc's "ipv4:10.0.0.5:41000" / "ipv6:[::1]:41000" as "10.0.0.5:41000"."""
    return peer[5:] if peer[:5] in _ADDRESS_FAMILIES else peer


class AgentGateway(pb_grpc.AgentGatewayServiceServicer):
    """The servicer; serve it with poller.gateway.serve_gateway (mTLS, the interceptor).

    pushes: who may push and their checks; delivery: the HandlerRegistry the
    results go through; gateway_id: answered as gateway_id and stamped as the
    results' poller_id; partition: the results' partition (the daemon's);
    budget: the StreamStatus reassembly budget (per-tenant share; the
    daemon's, shared with polled streams); trust: the trust source, to know
    which tenants exist (a tenant_id naming one of them is a lie);
    tracker: where each agent's pushes are recorded.
    """

    def __init__(
        self,
        *,
        pushes: PushRegistry,
        delivery: Deliverer,
        gateway_id: str,
        partition: str = "default",
        bounds: GatewayBounds | None = None,
        budget: ReassemblyBudget | None = None,
        trust: SnapshotSource | None = None,
        tracker: PushTracker | None = None,
        metrics: PollerMetrics | None = None,
    ) -> None:
        self.pushes = pushes
        self.delivery = delivery
        self.gateway_id = gateway_id
        self.partition = partition
        self.bounds = bounds or GatewayBounds()
        self.limits = TenantLimits(self.bounds)
        self.reads = AgentReads()  # each agent's messages are read a few at a time
        self.budget = budget or ReassemblyBudget()
        self.trust = trust
        self.tracker = tracker or PushTracker()
        self.metrics = metrics if metrics is not None else default_metrics()
        self._pushes = LabelCache(self.metrics.gateway_pushes)  # (tenant, outcome)
        self._refused = LabelCache(self.metrics.gateway_refused)  # (tenant, method, reason)
        # Long-lived calls open now (ControlStream, a StreamStatus being reassembled), by
        # the task running each: a reload that no longer admits the caller ends them.
        self._held: dict[_Call, asyncio.Task[Any]] = {}
        # Each agent's control stream past its hello (by tenant, component, partition): the
        # one a newer stream of the agent replaces, found without a scan of every held call.
        self._control: dict[tuple[str, str, str], _Call] = {}
        # per (tenant, agent, method, limit)
        self._over_rate_lines = LineLimiter(OVER_RATE_LOG_EVERY, on_held_back=self._over_rate_held_back)
        pushes.on_change(self._entries_changed)

    # -- the five methods ---------------------------------------------------------------

    async def Hello(self, read: Read[pb.AgentHelloRequest], context: grpc.aio.ServicerContext) -> pb.AgentHelloResponse:
        async def body(call: _Call) -> pb.AgentHelloResponse:
            request = await self._read(call, read)
            self._check_identity(call, request.agent_id, request.partition)
            entry = call.entry
            self.tracker.told(entry, entry.interval)
            log.info(
                "push_agent_hello",
                tenant=call.ctx.tenant,
                agent=entry.name,
                peer=call.peer,
                version=request.version[:64],
                config_version=request.config_version[:80],
            )
            return pb.AgentHelloResponse(
                accepted=True,
                agent_id=call.ctx.component_id,
                message="accepted",
                gateway_id=self.gateway_id,
                server_time=int(time.time()),
                heartbeat_interval_sec=_seconds(entry.interval),
                config_outdated=request.config_version != entry.config_version,
                # cac9ec1af agents echo these in their pushes (and skip their sync
                # heartbeat without them): the proven tenant, never the agent's word.
                tenant_id=call.ctx.tenant,
                tenant_slug=call.ctx.tenant,
            )

        return await self._serve(context, "Hello", body)

    async def GetConfig(self, read: Read[pb.AgentConfigRequest], context: grpc.aio.ServicerContext) -> pb.AgentConfigResponse:
        async def body(call: _Call) -> pb.AgentConfigResponse:
            request = await self._read(call, read)
            self._check_identity(call, request.agent_id, "")
            entry = call.entry
            if request.config_version == entry.config_version:
                # Tells the agent nothing (no heartbeat_interval_sec): the version need not
                # change with the interval (a check's own results_interval), so it keeps its pace.
                return pb.AgentConfigResponse(not_modified=True, config_version=entry.config_version)
            self.tracker.told(entry, entry.interval)
            return pb.AgentConfigResponse(
                config_version=entry.config_version,
                config_timestamp=entry.config_timestamp,
                heartbeat_interval_sec=_seconds(entry.interval),
                config_poll_interval_sec=CONFIG_POLL_INTERVAL,
                checks=entry.agent_checks,
            )

        return await self._serve(context, "GetConfig", body)

    async def PushStatus(
        self, read: Read[pb.GatewayStatusRequest], context: grpc.aio.ServicerContext
    ) -> pb.GatewayStatusResponse:
        async def body(call: _Call) -> pb.GatewayStatusResponse:
            request = await self._read(call, read)
            self._check_identity(call, request.agent_id, request.partition)
            self._check_tenant_claims(call, request.tenant_id, request.tenant_slug)
            if len(request.services) > self.bounds.max_services:
                raise _exhausted(f"{len(request.services)} services in one request (at most {self.bounds.max_services})")
            # Held against the tenant's share of the budget until it is delivered and
            # flushed: without it, one agent's 48 concurrent 15 MiB pushes (inside
            # max_calls_per_agent) held 2.3 GiB while a slow flush was waited on.
            with self.budget.lease(call.ctx.tenant) as lease:
                try:
                    lease.grow(_held_bytes(request.ByteSize(), len(request.services)))
                except IncompleteStream as err:
                    raise _exhausted(err.detail) from None
                results = [self._result(call, status, request.timestamp, n) for n, status in enumerate(request.services)]
                await self._deliver(call, results)
            return pb.GatewayStatusResponse(received=True)

        return await self._serve(context, "PushStatus", body, push=True)

    async def StreamStatus(
        self, request_iterator: AsyncIterator[pb.GatewayStatusChunk], context: grpc.aio.ServicerContext
    ) -> pb.GatewayStatusResponse:
        async def body(call: _Call) -> pb.GatewayStatusResponse:
            self.tracker.stream_opened(call.entry, peer=call.peer, at=call.started)
            # The stream's bytes stay leased until it is delivered and flushed, not
            # only while it is reassembled: its results hold them until then.
            with self.budget.lease(call.ctx.tenant) as lease:
                try:
                    async with asyncio.timeout(self.bounds.stream_timeout):
                        with self._held_open(call):
                            kept, timestamp = await self._reassemble(call, self._read_each(call, request_iterator), lease)
                except TimeoutError:
                    raise _Refusal(
                        Reason.INCOMPLETE_STREAM,
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"no final chunk within {self.bounds.stream_timeout:g} s",
                    ) from None
                finally:
                    self.tracker.stream_closed(call.entry)
                results = [
                    self._result(call, status, timestamp, n)
                    for n, status in enumerate(status for chunk in kept for status in chunk.services)
                ]
                await self._deliver(call, results)
            return pb.GatewayStatusResponse(received=True)

        return await self._serve(context, "StreamStatus", body, push=True)

    async def ControlStream(
        self, request_iterator: AsyncIterator[pb.ControlStreamRequest], context: grpc.aio.ServicerContext
    ) -> None:
        """Accepted and held open while the identity holds (the interceptor ends
        it when it stops holding); no commands are sent yet. Its first message is
        the agent's hello (as upstream's gateway: else FAILED_PRECONDITION), within
        CONTROL_HELLO_TIMEOUT; an agent's newer control stream takes the place of
        its older one, which ends (OK), so one agent holds one."""

        async def body(call: _Call) -> None:
            self.tracker.stream_opened(call.entry, peer=call.peer, at=call.started)
            try:
                with self._held_open(call):
                    messages = aiter(request_iterator)
                    hello = await self._control_hello(call, messages)
                    if hello is None:
                        return  # the agent hung up before saying anything
                    self._check_identity(call, hello.agent_id, hello.partition)
                    self._supersede(call)
                    log.info("push_agent_control_stream", tenant=call.ctx.tenant, agent=call.entry.name, peer=call.peer)
                    await context.send_initial_metadata(())  # the agent learns the stream is held (headers)
                    self.tracker.seen(call.entry, peer=call.peer, at=time.time())
                    async for message in messages:
                        if message.WhichOneof("payload") == "hello":
                            self._check_identity(call, message.hello.agent_id, message.hello.partition)
                        self.tracker.seen(call.entry, peer=call.peer, at=time.time())
            except asyncio.CancelledError as cancelled:
                if SUPERSEDED not in cancelled.args:
                    raise
                task = asyncio.current_task()
                assert task is not None
                task.uncancel()  # replaced by the agent's newer stream: ended, not failed
            finally:  # however it ends: the agent hung up, its identity ended, a reload delisted it
                if self._control.get(call.agent) is call:
                    del self._control[call.agent]
                self.tracker.stream_closed(call.entry)
                log.info("push_agent_control_stream_closed", tenant=call.ctx.tenant, agent=call.entry.name, peer=call.peer)

        await self._serve(context, "ControlStream", body)

    async def _control_hello(self, call: _Call, messages: AsyncIterator[pb.ControlStreamRequest]) -> pb.ControlStreamHello | None:
        """A control stream's first message, its hello (None: the stream ended first),
        read holding one of the agent's read places."""
        try:
            async with asyncio.timeout(CONTROL_HELLO_TIMEOUT), self.reads.place(call.agent):
                first = await anext(messages, None)
        except TimeoutError:
            raise _Refusal(
                Reason.TIMEOUT, grpc.StatusCode.DEADLINE_EXCEEDED, f"no hello within {CONTROL_HELLO_TIMEOUT:g} s"
            ) from None
        if first is None:
            return None
        if first.WhichOneof("payload") != "hello":
            raise _Refusal(
                Reason.INVALID_PAYLOAD, grpc.StatusCode.FAILED_PRECONDITION, "a control stream's first message must be its hello"
            )
        return first.hello

    def _supersede(self, call: _Call) -> None:
        """This control stream, past its hello, takes the place of the agent's older one,
        which ends. A stream left on a connection that died (until the keepalive finds
        it) or a stolen key's would otherwise each keep a message read open (up to 16 MiB)."""
        other = self._control.get(call.agent)
        self._control[call.agent] = call
        task = self._held.get(other) if other is not None else None
        if other is not None and task is not None:
            log.info(
                "push_agent_control_stream_superseded",
                tenant=call.ctx.tenant,
                agent=call.entry.name,
                peer=other.peer,
                by_peer=call.peer,
            )
            task.cancel(SUPERSEDED)

    def count_unknown(self, tenant: str, method: str | None) -> None:
        """The push policy refused an unlisted identity: a call refused `unknown_agent`
        (and a push refused so, when it was one)."""
        if method in PUSH_METHODS:
            self._count_push(tenant, Reason.UNKNOWN_AGENT)
        # A label from the caller's path only when it names one of the service's methods:
        # any other path is the caller's word, and would mint series.
        name = method.removeprefix(f"/{SERVICE}/") if method else ""
        self._refused.child(tenant, name if name in GATEWAY_METHODS else "other", Reason.UNKNOWN_AGENT).inc()

    def identity_refused(self, method: str, peer: str, refusal: IdentityRefused) -> None:
        """The interceptor refused a caller's certificate (its on_refused). When the
        tenant's CA signed it and its names agree (revoked, expired, ...), the
        listed agent it names is told: that agent's last call ended with this
        refusal, so it is refused with that reason rather than silent. A refusal
        that proves nothing about the name (another CA, a CN naming another
        tenant) touches no agent: an impostor cannot make a listed agent look refused.
        Nor does the refusal of another certificate of an agent that pushes under its
        own (see _another_certificate_holds)."""
        named = refusal.vouched
        if named is None:
            return
        entry = self.pushes.lookup(named.tenant, named.component_id, named.partition_id)
        if entry is None:
            return
        if method in PUSH_METHODS:
            self._count_push(named.tenant, refusal.reason)
        if self._another_certificate_holds(entry, (refusal.peer or {}).get("fingerprint")):
            return  # counted, and audited by the interceptor; the agent's own state stands
        self.tracker.pushed(
            entry,
            peer=peer_address(peer),
            at=time.time(),
            outcome=refusal.reason,
            detail=refusal.detail,
            certificate=refusal.peer or None,
        )

    def _another_certificate_holds(self, entry: PushEntry, presented: str | None) -> bool:
        """Whether the agent pushed within its live window under another certificate than
        the refused one (`presented`, its SHA-256 fingerprint): an old certificate still
        used by a busy connection after a rotation, or a stolen and revoked one. Its
        refusal must not make the agent flap refused between its own pushes (a thief
        would choose when); the refusal of the very certificate it last pushed with is
        the agent's own, and shown."""
        record = self.tracker.get(entry.tenant, entry.name)
        if record is None or record.identity is None or record.last_push is None or not presented:
            return False
        live = time.time() - record.last_push <= STALE_INTERVALS * live_interval(record, entry)
        return live and presented != record.identity.fingerprint_sha256

    def _over_rate_held_back(self, key: Hashable, held: int) -> None:
        """An agent's over-rate refusals of one method held back in a window that has
        closed with no line saying them: said now."""
        tenant, agent, method, limit = cast(tuple[str, str, str, str], key)
        log.warning(
            "gateway_requests_held_back",
            tenant=tenant,
            agent=agent,
            method=f"/{SERVICE}/{method}",
            limit=f"{limit}_rate",  # whose rate refused them: the agent's own, or its tenant's
            reason=Reason.RESOURCE_EXHAUSTED.value,
            suppressed=held,
            window_s=self._over_rate_lines.every,
        )

    def _count_push(self, tenant: str, outcome: Reason) -> None:
        self._pushes.child(tenant, outcome).inc()  # a StrEnum: its own label value

    # -- the calls held open, against the push entries in force ------------------------

    @contextlib.contextmanager
    def _held_open(self, call: _Call) -> Iterator[None]:
        task = asyncio.current_task()
        assert task is not None
        self._held[call] = task
        try:
            yield
        finally:
            del self._held[call]

    def _entries_changed(self) -> None:
        """The push entries were replaced (a reload). The open calls are looked at once
        the reload is done, since it may change accept_unlisted after the entries."""
        if self._held:
            asyncio.get_running_loop().call_soon(self._end_delisted)

    def _end_delisted(self) -> None:
        for call, task in list(self._held.items()):
            if self.pushes.entry_for(call.ctx) is None:
                task.cancel(DELISTED)  # _serve answers it unknown_agent, naming tenant and agent

    # -- one call ---------------------------------------------------------------------

    async def _serve(
        self, context: grpc.aio.ServicerContext, method: str, body: Callable[[_Call], Awaitable[T]], *, push: bool = False
    ) -> T:
        ctx = current_tenant()  # bound by the interceptor, which proved the caller
        peer = peer_address(current_caller().peer)  # the peer the interceptor proved: grpc's peer() is not free
        entry = self.pushes.entry_for(ctx)
        if entry is None:  # the policy admitted it, but a reload has removed it since
            await self._abort(context, method, ctx, None, peer, _unknown(ctx), push=push)
        call = _Call(ctx, entry, method, peer)
        self.tracker.seen(entry, peer=peer, at=call.started)
        # Every call draws one token of its tenant's bucket before anything it says is
        # looked at: a flood of lies (each an audit line) is bounded as honest pushes are,
        # and Hello, GetConfig and ControlStream with them. Only the tenant's own agents
        # draw on it, so a tenant can spend only its own rate. With a per-agent rate the
        # agent's own token comes first: one key cannot spend its siblings' rate.
        bounds = self.bounds
        if not self.limits.take_agent(ctx.tenant, ctx.component_id, ctx.partition_id):
            rate = f"{bounds.push_rate_per_agent:g}/s, burst {bounds.agent_burst}"
            detail = f"agent {ctx.component_id} of tenant {ctx.tenant} is over its call rate ({rate})"
            await self._over_rate(context, call, push, "agent", detail)
        if not self.limits.take_push(ctx.tenant):
            rate = f"{bounds.push_rate:g}/s, burst {bounds.push_burst}"
            await self._over_rate(context, call, push, "tenant", f"tenant {ctx.tenant} is over its call rate ({rate})")
        over = self.limits.enter_call(ctx.tenant, peer, ctx.component_id, ctx.partition_id)
        if over is not None:
            await self._abort(context, method, ctx, entry, peer, _exhausted(over), push=push)
        try:
            answer = await body(call)
        except _Refusal as refusal:
            # A push not taken, or any call that lied (a Hello with another agent_id, ...):
            # the agent is there and refused, which the board must say rather than `pending`;
            # unless its certificate stopped holding mid-call while the agent pushes under another.
            shown = not (refusal.certificate and self._another_certificate_holds(entry, ctx.fingerprint_sha256))
            if (push or refusal.audited) and shown:
                self.tracker.pushed(entry, peer=peer, at=time.time(), outcome=refusal.reason, detail=refusal.detail)
            await self._abort(context, method, ctx, entry, peer, refusal, push=push)
        except asyncio.CancelledError as cancelled:
            if DELISTED in cancelled.args:  # not cancelled for grpc: answered, so not raised on
                task = asyncio.current_task()
                assert task is not None
                task.uncancel()
                delisted = _unknown(ctx, "no longer listed after a reload of the push entries")
                if push:
                    self.tracker.pushed(entry, peer=peer, at=time.time(), outcome=delisted.reason, detail=delisted.detail)
                await self._abort(context, method, ctx, entry, peer, delisted, push=push)
            # Ended before its answer (the agent hung up, its deadline passed, the server is
            # stopping): a failed push, named, not a silent end. Its results were not counted
            # as taken (the agent had no `received`); a ControlStream ends this way normally.
            # Cut by its identity's end instead (the interceptor audited that): counted under
            # its reason, saying how many results it had handed over.
            ended = next((arg for arg in cancelled.args if isinstance(arg, IdentityEnded)), None)
            if push and (ended is not None or IDENTITY_ENDED not in cancelled.args):
                reason = ended.reason if ended is not None else Reason.UNREACHABLE
                fields: dict[str, Any] = {"delivered": call.delivered} if ended is not None else {}
                log.warning(
                    "push_call_ended" if ended is not None else "push_call_cancelled",
                    tenant=ctx.tenant,
                    agent=entry.name,
                    peer=peer,
                    method=f"/{SERVICE}/{method}",
                    reason=reason.value,
                    **fields,
                    after_s=round(time.time() - call.started, 3),
                )
                if ended is None or not self._another_certificate_holds(entry, ctx.fingerprint_sha256):
                    self.tracker.pushed(entry, peer=peer, at=time.time(), outcome=reason)
                self._count_push(ctx.tenant, reason)
            raise
        finally:
            self.limits.leave_call(ctx.tenant, peer, ctx.component_id, ctx.partition_id)
        if push:
            self.tracker.pushed(entry, peer=peer, at=time.time(), outcome=Reason.OK, identity=ctx)
            self._count_push(ctx.tenant, Reason.OK)
        return answer

    async def _over_rate(self, context: grpc.aio.ServicerContext, call: _Call, push: bool, limit: str, detail: str) -> NoReturn:
        """Refuse a call over the `limit` rate ("agent" or "tenant"): counted in full, its
        line held back per agent, method and limit (one limit's line hides no other's)."""
        over_rate = _exhausted(detail)
        if push:
            self.tracker.pushed(call.entry, peer=call.peer, at=time.time(), outcome=over_rate.reason, detail=detail)
        held = self._over_rate_lines.due((call.ctx.tenant, call.entry.name, call.method, limit))
        await self._abort(context, call.method, call.ctx, call.entry, call.peer, over_rate, push=push, suppressed=held)

    async def _abort(
        self,
        context: grpc.aio.ServicerContext,
        method: str,
        ctx: TenantContext,
        entry: PushEntry | None,
        peer: str,
        refusal: _Refusal,
        *,
        push: bool,
        suppressed: int | None = 0,
    ) -> NoReturn:
        """Refuse the call: counted, answered, and logged; `suppressed`: how many lines of
        its kind were held back before this one, None when this one is held back too."""
        fields: dict[str, Any] = {
            "method": f"/{SERVICE}/{method}",
            "peer": peer,
            "agent": entry.name if entry is not None else None,
            "reason": refusal.reason.value,
            "detail": refusal.detail,
            **ctx.log_fields(),
        }
        if suppressed:
            fields["suppressed"] = suppressed
        if suppressed is not None:  # None: a flood's line, held back (poller.logs.LineLimiter)
            if refusal.audited:
                audit_log.warning("gateway_request_refused", audit=True, **fields)
            else:
                log.warning("gateway_request_refused", **fields)
        if push:
            self._count_push(ctx.tenant, refusal.reason)
        self._refused.child(ctx.tenant, method, refusal.reason).inc()
        await abort_refused(context, refusal.code, refusal.reason, f"{refusal.reason.value}: {refusal.detail}")

    # -- reading what the caller sends ----------------------------------------------------

    async def _read(self, call: _Call, read: Read[M]) -> M:
        """A unary call's request, read once the call is admitted (proof, rates, calls in
        flight) and holding one of its agent's read places (poller.gateway.reads)."""
        async with self.reads.place(call.agent):
            request = await read()
        if request is None:
            # grpc ends a message over its receive limit as if none was sent (its own
            # RESOURCE_EXHAUSTED reaches the agent); a unary client always sends one, so
            # this is nearly always an over-sized push: counted and named as one.
            raise _exhausted(f"no request message: over the receive limit ({self.bounds.max_message_bytes} bytes), or none sent")
        return request

    async def _read_each(self, call: _Call, messages: AsyncIterator[M]) -> AsyncIterator[M]:
        """A stream's messages, each read holding one of its agent's read places."""
        iterator = aiter(messages)
        while True:
            async with self.reads.place(call.agent):
                try:
                    message = await anext(iterator)
                except StopAsyncIteration:
                    return
            yield message

    # -- what a request must agree with ---------------------------------------------------

    def _check_identity(self, call: _Call, agent_id: str, partition: str) -> None:
        ctx = call.ctx
        if agent_id != ctx.component_id:
            raise _mismatch(f"agent_id {agent_id[:64]!r} is not the proven component {ctx.component_id!r}")
        if partition and partition != ctx.partition_id:
            raise _mismatch(f"partition {partition[:64]!r} is not the proven partition {ctx.partition_id!r}")

    def _known_tenant(self, tenant: str) -> bool:
        """A tenant this gateway knows: one its entries name or one with a CA. Asked
        for every status whose tenant_id is not the proven tenant, so nothing is
        built per call (an agent repeating a lie must not cost a scan of every entry)."""
        return tenant in self.pushes.tenants or (self.trust is not None and tenant in self.trust.snapshot.tenants)

    def _check_tenant_claims(self, call: _Call, tenant_id: str, tenant_slug: str) -> None:
        proven = call.ctx.tenant
        if tenant_slug and tenant_slug != proven:
            raise _Refusal(
                Reason.PAYLOAD_MISMATCH,
                grpc.StatusCode.PERMISSION_DENIED,
                f"tenant_slug {tenant_slug[:64]!r} is not the proven tenant {proven!r}",
                audited=True,
            )
        # A tenant is a lowercase label, so "XYZ-INC " names xyz-inc as surely as "xyz-inc":
        # read as one before asking whether it is another known tenant.
        if tenant_id and tenant_id != proven and (named := tenant_id.strip().lower()) != proven and self._known_tenant(named):
            raise _Refusal(
                Reason.PAYLOAD_MISMATCH,
                grpc.StatusCode.PERMISSION_DENIED,
                f"tenant_id {tenant_id[:64]!r} names another tenant than the proven {proven!r}",
                audited=True,
            )

    def _result(self, call: _Call, status: pb.GatewayServiceStatus, timestamp: int, position: int) -> PollResult:
        ctx = call.ctx
        name, service_type = status.service_name, status.service_type
        if not name or len(name) > 255 or _has_control(name):
            raise _invalid(f"service_name {name[:64]!r} is empty, longer than 255 or holds control characters")
        if len(service_type) > 64 or _has_control(service_type):
            raise _invalid(f"service_type {service_type[:64]!r} is invalid")
        source = status.source
        kind = "results" if source in RESULT_SOURCES else "status"
        if kind == "status" and source not in _STATUS_SOURCES and (len(source) > 64 or _has_control(source)):
            raise _invalid(f"source {source[:64]!r} is longer than 64 or holds control characters")
        limit = self.bounds.max_results_bytes if kind == "results" else self.bounds.max_status_bytes
        if len(status.message) > limit:
            raise _exhausted(f"{kind} message of {name[:64]!r} is {len(status.message)} bytes (at most {limit})")
        if status.agent_id:
            self._check_identity(call, status.agent_id, status.partition)
        elif status.partition:
            self._check_identity(call, ctx.component_id, status.partition)
        self._check_tenant_claims(call, status.tenant_id, status.tenant_slug)
        return PollResult(
            tenant=ctx.tenant,
            agent=call.entry.name,
            address=call.peer,
            poller_id=self.gateway_id,
            partition=self.partition,
            kind=kind,
            service_name=name,
            service_type=service_type,
            available=status.available,
            context=ctx,
            reason=None if status.available else Reason.UNAVAILABLE,
            payload=status.message,
            response_time_ns=max(0, status.response_time),
            agent_timestamp=max(0, timestamp),
            reported_agent_id=status.agent_id,
            pushed=True,
            push_position=position,
        )

    async def _reassemble(
        self, call: _Call, chunks: AsyncIterator[pb.GatewayStatusChunk], lease: StreamLease
    ) -> tuple[list[pb.GatewayStatusChunk], int]:
        """Chunks in order (0, 1, ... is_final; the StreamAssembler's rules), each
        held to the proof, what they hold in memory against the tenant's share of
        the budget (`lease`, the caller's: held until the stream is delivered). The
        chunks are kept as they came (not a wrapper per status, which would double
        what is held); each is charged _held_bytes and KEPT_CHUNK_BYTES."""
        order = StreamAssembler(max_bytes=0)  # ordering only: the bytes are leased below
        kept: list[pb.GatewayStatusChunk] = []
        services = 0
        timestamp = 0
        async for chunk in chunks:
            self._check_identity(call, chunk.agent_id, chunk.partition)
            self._check_tenant_claims(call, chunk.tenant_id, chunk.tenant_slug)
            try:
                order.add(
                    pb.ResultsChunk(chunk_index=chunk.chunk_index, total_chunks=chunk.total_chunks, is_final=chunk.is_final)
                )
            except IncompleteStream as err:
                raise _Refusal(Reason.INCOMPLETE_STREAM, grpc.StatusCode.INVALID_ARGUMENT, err.detail) from None
            count = len(chunk.services)
            services += count
            if services > self.bounds.max_services:
                raise _exhausted(f"more than {self.bounds.max_services} services in one stream")
            try:
                lease.grow(_held_bytes(chunk.ByteSize(), count) + KEPT_CHUNK_BYTES)
            except IncompleteStream as err:
                raise _Refusal(Reason.INCOMPLETE_STREAM, grpc.StatusCode.RESOURCE_EXHAUSTED, err.detail) from None
            kept.append(chunk)
            timestamp = chunk.timestamp or timestamp
            if order.final:
                break
        if not order.final:
            raise _Refusal(
                Reason.INCOMPLETE_STREAM,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"stream ended after {order.chunks} chunks without is_final (or a chunk was over the receive limit)",
            )
        return kept, timestamp

    async def _deliver(self, call: _Call, results: list[PollResult]) -> None:
        # Every result is checked before any is delivered: a request refused for one of
        # them (payload_mismatch, ...) files none, so the agent's retry files none of them twice.
        checked: list[Checked] = []
        refused: list[Delivery] = []
        for result in results:
            outcome = self.delivery.check(result)
            if isinstance(outcome, Delivery):
                refused.append(outcome)
            else:
                checked.append(outcome)
        if refused:
            first = refused[0]
            assert first.refused is not None
            code = (
                grpc.StatusCode.PERMISSION_DENIED
                if first.refused in (Reason.PAYLOAD_MISMATCH, Reason.LABEL_MISMATCH)
                else grpc.StatusCode.INVALID_ARGUMENT
            )
            raise _Refusal(first.refused, code, f"{len(refused)} of {len(results)} results refused: {first.detail}", audited=True)
        failed: list[Delivery] = []
        for passed in checked:
            self._still_proven(call, len(results))
            call.delivered += 1
            delivery = await self.delivery.deliver(passed.result, passed)
            if delivery.failed:
                failed.append(delivery)
        # As durable as a polled cycle before `received`: a sink that could not flush
        # (a full disk's fsync) may have lost them, so the agent must send them again.
        unflushed = await self.delivery.flush()
        self._still_proven(call, len(results))
        if failed:
            reason = next(iter(failed[0].failed.values()))
            raise _Refusal(reason, grpc.StatusCode.UNAVAILABLE, f"{len(failed)} of {len(results)} results not delivered")
        if unflushed:
            sink, reason = next(iter(unflushed.items()))
            raise _Refusal(reason, grpc.StatusCode.UNAVAILABLE, f"sink {sink} did not make {len(results)} results durable")

    @staticmethod
    def _still_proven(call: _Call, total: int) -> None:
        """Refuse the rest of a push whose caller a reload no longer proves (a
        revocation that lands while its results are delivered): the result being
        delivered then is the last one filed, and `received` is not answered. Free
        until the trust snapshot changes (caller_still_holds)."""
        try:
            caller_still_holds()
        except IdentityRefused as refusal:
            detail = f"{refusal.detail} (during the push: {call.delivered} of its {total} results were handed over before)"
            raise _Refusal(refusal.reason, grpc.StatusCode.UNAUTHENTICATED, detail, audited=True, certificate=True) from None


def _unknown(ctx: TenantContext, why: str = "") -> _Refusal:
    return _Refusal(
        Reason.UNKNOWN_AGENT,
        grpc.StatusCode.PERMISSION_DENIED,
        f"no push agent {ctx.component_id} is listed for tenant {ctx.tenant}" + (f" ({why})" if why else ""),
        audited=True,
    )


def _seconds(interval: float) -> int:
    return max(1, round(interval))
