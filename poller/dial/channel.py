"""PinnedChannel: the one path every call to a pinned agent takes.

AgentConnection opens its grpc.aio channel without interceptors; the
PinnedChannel in front of it checks and stamps every call of every caller
(AgentClient and library users alike), for all four call shapes: refused
(IdentityRefused, before anything is sent) once the identity no longer holds,
else sent with the proven tenant and agent as metadata and with
current_tenant() bound while the call is made.

`conn.channel` stays the same object for the connection's life: the
AgentConnection swaps the channel underneath when the agent rotates its
certificate or the poller's own certificate changes, and stubs made once on
it (AgentClient's) follow the swap. `conn.current_channel` is the same check
over the channel of the moment (a new object after a swap).

>>> stub = AgentServiceStub(conn.channel)  # doctest: +SKIP
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Protocol

import grpc

from poller.dial.interceptor import tenant_metadata
from poller.identity.context import TenantContext, _current

__all__ = ["PinnedChannel"]


class _Holder(Protocol):
    """What the channel needs from its connection."""

    @property
    def unchecked_channel(self) -> grpc.aio.Channel: ...

    @property
    def context(self) -> TenantContext: ...

    def stamp(self) -> tuple[TenantContext, grpc.aio.Metadata]:
        """`context` (the same check) and the metadata every call of it carries."""
        ...

    async def close(self, grace: float | None = None) -> None: ...


class _CheckedCall:
    """A multicallable that checks and stamps each call, then makes it on the
    connection's channel (the current one, or a fixed one)."""

    __slots__ = ("_bound", "_deserializer", "_fixed", "_holder", "_kind", "_method", "_registered", "_serializer")

    def __init__(
        self,
        holder: _Holder,
        kind: str,
        method: str,
        serializer: Any,
        deserializer: Any,
        registered: bool | None,
        fixed: grpc.aio.Channel | None,
    ) -> None:
        self._holder = holder
        self._kind = kind
        self._method = method
        self._serializer = serializer
        self._deserializer = deserializer
        self._registered = registered
        self._fixed = fixed
        self._bound: tuple[grpc.aio.Channel, Any] | None = None

    def __call__(self, *args: Any, metadata: Any = None, **kwargs: Any) -> Any:
        ctx, stamped = self._holder.stamp()  # raises the refusal (re-checking first when due)
        if metadata is not None:
            stamped = tenant_metadata(ctx, metadata)
        channel = self._fixed if self._fixed is not None else self._holder.unchecked_channel
        bound = self._bound
        if bound is None or bound[0] is not channel:
            factory = getattr(channel, self._kind)
            bound = self._bound = (
                channel,
                factory(self._method, self._serializer, self._deserializer, _registered_method=self._registered),
            )
        # grpc.aio starts the call's task here; the task keeps this context.
        token = _current.set(ctx)
        try:
            return bound[1](*args, metadata=stamped, **kwargs)
        finally:
            _current.reset(token)


class PinnedChannel(grpc.aio.Channel):
    """A grpc.aio.Channel whose every call is checked and stamped (see the module doc).

    `fixed`: check over that channel only (conn.current_channel); None: over
    the connection's current channel, whichever it is at call time.
    """

    def __init__(self, holder: _Holder, fixed: grpc.aio.Channel | None = None) -> None:
        self._holder = holder
        self._fixed = fixed

    def _target(self) -> grpc.aio.Channel:
        return self._fixed if self._fixed is not None else self._holder.unchecked_channel

    async def __aenter__(self) -> PinnedChannel:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc_val: BaseException | None, exc_tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self, grace: float | None = None) -> None:
        if self._fixed is not None:
            await self._fixed.close(grace)
        else:
            await self._holder.close(grace)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._target().get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._target().wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._target().channel_ready()

    def _checked(self, kind: str, method: str, serializer: Any, deserializer: Any, registered: bool | None) -> Any:
        return _CheckedCall(self._holder, kind, method, serializer, deserializer, registered, self._fixed)

    def unary_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> Any:
        return self._checked("unary_unary", method, request_serializer, response_deserializer, _registered_method)

    def unary_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> Any:
        return self._checked("unary_stream", method, request_serializer, response_deserializer, _registered_method)

    def stream_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> Any:
        return self._checked("stream_unary", method, request_serializer, response_deserializer, _registered_method)

    def stream_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> Any:
        return self._checked("stream_stream", method, request_serializer, response_deserializer, _registered_method)
