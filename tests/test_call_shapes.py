"""All four call shapes on a pinned channel are stamped, and refused once the
identity ends (issue 6): stream-unary and stream-stream calls used to bypass
the interceptors.

The agent here is a real grpc.aio server over mTLS with a generic handler for
each shape (the agents' own interface has no client-streaming methods), so
the test sees what actually reaches the wire.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from poller.dial.dialer import dial_agent
from poller.dial.interceptor import AGENT_METADATA_KEY, TENANT_METADATA_KEY
from poller.identity.reasons import IdentityRefused, Reason
from poller.trust.store import TrustStore

ACME = "acme-corp"
SHAPES = ["unary_unary", "unary_stream", "stream_unary", "stream_stream"]


class EchoServer:
    """Records the metadata of every call, per method."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []

    def _note(self, name: str, context: grpc.aio.ServicerContext) -> None:
        self.seen.append((name, dict(context.invocation_metadata() or ())))

    async def unary_unary(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self._note("unary_unary", context)
        return request

    async def unary_stream(self, request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        self._note("unary_stream", context)
        yield request

    async def stream_unary(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
        self._note("stream_unary", context)
        return b"".join([r async for r in requests])

    async def stream_stream(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        self._note("stream_stream", context)
        async for r in requests:
            yield r

    def handler(self) -> grpc.GenericRpcHandler:
        kinds = {
            "unary_unary": grpc.unary_unary_rpc_method_handler,
            "unary_stream": grpc.unary_stream_rpc_method_handler,
            "stream_unary": grpc.stream_unary_rpc_method_handler,
            "stream_stream": grpc.stream_stream_rpc_method_handler,
        }
        return grpc.method_handlers_generic_handler("test.Echo", {name: kinds[name](getattr(self, name)) for name in SHAPES})


@pytest.fixture
async def echo(pki):
    cert = pki.agent(ACME)
    server = grpc.aio.server()
    recorder = EchoServer()
    server.add_generic_rpc_handlers((recorder.handler(),))
    creds = grpc.ssl_server_credentials(
        [(cert.key_pem, cert.chain_pem)], root_certificates=pki.root_pem, require_client_auth=True
    )
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    yield recorder, f"127.0.0.1:{port}", cert
    await server.stop(None)


async def one_call(channel: grpc.aio.Channel, shape: str) -> object:
    multicallable = getattr(channel, shape)(f"/test.Echo/{shape}")
    request = b"ping"
    if shape.startswith("stream"):

        async def requests() -> AsyncIterator[bytes]:
            yield request

        call = multicallable(requests(), timeout=5)
    else:
        call = multicallable(request, timeout=5)
    if shape.endswith("stream"):
        return [r async for r in call]
    return await call


@pytest.mark.parametrize("shape", SHAPES)
async def test_every_call_shape_is_stamped_and_refused_once_the_identity_ends(pki, echo, shape):
    recorder, address, cert = echo
    trust = TrustStore(pki.directory)
    conn = await dial_agent(address, tenant=ACME, trust=trust)
    try:
        assert await one_call(conn.channel, shape) in (b"ping", [b"ping"])
        [(name, metadata)] = recorder.seen
        assert name == shape
        assert (metadata[TENANT_METADATA_KEY], metadata[AGENT_METADATA_KEY]) == (ACME, cert.cn)

        pki.revoke(ACME, cert)
        trust.reload()
        with pytest.raises(IdentityRefused) as caught:
            await one_call(conn.channel, shape)
        assert caught.value.reason is Reason.REVOKED
        assert len(recorder.seen) == 1  # nothing more reached the agent
    finally:
        await conn.close()


@pytest.mark.parametrize("shape", SHAPES)
async def test_the_raw_pinned_channel_refuses_every_shape_too(pki, echo, shape):
    """The check sits on the channel of the moment too, not only on the facade."""
    recorder, address, _ = echo
    trust = TrustStore(pki.directory)
    conn = await dial_agent(address, tenant=ACME, trust=trust)
    try:
        raw = conn.current_channel
        conn.refusal = IdentityRefused(Reason.REVOKED, "set by the test")  # as a re-check would, without closing
        with pytest.raises(IdentityRefused):
            await one_call(raw, shape)
        assert recorder.seen == []
    finally:
        await conn.close()
