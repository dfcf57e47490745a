"""Serving the gateway: a grpc.aio server over mTLS (client certificate required),
every call behind TenantServerInterceptor with the push registry's policy.

>>> server = await serve_gateway(gateway, trust, "0.0.0.0:50052", chain_pem, key_pem)  # doctest: +SKIP
>>> server.port  # doctest: +SKIP
50052
>>> await server.stop()  # doctest: +SKIP
"""

from __future__ import annotations

import grpc

from poller.config.model import DEFAULT_GATEWAY_AUDIT_ACCEPTED
from poller.gateway.service import AgentGateway
from poller.identity.reasons import InvalidArgument
from poller.proto import monitoring_pb2_grpc as pb_grpc
from poller.server.credentials import PemSource, server_credentials
from poller.server.interceptor import TenantServerInterceptor
from poller.trust.store import TrustStore

__all__ = ["GatewayServer", "serve_gateway"]


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
    bounds = gateway.bounds
    server = grpc.aio.server(
        interceptors=[interceptor],
        options=[
            ("grpc.max_receive_message_length", bounds.max_message_bytes),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            # At accept, before TLS (no tenant known yet): one over is closed, the agent retries.
            ("grpc.max_allowed_incoming_connections", bounds.max_connections),
            # A connection without calls this long is closed (GOAWAY); TenantLimits stops counting it then.
            ("grpc.max_connection_idle_ms", max(1, int(bounds.connection_idle * 1000))),
        ],
    )
    pb_grpc.add_AgentGatewayServiceServicer_to_server(gateway, server)
    bind = f"[::]{listen}" if listen.startswith(":") else listen  # ":50052": every interface, as the config allows
    try:
        port = server.add_secure_port(bind, server_credentials(trust, certificate_chain, private_key, platform=None))
    except RuntimeError as exc:  # grpc's "Failed to bind"
        raise InvalidArgument(f"gateway cannot listen on {listen}: {exc}") from None
    await server.start()
    return GatewayServer(server, port, interceptor, gateway)
