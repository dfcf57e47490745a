"""PinnedChannel: one grpc.aio.Channel object for the whole life of a connection.

Behind it, the AgentConnection swaps the real (pinned) channel when the agent
rotates its certificate or the poller's own certificate changes. Stubs made
once on the PinnedChannel (AgentClient's) follow the swap: each multicallable
resolves the current channel at call time.

The channel handed to library users goes through grpc.aio's client
interceptors (poller.dial.interceptor), which refuse and stamp every call.
AgentClient's calls take a direct path over the same connection
(AgentConnection.client_channel): the same refusal check and the same stamp,
done here per call, without the interceptor machinery, which costs more per
call than the rest of AgentClient (bench.unary --fleet).

>>> stub = AgentServiceStub(conn.channel)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
from types import TracebackType
from typing import Any, Protocol

import grpc

from poller.dial.interceptor import AGENT_METADATA_KEY, TENANT_METADATA_KEY
from poller.identity.context import TenantContext

__all__ = ["CheckedChannel", "PinnedChannel"]


class _Holder(Protocol):
    """What the channel needs from its connection."""

    @property
    def current_channel(self) -> grpc.aio.Channel: ...

    @property
    def context(self) -> TenantContext: ...

    def raise_if_refused(self) -> None: ...

    async def close(self, grace: float | None = None) -> None: ...


def without_interceptors(multicallable: Any) -> Any:
    """The same multicallable (same channel, so the same connection) with
    grpc.aio's interceptor wrapping left out; the caller does their job.

    grpc.aio keeps a multicallable's interceptors in `_interceptors` and
    skips the wrapping when it is empty. Where a grpc release no longer has
    that attribute, the multicallable is returned as it is: slower, the
    interceptors still run, nothing is lost.
    """
    if not hasattr(multicallable, "_interceptors"):
        return multicallable
    direct = copy.copy(multicallable)
    direct._interceptors = None
    return direct


def tenant_stamp(ctx: TenantContext) -> tuple[tuple[str, str], tuple[str, str]]:
    """The metadata every call over a proven channel carries (as the interceptors add)."""
    return (TENANT_METADATA_KEY, ctx.tenant), (AGENT_METADATA_KEY, ctx.cn)


class _LateBound:
    """A multicallable that binds to the connection's current channel per call.

    checked: the direct path (CheckedChannel): the refusal check and the
    tenant stamp are done here and the interceptors are left out."""

    __slots__ = ("_args", "_bound", "_checked", "_holder", "_kind", "_method")

    def __init__(self, holder: _Holder, kind: str, method: str, args: tuple[Any, Any, Any], *, checked: bool = False) -> None:
        self._holder = holder
        self._kind = kind
        self._method = method
        self._args = args
        self._checked = checked
        self._bound: tuple[grpc.aio.Channel, Any] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._checked:
            ctx = self._holder.context  # raises the refusal (re-checking first when due)
            given = kwargs.get("metadata")
            # A Metadata object, not a tuple: grpc.aio converts a tuple after an
            # isinstance(Sequence) ABC check on every call.
            kwargs["metadata"] = grpc.aio.Metadata(*(given or ()), *tenant_stamp(ctx))
        else:
            self._holder.raise_if_refused()  # a closed channel never gets a call
        channel = self._holder.current_channel
        bound = self._bound
        if bound is None or bound[0] is not channel:
            serializer, deserializer, registered = self._args
            factory = getattr(channel, self._kind)
            multicallable = factory(self._method, serializer, deserializer, _registered_method=registered)
            bound = (channel, without_interceptors(multicallable) if self._checked else multicallable)
            self._bound = bound
        return bound[1](*args, **kwargs)


class PinnedChannel(grpc.aio.Channel):
    """A grpc.aio.Channel that delegates to the connection's current pinned channel."""

    def __init__(self, holder: _Holder) -> None:
        self._holder = holder

    async def __aenter__(self) -> PinnedChannel:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc_val: BaseException | None, exc_tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self, grace: float | None = None) -> None:
        await self._holder.close(grace)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._holder.current_channel.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._holder.current_channel.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._holder.current_channel.channel_ready()

    def _late(self, kind: str, method: str, serializer: Any, deserializer: Any, registered: bool | None) -> Any:
        return _LateBound(self._holder, kind, method, (serializer, deserializer, registered))

    def unary_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> Any:
        return self._late("unary_unary", method, request_serializer, response_deserializer, _registered_method)

    def unary_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> Any:
        return self._late("unary_stream", method, request_serializer, response_deserializer, _registered_method)

    def stream_unary(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> Any:
        return self._late("stream_unary", method, request_serializer, response_deserializer, _registered_method)

    def stream_stream(
        self,
        method: str,
        request_serializer: Any = None,
        response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> Any:
        return self._late("stream_stream", method, request_serializer, response_deserializer, _registered_method)


class CheckedChannel(PinnedChannel):
    """The connection's channel for AgentClient: every call is refused once the
    identity is refused and stamped with the proven tenant and agent, by the
    channel itself instead of grpc.aio's interceptors (one connection still:
    it is the same pinned channel underneath)."""

    def _late(self, kind: str, method: str, serializer: Any, deserializer: Any, registered: bool | None) -> Any:
        return _LateBound(self._holder, kind, method, (serializer, deserializer, registered), checked=True)
