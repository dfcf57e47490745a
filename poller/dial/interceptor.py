"""Client interceptors that hold every call of a channel to a proven identity.

For channels a caller makes itself; a pinned AgentConnection needs none, its
PinnedChannel does the same per call (poller.dial.channel). All four call
shapes (unary-unary, unary-stream, stream-unary, stream-stream) go through
the same body. Each call is refused (IdentityRefused, before anything is
sent) when the channel has no proven TenantContext or its identity was
refused since; else it is stamped with the proven tenant and agent name as
request metadata and runs with current_tenant() bound to the context.
"""

from __future__ import annotations

from typing import Any, Protocol

import grpc

from poller.identity.context import TenantContext, _current
from poller.identity.reasons import IdentityRefused, Reason

TENANT_METADATA_KEY = "x-serviceradar-tenant"
AGENT_METADATA_KEY = "x-serviceradar-agent"


def tenant_metadata(ctx: TenantContext, given: Any = None) -> grpc.aio.Metadata:
    """A call's metadata plus the proven tenant and agent (what every proven call carries).

    A Metadata object, not a tuple: grpc.aio converts a tuple after an
    isinstance(Sequence) ABC check on every call.
    """
    return grpc.aio.Metadata(*(given or ()), (TENANT_METADATA_KEY, ctx.tenant), (AGENT_METADATA_KEY, ctx.cn))


class ProvenIdentitySource(Protocol):
    """Anything that can say which identity a channel was proven to have."""

    @property
    def context(self) -> TenantContext: ...


async def _call_as_tenant(
    source: ProvenIdentitySource | None, continuation: Any, details: grpc.aio.ClientCallDetails, request: Any
) -> Any:
    """Refuse without a proven context; else stamp the call and run it with
    current_tenant() bound for code inside the call."""
    if source is None:
        raise IdentityRefused(Reason.UNTRUSTED_CHAIN, "call on a channel without a proven TenantContext")
    ctx = source.context  # raises the stored refusal, if any
    metadata = tenant_metadata(ctx, details.metadata)
    token = _current.set(ctx)
    try:
        return await continuation(details._replace(metadata=metadata), request)
    finally:
        _current.reset(token)


class TenantUnaryUnaryInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, source: ProvenIdentitySource | None) -> None:
        self._source = source

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await _call_as_tenant(self._source, continuation, client_call_details, request)


class TenantUnaryStreamInterceptor(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, source: ProvenIdentitySource | None) -> None:
        self._source = source

    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await _call_as_tenant(self._source, continuation, client_call_details, request)


class TenantStreamUnaryInterceptor(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, source: ProvenIdentitySource | None) -> None:
        self._source = source

    async def intercept_stream_unary(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request_iterator: Any
    ) -> Any:
        return await _call_as_tenant(self._source, continuation, client_call_details, request_iterator)


class TenantStreamStreamInterceptor(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, source: ProvenIdentitySource | None) -> None:
        self._source = source

    async def intercept_stream_stream(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request_iterator: Any
    ) -> Any:
        return await _call_as_tenant(self._source, continuation, client_call_details, request_iterator)


def tenant_interceptors(source: ProvenIdentitySource | None) -> list[grpc.aio.ClientInterceptor]:
    """The interceptors to pass to grpc.aio.secure_channel(interceptors=...):
    one per call shape, so no call on the channel can bypass them."""
    return [
        TenantUnaryUnaryInterceptor(source),
        TenantUnaryStreamInterceptor(source),
        TenantStreamUnaryInterceptor(source),
        TenantStreamStreamInterceptor(source),
    ]
