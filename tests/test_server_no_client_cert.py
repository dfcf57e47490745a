"""A caller without a client certificate (issue 18 item 18), on every call shape.

grpcio's server credentials know two modes only: require and verify a client
certificate (require_client_auth=True, server_credentials' default), or do
not ask for one at all (False maps to GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
there is no "request but do not require" in grpcio's Python API). So:

- with the default, a caller without a certificate fails the TLS handshake:
  it sees UNAVAILABLE, no handler runs, and no call means no audit line of
  ours (the README says so);
- with require_client_auth=False no caller ever presents a certificate, and
  the interceptor refuses every call UNAUTHENTICATED `bad_certificate`,
  audited, on all four shapes (fail closed, never a call without identity).

Real TLS on loopback, a real grpc.aio server (examples/tenant_service.py).
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from test_server_interceptor import example, method, reason_of

from poller.server import TenantServerInterceptor, server_credentials
from poller.trust import TrustStore

ACME = "acme-corp"
README = Path(__file__).resolve().parents[1] / "README.md"
SHAPES = ("Whoami", "Watch", "Upload", "Chat")


async def _requests():
    yield example.encode({})  # the example service takes Structs


async def call_shape(channel: grpc.aio.Channel, name: str) -> None:
    """One call of the shape the method has, consumed to its end."""
    if name == "Whoami":
        await channel.unary_unary(method(name))(b"{}", timeout=10)
    elif name == "Watch":
        async for _ in channel.unary_stream(method(name))(b"{}", timeout=10):
            pass
    elif name == "Upload":
        await channel.stream_unary(method(name))(_requests(), timeout=10)
    else:
        async for _ in channel.stream_stream(method(name))(_requests(), timeout=10):
            pass


async def start(pki, *, require_client_auth: bool) -> tuple[grpc.aio.Server, int]:
    trust = TrustStore(pki.directory, require_client=False)
    chain, key = pki.client_identity()
    server = grpc.aio.server(interceptors=[TenantServerInterceptor(trust, policies=example.POLICIES)])
    server.add_generic_rpc_handlers((example.handlers(),))
    creds = server_credentials(trust, chain, key, require_client_auth=require_client_auth)
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    return server, port


def channel(pki, port: int, who=None) -> grpc.aio.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=pki.root_pem,
        private_key=who.key_pem if who else None,
        certificate_chain=who.chain_pem if who else None,
    )
    return grpc.aio.secure_channel(
        f"127.0.0.1:{port}", creds, options=[("grpc.ssl_target_name_override", "poller-1.serviceradar")]
    )


@pytest.mark.parametrize("name", SHAPES)
async def test_a_caller_without_a_certificate_is_refused_by_tls_on_every_call_shape(pki, log_events, name):
    server, port = await start(pki, require_client_auth=True)
    try:
        async with channel(pki, port) as anonymous:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call_shape(anonymous, name)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
        # No call was made: nothing accepted (and nothing of ours to audit).
        assert not [e for e in log_events() if e["event"] == "server_call_accepted"]
        # An honest caller on the same server is served (the refusal was the missing certificate).
        async with channel(pki, port, pki.agent(ACME)) as honest:
            await call_shape(honest, name)
        assert [e["method"] for e in log_events() if e["event"] == "server_call_accepted"] == [method(name)]
    finally:
        await server.stop(None)


async def test_without_require_client_auth_no_certificate_is_requested_and_every_call_is_refused(pki, log_events):
    """Why server_credentials keeps require_client_auth=True: with False grpcio
    does not even ask, so a caller holding a valid certificate presents none,
    and the interceptor's no-certificate path refuses (and audits) every shape."""
    server, port = await start(pki, require_client_auth=False)
    try:
        async with channel(pki, port, pki.agent(ACME)) as caller:
            for name in SHAPES:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call_shape(caller, name)
                err = caught.value
                assert err.code() == grpc.StatusCode.UNAUTHENTICATED, (name, err.code(), err.details())
                assert err.details().startswith("bad_certificate")
                assert await reason_of(err) == "bad_certificate"
    finally:
        await server.stop(None)
    logs = log_events()
    assert not [e for e in logs if e["event"] == "server_call_accepted"]
    refused = [e for e in logs if e["event"] == "server_call_refused"]
    assert sorted(e["method"] for e in refused) == sorted(method(n) for n in SHAPES)
    for line in refused:
        assert (line["reason"], line["audit"]) == ("bad_certificate", True)
        assert "no client certificate" in line["detail"]


def test_the_readme_says_what_a_caller_without_a_certificate_sees():
    text = " ".join(README.read_text().split())
    assert "A caller without a client certificate" in text
    assert "UNAVAILABLE" in text and "no audit line" in text
