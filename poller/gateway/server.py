"""Serving the gateway: a grpc.aio server over mTLS (client certificate required),
every call behind TenantServerInterceptor with the push registry's policy.

>>> server = await serve_gateway(gateway, trust, "0.0.0.0:50052", chain_pem, key_pem)  # doctest: +SKIP
>>> server.port  # doctest: +SKIP
50052
>>> await server.stop()  # doctest: +SKIP
"""

from __future__ import annotations

import grpc
from google.protobuf.message_factory import GetMessageClass

from poller.config.model import DEFAULT_GATEWAY_AUDIT_ACCEPTED
from poller.gateway.bounds import GatewayBounds
from poller.gateway.service import AgentGateway
from poller.identity.reasons import InvalidArgument
from poller.proto import monitoring_pb2 as pb
from poller.server.credentials import PemSource, server_credentials
from poller.server.interceptor import TenantServerInterceptor
from poller.server.read_after_proof import READ_AFTER_PROOF_OPTIONS, unary_read_after_proof
from poller.trust.store import TrustStore

__all__ = ["GatewayServer", "serve_gateway", "server_options", "service_handlers"]

SERVICE = "monitoring.AgentGatewayService"

#: ServiceRadar's agent pings every 120 s while it has a call open (its ControlStream,
#: for a HEAD agent: always), go/pkg/grpc/client.go. grpc core's server takes a ping
#: sooner than 5 minutes after the last one, with no frame sent between, as a strike,
#: and after the third sends the agent away (GOAWAY too_many_pings). Pings are taken
#: from half that interval on: the agent's, with room for timer jitter; a client
#: pinging faster than this with nothing to say is still sent away.
AGENT_PING_MIN_INTERVAL = 60.0


class GatewayServer:
    """A started gateway: its grpc.aio server, bound port and interceptor."""

    def __init__(self, server: grpc.aio.Server, port: int, interceptor: TenantServerInterceptor, gateway: AgentGateway) -> None:
        self.server = server
        self.port = port
        self.interceptor = interceptor
        self.gateway = gateway

    async def stop(self, grace: float | None = 1.0) -> None:
        """Stop serving; calls still running get `grace` seconds (their streams end)."""
        await self.server.stop(grace)


async def serve_gateway(
    gateway: AgentGateway,
    trust: TrustStore,
    listen: str,
    certificate_chain: PemSource,
    private_key: PemSource,
    *,
    recheck_interval: float = 5.0,
    audit_accepted: str = DEFAULT_GATEWAY_AUDIT_ACCEPTED,
) -> GatewayServer:
    """Start serving `gateway` on `listen` ("host:port"; port 0 picks one).

    TLS: the gateway's chain and key (PEM bytes or paths, re-read at each trust
    reload); a client must present a certificate that chains to the root or a
    tenant CA of the trust snapshot in force at its handshake (a tenant CA added
    by a reload needs no restart: poller.server.credentials). Then the
    interceptor proves it as for any server call (platform identities are not
    admitted) and the push registry's policy admits it, or refuses `unknown_agent`.
    `audit_accepted`: "connection" (the default, as in the config) audits an
    accepted agent's first call of each method on a connection and proof, not
    each of its pushes; "call" audits every call. Refusals are audited every time.
    """
    interceptor = TenantServerInterceptor(
        trust,
        default_policy=gateway.pushes.policy(gateway.count_unknown),
        platform=False,
        metrics=gateway.metrics,
        recheck_interval=recheck_interval,
        audit_accepted=audit_accepted,
        on_refused=gateway.identity_refused,
    )
    server = grpc.aio.server(interceptors=[interceptor], options=server_options(gateway.bounds))
    handlers = service_handlers(gateway)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
    bind = f"[::]{listen}" if listen.startswith(":") else listen  # ":50052": every interface, as the config allows
    try:
        port = server.add_secure_port(bind, server_credentials(trust, certificate_chain, private_key, platform=None))
    except RuntimeError as exc:  # grpc's "Failed to bind"
        raise InvalidArgument(f"gateway cannot listen on {listen}: {exc}") from None
    await server.start()
    return GatewayServer(server, port, interceptor, gateway)


def service_handlers(gateway: AgentGateway) -> dict[str, grpc.RpcMethodHandler]:
    """AgentGatewayService's method handlers, from its descriptor: each unary method is
    served so that its request is read after the proof (poller.server.read_after_proof;
    a revoked certificate's pushes were each read in full, up to 16 MiB, before they
    were refused), when the gateway has admitted the call and given it a read place;
    the streams as they are. On the wire nothing changes."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in pb.DESCRIPTOR.services_by_name["AgentGatewayService"].methods:
        behaviour = getattr(gateway, method.name)
        request = GetMessageClass(method.input_type).FromString
        response = GetMessageClass(method.output_type).SerializeToString
        if not method.client_streaming and not method.server_streaming:
            handlers[method.name] = unary_read_after_proof(behaviour, request, response, reads_itself=True)
        elif method.client_streaming and not method.server_streaming:
            handlers[method.name] = grpc.stream_unary_rpc_method_handler(behaviour, request, response)
        elif method.client_streaming:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(behaviour, request, response)
        else:  # a server stream's request would be read before the proof: none is declared
            raise TypeError(f"{SERVICE}/{method.name}: a unary-stream method is not served by the gateway")
    return handlers


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def server_options(bounds: GatewayBounds) -> list[tuple[str, int]]:
    """The gateway's grpc server options for `bounds`.

    >>> dict(server_options(GatewayBounds()))["grpc.keepalive_time_ms"]
    120000
    """
    keepalive_timeout = _ms(bounds.keepalive_timeout)
    return [
        ("grpc.max_receive_message_length", bounds.max_message_bytes),
        ("grpc.max_send_message_length", 4 * 1024 * 1024),
        # At accept, before TLS (no tenant known yet): one over is closed, the agent retries.
        ("grpc.max_allowed_incoming_connections", bounds.max_connections),
        # A connection without calls this long is closed (GOAWAY); TenantLimits stops counting it then.
        ("grpc.max_connection_idle_ms", _ms(bounds.connection_idle)),
        # A connection quiet for `keepalive` is pinged, with calls open or not, and closed if the
        # ping is not answered in `keepalive_timeout`: its calls end (a ControlStream's request
        # stream ends), so a connection gone silent gives back its calls and streams. grpc core
        # (1.85) waits for the answer as long as ping_timeout_ms (default 1 minute), whatever
        # keepalive_timeout_ms says: both are set.
        ("grpc.keepalive_time_ms", _ms(bounds.keepalive)),
        ("grpc.keepalive_timeout_ms", keepalive_timeout),
        ("grpc.http2.ping_timeout_ms", keepalive_timeout),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),  # keep pinging an open stream that carries nothing
        ("grpc.http2.min_ping_interval_without_data_ms", _ms(AGENT_PING_MIN_INTERVAL)),
        # grpc sets SO_REUSEPORT by default: a second poller on the same listen address would
        # bind beside the first, and the kernel would share agents between them unsaid.
        ("grpc.so_reuseport", 0),
        # A request not yet read (its caller not yet proven) is held to 1 MiB per stream.
        *READ_AFTER_PROOF_OPTIONS,
    ]
