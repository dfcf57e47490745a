"""Invariant 8 on the server side: a long-lived call behind TenantServerInterceptor
ends when its caller's identity stops holding (revoked by a new CRL, its CA
removed, notAfter reached), not only new calls. Real mTLS on loopback, the
example service's stream-stream Chat.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from short_ca import tenant_ca_until
from test_server_interceptor import ACME, Service, example, method, reason_of

from poller.server import REASON_METADATA_KEY
from poller.trust import TrustSnapshot, TrustStore


class Chat:
    """One open Chat call: send() a line, read its echo; the call stays open in between."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.call = channel.stream_stream(method("Chat"))(self._requests())

    async def _requests(self) -> AsyncIterator[bytes]:
        while (item := await self.outbox.get()) is not None:
            yield item

    async def say(self, text: str) -> str:
        """Send a line; the echo the service answered (the example's Struct replies)."""
        await self.outbox.put(example.encode({"text": text}))
        return str(example.decode(await self.call.read())["echo"])

    async def ended(self) -> tuple[grpc.StatusCode, str | None]:
        """Wait for the call's end (no message is sent meanwhile): its code and reason."""
        try:
            while await self.call.read() is not grpc.aio.EOF:
                pass
        except grpc.aio.AioRpcError:
            pass  # read() raises the call's non-OK status; code() and the trailers say which
        code = await self.call.code()
        reasons = [v for k, v in await self.call.trailing_metadata() or () if k == REASON_METADATA_KEY]
        return code, reasons[0] if reasons else None


async def _service(pki, trust) -> tuple[Service, grpc.aio.Server]:
    chain, key = pki.client_identity()
    server, port = await example.start_service(trust, chain, key)
    return Service(pki, port, server), server


@pytest.fixture
async def served(pki) -> AsyncIterator[tuple[Service, TrustStore]]:
    trust = TrustStore(pki.directory, require_client=False)
    service, server = await _service(pki, trust)
    yield service, trust
    await service.close()
    await server.stop(None)


async def test_a_stream_open_before_a_revocation_ends_when_the_crl_arrives(pki, served, log_events):
    service, trust = served
    agent = pki.agent(ACME, "agent-003")
    other = pki.agent(ACME, "agent-004")
    chat, bystander = Chat(service.channel(agent)), Chat(service.channel(other))
    assert await chat.say("hello") == "hello"
    assert await bystander.say("hi") == "hi"
    pki.revoke(ACME, agent)
    trust.reload()  # notifies: the open call is re-proven at once
    code, reason = await chat.ended()
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "revoked")
    # The other identity's stream of the same tenant is untouched.
    assert await bystander.say("still") == "still"
    await bystander.outbox.put(None)
    assert await bystander.ended() == (grpc.StatusCode.OK, None)
    ended = [e for e in log_events() if e["event"] == "server_call_ended"]
    assert len(ended) == 1 and ended[0]["reason"] == "revoked" and ended[0]["component"] == "agent-003"
    assert ended[0]["audit"] is True and ended[0]["method"] == method("Chat") and ended[0]["issuer_tenant"] == ACME


async def test_a_stream_ends_when_its_tenant_ca_is_removed(pki, served):
    service, trust = served
    chat = Chat(service.channel(pki.agent(ACME, "agent-005")))
    assert await chat.say("x") == "x"
    shutil.rmtree(pki.directory / "tenants" / ACME)
    trust.reload()
    code, reason = await chat.ended()
    assert code == grpc.StatusCode.UNAUTHENTICATED and reason == "untrusted_chain"


async def test_a_stream_ends_when_the_certificate_reaches_not_after(pki, served):
    service, _ = served
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=4)
    chat = Chat(service.channel(pki.agent(ACME, "agent-006", not_after=soon)))
    assert await chat.say("x") == "x"  # valid now; nothing is sent after this
    code, reason = await chat.ended()  # the deadline timer, no trust change
    assert code == grpc.StatusCode.UNAUTHENTICATED and reason == "expired"
    assert datetime.now(UTC) > soon


async def test_a_stream_and_its_connection_end_when_the_tenant_ca_reaches_not_after(pki, log_events):
    """A leaf that outlives its tenant CA (a CA need not cap its leaves): at the CA's
    notAfter the open stream ends and the next call on the same connection is
    refused, with the reason a fresh proof gives, as a new handshake would be."""
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=4)
    tenant_ca_until(pki, "short-co", soon)
    trust = TrustStore(pki.directory, require_client=False)
    service, server = await _service(pki, trust)
    try:
        channel = service.channel(pki.agent("short-co", "agent-001"))  # a year
        whoami = channel.unary_unary(method("Whoami"))
        chat = Chat(channel)
        assert await chat.say("x") == "x"
        assert example.decode(await whoami(example.encode({}), timeout=10))["tenant"] == "short-co"
        code, reason = await asyncio.wait_for(chat.ended(), 30)  # the deadline timer, no trust change
        assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "untrusted_chain")
        assert datetime.now(UTC) > soon
        with pytest.raises(grpc.aio.AioRpcError) as info:  # the same connection: its remembered proof ended too
            await whoami(example.encode({}), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED and await reason_of(info.value) == "untrusted_chain"
        ended = [e for e in log_events() if e["event"] == "server_call_ended"]
        assert [(e["reason"], e["tenant"], e["component"], e["issuer_tenant"]) for e in ended] == [
            ("untrusted_chain", "short-co", "agent-001", "short-co")
        ]
    finally:
        await service.close()
        await server.stop(None)


async def test_a_source_that_cannot_notify_is_rechecked_every_interval(pki):
    """A plain snapshot holder (no subscribe): the open call still ends at the next re-check."""

    class Holder:
        def __init__(self, snapshot: TrustSnapshot) -> None:
            self.snapshot = snapshot

    store = TrustStore(pki.directory, require_client=False)
    holder = Holder(store.snapshot)
    chain, key = pki.client_identity()
    from poller.server import TenantServerInterceptor, server_credentials

    server = grpc.aio.server(interceptors=[TenantServerInterceptor(holder, policies=example.POLICIES, recheck_interval=0.2)])
    server.add_generic_rpc_handlers((example.handlers(),))
    port = server.add_secure_port("127.0.0.1:0", server_credentials(store, chain, key))
    await server.start()
    service = Service(pki, port, server)
    try:
        agent = pki.agent(ACME, "agent-007")
        chat = Chat(service.channel(agent))
        assert await chat.say("x") == "x"
        pki.revoke(ACME, agent)
        store.reload()
        holder.snapshot = store.snapshot  # no notification: found at the next re-check
        assert await chat.ended() == (grpc.StatusCode.UNAUTHENTICATED, "revoked")
    finally:
        await service.close()
        await server.stop(None)
