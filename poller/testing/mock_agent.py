"""A mock ServiceRadar agent: a real grpc.aio mTLS server on loopback.

It serves `monitoring.AgentService` (GetStatus, GetResults, StreamResults),
the standard health service `grpc.health.v1.Health` and gRPC server
reflection (so `grpcurl` lists and calls it without .proto files), requires a client
certificate that chains to the given client CA (the platform root), records
what it was asked, and misbehaves on demand through a mutable
`AgentBehaviour` that tests may change while the agent runs.

>>> async def demo(chain, key, root):  # doctest: +SKIP
...     async with MockAgent(cert_chain_pem=chain, key_pem=key, client_ca_pem=root) as agent:
...         agent.behaviour.hang = True
...         ...  # dial agent.address, expect DEADLINE_EXCEEDED
...         await agent.restart(cert_chain_pem=impostor_chain, key_pem=impostor_key)

Nothing here uses sleeps for synchronisation: a hung handler waits on an
event that `stop()` sets, so stopping never waits for a hang.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from poller.identity.names import InvalidName, format_edge_cn, parse_edge_cn
from poller.identity.reasons import PollerError
from poller.proto import monitoring_pb2 as pb
from poller.proto import monitoring_pb2_grpc as pb_grpc
from poller.trust.layout import CertsLayout

__all__ = [
    "AGENT_METHODS",
    "HEALTH_SERVICES",
    "AgentBehaviour",
    "MockAgent",
    "MockAgentError",
    "split_document",
]

#: The AgentService methods; the default scope of the faults.
AGENT_METHODS = frozenset({"GetStatus", "GetResults", "StreamResults"})
#: Health service names the mock agent knows (others get NOT_FOUND).
HEALTH_SERVICES = frozenset({"", "AgentService", "monitoring.AgentService"})

_ServingStatus = health_pb2.HealthCheckResponse.ServingStatus
# What reflection lists: the agent's services and reflection itself (grpcurl's `list`).
_REFLECTED = (
    pb.DESCRIPTOR.services_by_name["AgentService"].full_name,
    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
    reflection.SERVICE_NAME,
)


class MockAgentError(PollerError, RuntimeError):
    """The mock agent could not be set up (bad PEM, port not bindable, ...)."""


@dataclass
class AgentBehaviour:
    """What the mock agent answers, and how it misbehaves. Mutable at any time.

    Faults (`delay`, `hang`, `error_code`) apply to the methods named in
    `fault_methods` (default: the three AgentService methods; add "Check" or
    "Watch" to make the health service misbehave too).
    """

    # -- GetStatus ------------------------------------------------------------
    available: bool = True
    message: bytes = b'{"status":"ok"}'
    response_time_ns: int = 1_000_000
    #: agent_id put in payloads; None means the agent's configured id.
    agent_id: str | None = None
    #: if set, every payload claims this agent id instead (identity-spoof test).
    claim_agent_id: str | None = None

    # -- GetResults -----------------------------------------------------------
    results_data: bytes = b'{"hosts":[]}'
    #: the sequence counter; current_sequence is str(sequence).
    sequence: int = 1
    #: bump the sequence before every GetResults/StreamResults answer.
    auto_advance: bool = False
    #: unix seconds; None means "now" at answer time.
    timestamp: int | None = None
    sweep_completion: pb.SweepCompletionStatus | None = None
    execution_id: str = ""
    sweep_group_id: str = ""

    # -- StreamResults --------------------------------------------------------
    stream_document: bytes = b'{"hosts":[{"ip":"192.0.2.1","available":true},{"ip":"192.0.2.2","available":false}]}'
    stream_chunks: int = 3
    #: abort the stream with `drop_code` after sending k chunks (never is_final).
    drop_after_chunks: int | None = None
    drop_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    #: end the stream cleanly, but the last chunk does not say is_final.
    end_without_final: bool = False
    #: leave out the chunk with this index (a gap).
    skip_chunk_index: int | None = None
    #: after k chunks, stop sending and hang until cancelled / the agent stops.
    stall_after_chunks: int | None = None
    #: seconds between chunks (server side only).
    chunk_delay: float = 0.0
    #: a hostile stream: this same bytes object as every chunk, never is_final,
    #: `endless_limit` chunks (None: until the call is cancelled). Cheap for the
    #: agent, however much the poller is asked to hold.
    endless_chunk: bytes | None = None
    endless_limit: int | None = None

    # -- faults ---------------------------------------------------------------
    delay: float = 0.0
    hang: bool = False
    error_code: grpc.StatusCode | None = None
    error_message: str = "mock agent fault"
    fault_methods: frozenset[str] = field(default_factory=lambda: AGENT_METHODS)

    # -- health ---------------------------------------------------------------
    #: "SERVING", "NOT_SERVING", ... or a HealthCheckResponse.ServingStatus value.
    health_status: str | int = "SERVING"

    @property
    def current_sequence(self) -> str:
        return str(self.sequence)

    def advance_sequence(self, results_data: bytes | None = None) -> str:
        """Bump the sequence (new data available); optionally set new data."""
        self.sequence += 1
        if results_data is not None:
            self.results_data = results_data
        return self.current_sequence

    def health_value(self) -> int:
        status = self.health_status
        if isinstance(status, str):
            return int(_ServingStatus.Value(status.upper()))
        return int(status)


def split_document(document: bytes, n: int) -> list[bytes]:
    """Split `document` into `n` (>= 1) contiguous pieces, sizes differing by at most 1."""
    n = max(1, int(n))
    size, extra = divmod(len(document), n)
    pieces, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        pieces.append(document[start:end])
        start = end
    return pieces


def _first_cert(chain_pem: bytes) -> x509.Certificate:
    try:
        certs = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        raise MockAgentError(f"certificate chain is not PEM: {exc}") from None
    return certs[0]


def _cn_of(name: x509.Name) -> str | None:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attrs:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _check_key(key_pem: bytes, leaf: x509.Certificate) -> None:
    try:
        key = load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise MockAgentError(f"private key is not an unencrypted PEM key: {exc}") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, spki) != leaf.public_key().public_bytes(
        serialization.Encoding.DER, spki
    ):
        raise MockAgentError("private key does not match the certificate (first in the chain)")


def _looks_like_tenant_ca(cn: str | None) -> bool:
    # Deliberately looser than parse_tenant_ca_cn: anything shaped like a
    # tenant CA name counts, so odd slugs cannot slip past the refusal.
    return cn is not None and cn.startswith("tenant-") and cn.endswith(".ca.serviceradar")


def _as_bytes(data: bytes | str) -> bytes:
    return data.encode() if isinstance(data, str) else data


class MockAgent:
    """A real mTLS gRPC agent on loopback. See the module docstring."""

    def __init__(
        self,
        *,
        cert_chain_pem: bytes | str,
        key_pem: bytes | str,
        client_ca_pem: bytes | str,
        behaviour: AgentBehaviour | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        platform_clients_only: bool = False,
        agent_id: str | None = None,
        grace: float = 0.2,
    ) -> None:
        self.behaviour = behaviour if behaviour is not None else AgentBehaviour()
        self.host = host
        self.platform_clients_only = platform_clients_only
        self.grace = grace
        self._port = port
        self._set_identity(_as_bytes(cert_chain_pem), _as_bytes(key_pem), _as_bytes(client_ca_pem))
        if agent_id is None:
            agent_id = self.edge_name.component_id if self.edge_name is not None else (self.cn or "mock-agent")
        self.agent_id = agent_id

        # Records for assertions.
        self.requests: list[tuple[str, Any]] = []
        self.peers: list[str | None] = []
        #: the transport address of each call's connection ("ipv4:127.0.0.1:port").
        self.connections: list[str] = []
        self.counts: collections.Counter[str] = collections.Counter()
        self.metadata: list[tuple[str, tuple[tuple[str, Any], ...]]] = []
        self.refused: list[tuple[str, str | None, str]] = []

        self._server: grpc.aio.Server | None = None
        self._stopping: asyncio.Event | None = None
        self._recorded: asyncio.Condition | None = None

    # -- construction helpers -------------------------------------------------

    @classmethod
    def from_certs_dir(
        cls,
        certs_dir: str | Path,
        tenant: str,
        component_id: str,
        partition_id: str,
        *,
        client_ca: str | Path | None = None,
        **kw: Any,
    ) -> MockAgent:
        """Load the component's chain (or cert), key and root.pem (or client_ca) from a certs dir."""
        format_edge_cn(component_id, partition_id, tenant)  # validates the labels
        layout = CertsLayout(Path(certs_dir))
        files = layout.component_files(tenant, component_id, partition_id)
        try:
            chain_pem = (files.chain if files.chain.exists() else files.cert).read_bytes()
            key_pem = files.key.read_bytes()
            ca_pem = Path(client_ca or layout.root_ca).read_bytes()
        except OSError as exc:
            raise MockAgentError(f"cannot read agent certificates: {exc}") from None
        kw.setdefault("agent_id", component_id)
        return cls(cert_chain_pem=chain_pem, key_pem=key_pem, client_ca_pem=ca_pem, **kw)

    def _set_identity(self, chain_pem: bytes, key_pem: bytes, client_ca_pem: bytes) -> None:
        leaf = _first_cert(chain_pem)
        _check_key(key_pem, leaf)
        if b"-----BEGIN CERTIFICATE-----" not in client_ca_pem:
            raise MockAgentError("client CA is not a PEM certificate")
        self._chain_pem = chain_pem
        self._key_pem = key_pem
        self._client_ca_pem = client_ca_pem
        self.certificate = leaf
        self.cn = _cn_of(leaf.subject)
        try:
            self.edge_name = parse_edge_cn(self.cn) if self.cn else None
        except InvalidName:
            self.edge_name = None

    # -- lifecycle ------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self._port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> int:
        """Bind and serve; return the port. Starting a running agent is a no-op."""
        if self._server is not None:
            return self._port
        server = grpc.aio.server(
            options=[
                # Own the port exclusively, so a failed rebind is an error and
                # not a silent share with another process.
                ("grpc.so_reuseport", 0),
            ]
        )
        pb_grpc.add_AgentServiceServicer_to_server(_AgentServicer(self), server)
        health_pb2_grpc.add_HealthServicer_to_server(_HealthServicer(self), server)
        reflection.enable_server_reflection(_REFLECTED, server)
        creds = grpc.ssl_server_credentials(
            [(self._key_pem, self._chain_pem)],
            root_certificates=self._client_ca_pem,
            require_client_auth=True,
        )
        wanted = self._port
        try:
            bound = server.add_secure_port(self.address, creds)
        except RuntimeError:
            bound = 0
        if not bound or (wanted and bound != wanted):
            await server.stop(None)
            raise MockAgentError(self._bind_failure())
        self._port = bound
        self._stopping = asyncio.Event()
        await server.start()
        self._server = server
        return int(bound)

    def _bind_failure(self) -> str:
        """Why add_secure_port failed: the port, or credentials gRPC's TLS refuses."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((self.host.strip("[]"), self._port))
        except OSError as exc:
            return f"mock agent cannot bind {self.address}: {exc.strerror or exc}"
        hint = ""
        try:
            usage = self.certificate.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            pass
        else:
            if not usage.digital_signature:
                hint = " (its keyUsage lacks digitalSignature, which gRPC's TLS stack requires of a served leaf)"
        return f"mock agent cannot listen on {self.address}: gRPC refused the server certificate {self.cn!r} and key{hint}"

    async def stop(self, grace: float | None = None) -> None:
        """Stop serving. Idempotent; never blocked by a hung handler."""
        server, self._server = self._server, None
        if server is None:
            return
        if self._stopping is not None:
            self._stopping.set()
        await server.stop(self.grace if grace is None else grace)

    async def restart(
        self,
        *,
        cert_chain_pem: bytes | str | None = None,
        key_pem: bytes | str | None = None,
        client_ca_pem: bytes | str | None = None,
    ) -> int:
        """Stop, optionally take a new identity, and serve again on the same port."""
        if (cert_chain_pem is None) != (key_pem is None):
            raise MockAgentError("restart needs both cert_chain_pem and key_pem, or neither")
        chain = _as_bytes(cert_chain_pem) if cert_chain_pem is not None else self._chain_pem
        key = _as_bytes(key_pem) if key_pem is not None else self._key_pem
        ca = _as_bytes(client_ca_pem) if client_ca_pem is not None else self._client_ca_pem
        self._set_identity(chain, key, ca)  # validate before stopping
        await self.stop()
        return await self.start()

    async def __aenter__(self) -> MockAgent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- records --------------------------------------------------------------

    def count(self, method: str) -> int:
        return self.counts[method]

    def requests_for(self, method: str) -> list[Any]:
        return [req for name, req in self.requests if name == method]

    async def wait_for_calls(self, method: str, n: int = 1) -> None:
        """Wait until `method` has been admitted at least `n` times in total.

        The way to synchronise with the server without sleeping, e.g. to know
        that a hung call has reached its handler. Wrap in asyncio.timeout().
        """
        cond = self._condition()
        async with cond:
            await cond.wait_for(lambda: self.counts[method] >= n)

    def _condition(self) -> asyncio.Condition:
        if self._recorded is None:
            self._recorded = asyncio.Condition()
        return self._recorded

    def reset_records(self) -> None:
        self.requests.clear()
        self.peers.clear()
        self.connections.clear()
        self.counts.clear()
        self.metadata.clear()
        self.refused.clear()

    # -- helpers used by the servicers ----------------------------------------

    def payload_agent_id(self) -> str:
        b = self.behaviour
        return b.claim_agent_id or b.agent_id or self.agent_id

    async def admit(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> None:
        """Record the call and refuse clients that may not call (aborts)."""
        auth = context.auth_context() or {}
        cn_values = auth.get("x509_common_name") or []
        cn = cn_values[0].decode("utf-8", "replace") if cn_values else None
        self.peers.append(cn)
        self.connections.append(context.peer())
        if self.platform_clients_only:
            reason = self._platform_refusal(auth, cn)
            if reason is not None:
                self.refused.append((method, cn, reason))
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)
        self.counts[method] += 1
        self.metadata.append((method, tuple(context.invocation_metadata() or ())))
        if method in AGENT_METHODS:
            self.requests.append((method, request))
        cond = self._condition()
        async with cond:
            cond.notify_all()

    @staticmethod
    def _platform_refusal(auth: dict[str, list[bytes]], cn: str | None) -> str | None:
        pem = (auth.get("x509_pem_cert") or [b""])[0]
        if not pem:
            return "no client certificate"
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:
            return "client certificate does not parse"
        issuer_cn = _cn_of(cert.issuer)
        if _looks_like_tenant_ca(issuer_cn):
            return f"client certificate issued by tenant CA {issuer_cn!r}: agents may not poll agents"
        if cn is not None:
            try:
                parse_edge_cn(cn)
            except InvalidName:
                pass
            else:
                return f"client {cn!r} is an edge component, not a platform service"
        return None

    async def fault(self, method: str, context: grpc.aio.ServicerContext) -> None:
        """Apply delay / hang / error_code if they are in scope for `method`."""
        b = self.behaviour
        if method not in b.fault_methods:
            return
        if b.delay > 0:
            await self.wait_or_stop(context, b.delay)
        if b.hang:
            await self.wait_or_stop(context, None)
        if b.error_code is not None:
            await context.abort(b.error_code, b.error_message)

    async def wait_or_stop(self, context: grpc.aio.ServicerContext, seconds: float | None) -> None:
        """Wait `seconds` (None: forever); abort UNAVAILABLE if the agent stops first."""
        event = self._stopping
        if event is None:  # pragma: no cover - handlers run only while started
            await context.abort(grpc.StatusCode.UNAVAILABLE, "mock agent stopping")
            return
        try:
            await asyncio.wait_for(event.wait(), seconds)
        except TimeoutError:
            return
        await context.abort(grpc.StatusCode.UNAVAILABLE, "mock agent stopping")

    def timestamp(self) -> int:
        b = self.behaviour
        return b.timestamp if b.timestamp is not None else int(time.time())


class _AgentServicer(pb_grpc.AgentServiceServicer):
    def __init__(self, agent: MockAgent) -> None:
        self._agent = agent

    async def GetStatus(self, request: pb.StatusRequest, context: grpc.aio.ServicerContext) -> pb.StatusResponse:
        agent = self._agent
        await agent.admit("GetStatus", request, context)
        await agent.fault("GetStatus", context)
        b = agent.behaviour
        return pb.StatusResponse(
            available=b.available,
            message=_as_bytes(b.message),
            service_name=request.service_name,
            service_type=request.service_type,
            response_time=b.response_time_ns,
            agent_id=agent.payload_agent_id(),
            poller_id=request.poller_id,
        )

    async def GetResults(self, request: pb.ResultsRequest, context: grpc.aio.ServicerContext) -> pb.ResultsResponse:
        agent = self._agent
        await agent.admit("GetResults", request, context)
        await agent.fault("GetResults", context)
        b = agent.behaviour
        if b.auto_advance:
            b.advance_sequence()
        current = b.current_sequence
        has_new = request.last_sequence != current
        response = pb.ResultsResponse(
            available=b.available,
            data=_as_bytes(b.results_data) if has_new else b"",
            service_name=request.service_name,
            service_type=request.service_type,
            response_time=b.response_time_ns,
            agent_id=agent.payload_agent_id(),
            poller_id=request.poller_id,
            timestamp=agent.timestamp(),
            current_sequence=current,
            has_new_data=has_new,
            execution_id=b.execution_id,
            sweep_group_id=b.sweep_group_id,
        )
        if b.sweep_completion is not None:
            response.sweep_completion.CopyFrom(b.sweep_completion)
        return response

    async def StreamResults(
        self, request: pb.ResultsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ResultsChunk]:
        agent = self._agent
        await agent.admit("StreamResults", request, context)
        await agent.fault("StreamResults", context)
        b = agent.behaviour
        if b.auto_advance:
            b.advance_sequence()
        if b.endless_chunk is not None:
            async for chunk in _endless(b.endless_chunk, b.endless_limit, b.current_sequence, agent.timestamp()):
                yield chunk
            return
        pieces = split_document(_as_bytes(b.stream_document), b.stream_chunks)
        total = len(pieces)
        drop, stall, skip = b.drop_after_chunks, b.stall_after_chunks, b.skip_chunk_index
        sequence, stamp = b.current_sequence, agent.timestamp()
        sent = 0
        for index, data in enumerate(pieces):
            if drop is not None and sent >= drop:
                break
            if stall is not None and sent >= stall:
                await agent.wait_or_stop(context, None)
            if index == skip:
                continue
            if sent and b.chunk_delay > 0:
                await agent.wait_or_stop(context, b.chunk_delay)
            final = index == total - 1 and not b.end_without_final and drop is None
            yield pb.ResultsChunk(
                data=data,
                is_final=final,
                chunk_index=index,
                total_chunks=total,
                current_sequence=sequence,
                timestamp=stamp,
            )
            sent += 1
        if drop is not None:
            await context.abort(b.drop_code, f"mock agent dropped the stream after {sent} chunks")
        if stall is not None and sent >= stall:
            await agent.wait_or_stop(context, None)


async def _endless(data: bytes, limit: int | None, sequence: str, stamp: int) -> AsyncIterator[pb.ResultsChunk]:
    index = 0
    while limit is None or index < limit:
        yield pb.ResultsChunk(data=data, chunk_index=index, current_sequence=sequence, timestamp=stamp)
        index += 1


class _HealthServicer(health_pb2_grpc.HealthServicer):
    def __init__(self, agent: MockAgent) -> None:
        self._agent = agent

    def _status(self, service: str) -> int | None:
        if service not in HEALTH_SERVICES:
            return None
        return self._agent.behaviour.health_value()

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        agent = self._agent
        await agent.admit("Check", request, context)
        await agent.fault("Check", context)
        status = self._status(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        agent = self._agent
        await agent.admit("Watch", request, context)
        await agent.fault("Watch", context)
        last = None
        while True:
            status = self._status(request.service)
            if status is None:
                status = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            # Server-side polling of the mutable behaviour; ends when the agent stops.
            await agent.wait_or_stop(context, 0.05)
