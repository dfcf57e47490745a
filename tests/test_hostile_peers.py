"""Peers that are not well-behaved agents: silent, garbage-speaking, or
answering with bytes that are not the protobuf they should be. Each gives a
clear error and no identity."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from poller.agent.client import AgentClient
from poller.agent.stream import IncompleteStream
from poller.dial.dialer import dial_agent
from poller.identity.reasons import AgentUnreachable, InvalidPayload, Reason

ACME = "acme-corp"


@pytest.fixture
async def raw_server():
    """raw_server(handler) -> port of a plain TCP server running handler(reader, writer)."""
    servers = []

    async def _start(handler):
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return server.sockets[0].getsockname()[1]

    yield _start
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_peer_that_never_speaks_tls_times_out(trust, raw_server):
    accepted = asyncio.Event()

    async def silent(reader, writer):
        accepted.set()
        await reader.read()  # until the poller gives up and closes

    port = await raw_server(silent)
    with pytest.raises(AgentUnreachable) as caught:
        await dial_agent(f"127.0.0.1:{port}", tenant=ACME, trust=trust, timeout=0.5)
    assert accepted.is_set()
    assert caught.value.reason is Reason.UNREACHABLE and "timed out" in caught.value.detail


async def test_peer_that_sends_garbage_is_unreachable_not_accepted(trust, raw_server):
    async def garbage(reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n" + bytes(range(256)) * 8)
        await writer.drain()
        writer.close()

    port = await raw_server(garbage)
    with pytest.raises(AgentUnreachable) as caught:
        await dial_agent(f"127.0.0.1:{port}", tenant=ACME, trust=trust, timeout=2)
    assert "TLS handshake" in caught.value.detail
    assert "does not speak TLS" in caught.value.detail  # said plainly, not only an OpenSSL code


async def garbage_agent(pki, cert):
    """A real mTLS gRPC server whose AgentService answers raw garbage bytes."""
    server = grpc.aio.server()

    async def garbage_status(request: bytes, context) -> bytes:
        return b"\xff\xff\xff\xff\x0f"  # not a StatusResponse

    async def garbage_stream(request: bytes, context):
        from poller.proto import monitoring_pb2 as pb

        yield pb.ResultsChunk(data=b'{"a":', chunk_index=0, total_chunks=3).SerializeToString()
        yield b"\x0a\xff\xff\xff\xff\x0f"  # a length that runs past the message
        yield pb.ResultsChunk(data=b"1}", chunk_index=2, total_chunks=3, is_final=True).SerializeToString()

    handler = grpc.method_handlers_generic_handler(
        "monitoring.AgentService",
        {  # no (de)serializers: raw bytes in and out
            "GetStatus": grpc.unary_unary_rpc_method_handler(garbage_status),
            "StreamResults": grpc.unary_stream_rpc_method_handler(garbage_stream),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    creds = grpc.ssl_server_credentials(
        [(cert.key_pem, cert.chain_pem)], root_certificates=pki.root_pem, require_client_auth=True
    )
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    return server, port


async def test_agent_answering_garbage_protobuf_is_a_clear_call_error(pki, trust):
    server, port = await garbage_agent(pki, pki.agent(ACME))
    try:
        conn = await dial_agent(f"127.0.0.1:{port}", tenant=ACME, trust=trust)
        try:
            with pytest.raises(AgentUnreachable) as caught:
                await AgentClient(conn).get_status("ping", "icmp")
            assert isinstance(caught.value, InvalidPayload)
            assert caught.value.code is None  # no made-up gRPC code
            assert caught.value.outcome is Reason.INVALID_PAYLOAD
            assert "not a valid StatusResponse" in caught.value.detail
            assert conn.context.tenant == ACME  # the identity is untouched by a bad payload
        finally:
            await conn.close()
    finally:
        await server.stop(None)


async def test_garbage_in_the_middle_of_a_stream_is_never_a_document(pki, trust):
    server, port = await garbage_agent(pki, pki.agent(ACME))
    try:
        conn = await dial_agent(f"127.0.0.1:{port}", tenant=ACME, trust=trust)
        try:
            with pytest.raises(IncompleteStream) as caught:
                await AgentClient(conn).fetch_document("sweep", "sweep")
            assert "not a valid ResultsChunk" in caught.value.detail
        finally:
            await conn.close()
    finally:
        await server.stop(None)


async def test_many_silent_peers_do_not_starve_an_honest_dial(pki, trust, serve, raw_server):
    """Each collecting handshake has a hard deadline, so silent peers hold the
    handshake threads for at most their timeout and an honest agent is still
    proven (its own deadline is longer than theirs)."""

    async def silent(reader, writer):
        await reader.read()

    port = await raw_server(silent)
    good = await serve(pki.agent(ACME))
    silent_dials = [dial_agent(f"127.0.0.1:{port}", tenant=ACME, trust=trust, timeout=0.5) for _ in range(80)]
    outcomes = await asyncio.gather(
        *silent_dials, dial_agent(good.address, tenant=ACME, trust=trust, timeout=10), return_exceptions=True
    )
    *silents, honest = outcomes
    assert all(isinstance(o, AgentUnreachable) for o in silents)
    assert not isinstance(honest, BaseException), honest
    assert honest.context.tenant == ACME
    await honest.close()


async def test_dialing_works_with_file_descriptors_above_1024(pki, trust, serve):
    """A poller holding thousands of agents has descriptors past select()'s limit."""
    import os
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"fd hard limit {hard} is below 1200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1300), hard))
    agent = await serve(pki.agent(ACME))
    held: list[int] = []
    try:
        while not held or held[-1] < 1100:  # fills every free descriptor below 1100 too
            held.append(os.open(os.devnull, os.O_RDONLY))
        conn = await dial_agent(agent.address, tenant=ACME, trust=trust)
        await conn.close()
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
