"""Unary methods whose request is read only after the caller is proven.

grpc.aio reads a unary call's request in full before any handler, or any
interceptor's wrapper of one, runs: a caller the proof will refuse (a revoked
or expired certificate that still passes the TLS handshake) can have every
call's request read first. Measured on the gateway: one revoked certificate's
200 concurrent 15 MB pushes on one connection took the server to 2.6 GB of RSS
before each was refused.

Served as a request stream instead (the same frames on the wire: the client
still calls a unary method), the request is read when the handler asks for it,
after TenantServerInterceptor has proven and authorized the caller. Until then
grpc holds only what HTTP/2 flow control lets the client send ahead: with the
server options `READ_AFTER_PROOF_OPTIONS` (no BDP probing, so the per-stream
window stays at 1 MiB) the same 200 pushes took it to 110 MB.

>>> handler = unary_read_after_proof(servicer.PushStatus, Request.FromString, Response.SerializeToString)  # doctest: +SKIP
>>> handler.request_streaming, handler.response_streaming  # doctest: +SKIP
(True, False)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

__all__ = ["READ_AFTER_PROOF_OPTIONS", "ReadAfterProof", "unary_read_after_proof"]

#: Server options that keep a request not yet read small: BDP probing would grow a
#: stream's flow-control window until the whole message is sent ahead (1.1 GB for the
#: 200 pushes above even when served as a stream); 1 MiB ahead per stream still moves
#: 10 MB/s over a 100 ms round trip.
READ_AFTER_PROOF_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", 1024 * 1024),
)


class ReadAfterProof:
    """A unary behaviour `(request, context) -> response` served as stream-unary: it
    reads the one request message, then runs the behaviour. TenantServerInterceptor
    guards it as the unary call it is (proof first, no identity watch).

    With `reads_itself` the behaviour is `(read, context) -> response` instead, and
    the request is read when it awaits `read()` (None: the client sent no message):
    a servicer that admits a proven caller further (its rate, its calls in flight,
    a read place) does so before grpc takes the request's bytes."""

    __slots__ = ("behaviour", "reads_itself")

    def __init__(
        self, behaviour: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]], *, reads_itself: bool = False
    ) -> None:
        self.behaviour = behaviour
        self.reads_itself = reads_itself

    async def __call__(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        if self.reads_itself:
            return await self.behaviour(_OneRequest(requests), context)
        request = await _OneRequest(requests)()
        if request is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a unary call without its request message")
        return await self.behaviour(request, context)


class _OneRequest:
    """`await read()`: a unary call's request message, or None when the client ended
    its side without one (a unary client sends exactly one)."""

    __slots__ = ("requests",)

    def __init__(self, requests: AsyncIterator[Any]) -> None:
        self.requests = requests

    async def __call__(self) -> Any:
        async for request in self.requests:
            return request
        return None


def unary_read_after_proof(
    behaviour: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]],
    request_deserializer: Callable[[bytes], Any],
    response_serializer: Callable[[Any], bytes],
    *,
    reads_itself: bool = False,
) -> grpc.RpcMethodHandler:
    """The grpc method handler of a unary method whose request is read after the proof
    (`reads_itself`: when the behaviour awaits it; see ReadAfterProof)."""
    return grpc.stream_unary_rpc_method_handler(
        ReadAfterProof(behaviour, reads_itself=reads_itself),
        request_deserializer=request_deserializer,
        response_serializer=response_serializer,
    )
