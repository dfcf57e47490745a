"""AgentClient: the agents' RPCs over a pinned connection, every result stamped.

Each method returns the agent's answer together with the TenantContext proven
for the connection it came over; nothing in the answer (agent_id fields and
the like) can change that identity. Every call has a deadline. Failures are
IdentityRefused (the identity no longer holds) or AgentUnreachable (with the
gRPC code when a call failed).

>>> conn = await dial_agent("127.0.0.1:50051", tenant="acme-corp", trust=store)  # doctest: +SKIP
>>> reply = await AgentClient(conn).get_status("ping", "icmp")  # doctest: +SKIP
>>> reply.context.tenant, reply.response.available  # doctest: +SKIP
('acme-corp', True)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
from grpc_health.v1 import health_pb2

from poller.agent.budget import ReassemblyBudget
from poller.agent.stream import StreamAssembler
from poller.dial.dialer import AgentConnection
from poller.identity.context import TenantContext, bound_tenant
from poller.identity.reasons import AgentUnreachable, IdentityRefused, IncompleteStream, InvalidPayload
from poller.proto import monitoring_pb2 as pb
from poller.timers import task_cancelling

T = TypeVar("T")

DEFAULT_CALL_TIMEOUT = 5.0
HEALTH_SERVICE = "AgentService"

# Codes after which it is worth asking whether the identity still holds: the
# handshake of a reconnect failing looks like UNAVAILABLE to a client.
_RECHECK_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})

# The methods AgentClient calls: (kind, path, serializer, deserializer), as the
# generated stubs have them. A client makes a method's multicallable when it
# first calls it, instead of whole stubs up front: a status-only poller then
# holds 2 per agent, not 6 (each with its bound serializers).
_GET_STATUS = (
    "unary_unary",
    "/monitoring.AgentService/GetStatus",
    pb.StatusRequest.SerializeToString,
    pb.StatusResponse.FromString,
)
_GET_RESULTS = (
    "unary_unary",
    "/monitoring.AgentService/GetResults",
    pb.ResultsRequest.SerializeToString,
    pb.ResultsResponse.FromString,
)
_STREAM_RESULTS = (
    "unary_stream",
    "/monitoring.AgentService/StreamResults",
    pb.ResultsRequest.SerializeToString,
    pb.ResultsChunk.FromString,
)
_HEALTH_CHECK = (
    "unary_unary",
    "/grpc.health.v1.Health/Check",
    health_pb2.HealthCheckRequest.SerializeToString,
    health_pb2.HealthCheckResponse.FromString,
)


@dataclass(frozen=True, slots=True)
class AgentReply(Generic[T]):
    """An agent's answer and the identity proven for the connection it came over."""

    context: TenantContext
    response: T
    latency: float

    def bound(self) -> AbstractContextManager[TenantContext]:
        """A block in which poller.current_tenant() is this reply's proven context.

        >>> with reply.bound():  # doctest: +SKIP
        ...     await store(reply.response)  # store() may ask current_tenant()
        """
        return bound_tenant(self.context)


@dataclass(frozen=True, slots=True)
class StreamDocument:
    """A StreamResults document reassembled up to its is_final chunk."""

    context: TenantContext
    data: bytes
    chunks: int
    current_sequence: str
    timestamp: int
    latency: float

    def bound(self) -> AbstractContextManager[TenantContext]:
        """A block in which poller.current_tenant() is this document's proven context."""
        return bound_tenant(self.context)


def _invalid_payload(method: str, message: str) -> InvalidPayload:
    # grpcio logs the DecodeError and hands back None instead of raising.
    return InvalidPayload(f"{method}: the agent's answer is not a valid {message}")


class AgentClient:
    """The AgentService and health RPCs of one agent.

    poller_id is put in every request, as the Go poller does; agent_id in a
    request is only a label for the agent's own logs. budget, when given, is
    the poller-wide ReassemblyBudget that fetch_document's streams are held
    to (share it between the clients of every agent).
    """

    def __init__(
        self,
        connection: AgentConnection,
        *,
        poller_id: str = "",
        timeout: float = DEFAULT_CALL_TIMEOUT,
        budget: ReassemblyBudget | None = None,
    ) -> None:
        self.connection = connection
        self.poller_id = poller_id
        self.timeout = timeout
        self.budget = budget
        # client_channel refuses and stamps each call itself (no interceptor
        # machinery); the same pinned connection as connection.channel.
        self._channel = connection.client_channel
        self._methods: dict[str, Any] = {}

    def _method(self, spec: tuple[str, str, Any, Any]) -> Any:
        method = self._methods.get(spec[1])
        if method is None:
            kind, path, serializer, deserializer = spec
            method = self._methods[path] = getattr(self._channel, kind)(path, serializer, deserializer, _registered_method=True)
        return method

    @property
    def context(self) -> TenantContext:
        return self.connection.context

    async def get_status(
        self,
        service_name: str,
        service_type: str,
        *,
        details: str = "",
        port: int = 0,
        agent_id: str = "",
        timeout: float | None = None,
    ) -> AgentReply[pb.StatusResponse]:
        ctx = self.context
        request = pb.StatusRequest(
            service_name=service_name,
            service_type=service_type,
            agent_id=agent_id or ctx.component_id,
            poller_id=self.poller_id,
        )
        if details:  # unset fields cost nothing to build or send
            request.details = details
        if port:
            request.port = port
        return await self._unary("GetStatus", self._method(_GET_STATUS), request, timeout, ctx)

    async def get_results(
        self,
        service_name: str,
        service_type: str,
        *,
        details: str = "",
        last_sequence: str = "",
        agent_id: str = "",
        timeout: float | None = None,
    ) -> AgentReply[pb.ResultsResponse]:
        request = self._results_request(service_name, service_type, details, last_sequence, agent_id)
        return await self._unary("GetResults", self._method(_GET_RESULTS), request, timeout)

    async def stream_results(
        self,
        service_name: str,
        service_type: str,
        *,
        details: str = "",
        last_sequence: str = "",
        agent_id: str = "",
        timeout: float | None = None,
    ) -> AsyncIterator[pb.ResultsChunk]:
        """The raw chunks of a StreamResults call, in order (see fetch_document)."""
        request = self._results_request(service_name, service_type, details, last_sequence, agent_id)
        self.connection.context  # noqa: B018 - raises a stored refusal before the call
        call = self._method(_STREAM_RESULTS)(request, timeout=self.timeout if timeout is None else timeout)
        try:
            async for chunk in call:
                if chunk is None:
                    raise _invalid_payload("StreamResults", "ResultsChunk")
                yield chunk
        except grpc.aio.AioRpcError as err:
            raise await self._translate("StreamResults", err) from None
        except asyncio.CancelledError:
            if task_cancelling():
                raise
            raise self.connection.cut("StreamResults") from None
        finally:
            call.cancel()

    async def fetch_document(
        self,
        service_name: str,
        service_type: str,
        *,
        details: str = "",
        last_sequence: str = "",
        agent_id: str = "",
        timeout: float | None = None,
    ) -> StreamDocument:
        """A StreamResults document, whole or not at all: IncompleteStream when the
        stream ends without is_final, has gaps in chunk_index, breaks off, or
        would take its tenant over its share of the client's budget."""
        ctx = self.context
        started = time.perf_counter()
        lease = self.budget.lease(ctx.tenant) if self.budget is not None else None
        assembler = StreamAssembler(lease=lease)
        chunks = self.stream_results(
            service_name, service_type, details=details, last_sequence=last_sequence, agent_id=agent_id, timeout=timeout
        )
        try:
            try:
                async for chunk in chunks:
                    assembler.add(chunk)
                    if assembler.final:
                        break
            except AgentUnreachable as err:
                if assembler.chunks:
                    raise IncompleteStream(f"stream broke off after {assembler.chunks} chunks: {err.detail}") from err
                raise
            finally:
                await chunks.aclose()  # type: ignore[attr-defined]  # a grpc.aio stream call is an async generator
            data = assembler.data
        finally:
            if lease is not None:
                lease.release()  # whole or refused, the bytes go back to the budget
        latency = time.perf_counter() - started
        self.connection.metrics.latency("StreamResults").observe(latency)
        return StreamDocument(
            context=ctx,
            data=data,
            chunks=assembler.chunks,
            current_sequence=assembler.current_sequence,
            timestamp=assembler.timestamp,
            latency=latency,
        )

    async def check_health(
        self, service: str = HEALTH_SERVICE, *, timeout: float | None = None
    ) -> AgentReply[health_pb2.HealthCheckResponse]:
        """grpc.health.v1 Check; reply.response.status == SERVING when healthy."""
        request = health_pb2.HealthCheckRequest(service=service)
        return await self._unary("Health.Check", self._method(_HEALTH_CHECK), request, timeout)

    # -- plumbing ----------------------------------------------------------

    def _results_request(
        self, service_name: str, service_type: str, details: str, last_sequence: str, agent_id: str
    ) -> pb.ResultsRequest:
        return pb.ResultsRequest(
            service_name=service_name,
            service_type=service_type,
            details=details,
            last_sequence=last_sequence,
            agent_id=agent_id or self.context.component_id,
            poller_id=self.poller_id,
        )

    async def _unary(
        self, name: str, method: Any, request: Any, timeout: float | None, ctx: TenantContext | None = None
    ) -> AgentReply[Any]:
        if ctx is None:
            ctx = self.context
        pinned = self.connection.serial
        if timeout is None:
            timeout = self.timeout
        started = time.perf_counter()
        try:
            try:
                response = await method(request, timeout=timeout)
            except grpc.aio.AioRpcError as err:
                failure = await self._translate(name, err)
                if not isinstance(failure, AgentUnreachable) or self.connection.serial == pinned:
                    raise failure from None
                # The pinned handshake failed because the agent rotated its certificate,
                # and the fresh proof re-pinned the channel: the call never reached the
                # agent, so it goes once more, over the new pin.
                ctx = self.context
                try:
                    response = await method(request, timeout=timeout)
                except grpc.aio.AioRpcError as again:
                    raise await self._translate(name, again) from None
        except asyncio.CancelledError:
            # grpc.aio cancels the calls of a channel the poller closes (refusal,
            # rotation): a failure of this call, not a cancellation of the task.
            if task_cancelling():
                raise
            raise self.connection.cut(name) from None
        if response is None:
            raise _invalid_payload(name, type(request).__name__.replace("Request", "Response"))
        latency = time.perf_counter() - started
        self.connection.metrics.latency(name).observe(latency)
        return AgentReply(context=ctx, response=response, latency=latency)

    async def _translate(self, name: str, err: grpc.aio.AioRpcError) -> Exception:
        code = err.code()
        if code in _RECHECK_CODES:
            try:
                await self.connection.reprove(err.details())
            except (IdentityRefused, AgentUnreachable) as decided:
                return decided
        return AgentUnreachable(f"{name}: {code.name}: {err.details() or 'no details'}", code=code.name)
