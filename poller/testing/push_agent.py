"""PushAgent: a push agent of the project's own, for tests and benches.

A real grpc.aio client over mTLS that speaks AgentGatewayService as
ServiceRadar's Go push agent does (Hello, GetConfig, PushStatus every
interval, StreamStatus for large payloads, a HEAD agent's ControlStream),
and can misbehave on purpose:

- lie about its agent_id or partition (`agent_id=`, `partition=`);
- claim another tenant (`claim_tenant=`: fills tenant_id / tenant_slug, as
  cac9ec1af agents do with what they believe their tenant is);
- huge payloads (`huge_status(size)`), endless streams (`endless_stream()`);
- slow pushes (`delay=` before every push and every chunk);
- disconnects (`disconnect()` mid-call, `abandon_stream()`);
- keepalive pings (`keepalive=` seconds: ServiceRadar's agent pings every 120 s
  while a call is open; a much shorter one is a client pinging too often);
- StreamStatus chunking, in order or not (`stream(..., order=, final=)`).

>>> agent = PushAgent.for_cert(address, forged, ca_pem=pki.root_pem, server_name="gateway.serviceradar")  # doctest: +SKIP
>>> hello = await agent.hello()  # doctest: +SKIP
>>> config = await agent.get_config()  # doctest: +SKIP
>>> await agent.push([agent.status("ssh")])  # doctest: +SKIP
>>> await agent.close()  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

import grpc

from poller.address import split_host_port
from poller.proto import monitoring_pb2 as pb
from poller.proto import monitoring_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from poller.testing.forge import ForgedCert

__all__ = ["ControlSession", "PushAgent", "refusal_of"]

REASON_KEY = "x-serviceradar-reason"


LOST_STATUS_TRIES = 5


def _status_lost_to_a_write(err: grpc.aio.AioRpcError) -> bool:
    """grpc.aio's own INTERNAL for a write that failed as the call ended, in place of the server's status."""
    return bool(err.code() == grpc.StatusCode.INTERNAL and err.details() == "Internal error from Core")


def refusal_of(err: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str | None]:
    """(status code, reason code from the trailing metadata) of a failed call."""
    for key, value in err.trailing_metadata() or ():
        if key == REASON_KEY:
            return err.code(), str(value)
    return err.code(), None


@dataclass
class ControlSession:
    """An open ControlStream: `ended()` waits for its end (code, reason); `close()` ends it from our side."""

    call: grpc.aio.StreamStreamCall
    outbox: asyncio.Queue[pb.ControlStreamRequest | None]

    async def ended(self) -> tuple[grpc.StatusCode, str | None]:
        try:
            while await self.call.read() is not grpc.aio.EOF:
                pass
        except grpc.aio.AioRpcError as err:
            return refusal_of(err)
        code = await self.call.code()
        reasons = [str(v) for k, v in await self.call.trailing_metadata() or () if k == REASON_KEY]
        return code, reasons[0] if reasons else None

    async def opened(self) -> None:
        """Wait until the gateway holds the stream (it sends headers after the hello passed)."""
        await self.call.initial_metadata()

    async def send(self, message: pb.ControlStreamRequest) -> None:
        await self.outbox.put(message)

    async def close(self) -> None:
        await self.outbox.put(None)


class PushAgent:
    """One push agent: its certificate, what it says about itself, how it behaves."""

    def __init__(
        self,
        address: str,
        *,
        cert_chain_pem: bytes,
        key_pem: bytes,
        ca_pem: bytes,
        server_name: str,
        agent_id: str,
        partition: str = "",
        claim_tenant: str | None = None,
        delay: float = 0.0,
        version: str = "poller-testing",
        timeout: float = 10.0,
        keepalive: float | None = None,
    ) -> None:
        split_host_port(address)
        self.address = address
        self.agent_id = agent_id
        self.partition = partition
        self.claim_tenant = claim_tenant
        self.delay = delay
        self.version = version
        self.timeout = timeout
        self.keepalive = keepalive
        self.config: pb.AgentConfigResponse | None = None
        self.interval = 30.0
        self._credentials = grpc.ssl_channel_credentials(
            root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_chain_pem
        )
        self._server_name = server_name
        self._channel = self._open()
        self._tasks: set[asyncio.Task[object]] = set()

    @classmethod
    def for_cert(cls, address: str, forged: ForgedCert, *, ca_pem: bytes, server_name: str, **options: object) -> PushAgent:
        """A push agent presenting `forged`; agent_id and partition default to its CN's."""
        labels = (forged.cn or "").split(".")
        options.setdefault("agent_id", labels[0] if labels else "")
        options.setdefault("partition", labels[1] if len(labels) > 1 else "")
        return cls(
            address,
            cert_chain_pem=forged.chain_pem,
            key_pem=forged.key_pem,
            ca_pem=ca_pem,
            server_name=server_name,
            **options,  # type: ignore[arg-type]
        )

    def _open(self) -> grpc.aio.Channel:
        options: list[tuple[str, str | int]] = [
            ("grpc.ssl_target_name_override", self._server_name),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            # A connection of its own, as each real agent process has (grpc would
            # otherwise share one between agents of one process that look alike).
            ("grpc.use_local_subchannel_pool", 1),
        ]
        if self.keepalive is not None:  # as grpc-go's client keepalive: only with a call open, no cap on pings
            options += [
                ("grpc.keepalive_time_ms", max(1, int(self.keepalive * 1000))),
                ("grpc.keepalive_timeout_ms", 20_000),
                ("grpc.keepalive_permit_without_calls", 0),
                ("grpc.http2.max_pings_without_data", 0),
            ]
        return grpc.aio.secure_channel(self.address, self._credentials, options=options)

    @property
    def stub(self) -> pb_grpc.AgentGatewayServiceStub:
        return pb_grpc.AgentGatewayServiceStub(self._channel)

    @property
    def channel(self) -> grpc.aio.Channel:
        """The agent's mTLS channel, for calls the stub does not make (another shape, raw bytes)."""
        return self._channel

    async def __aenter__(self) -> PushAgent:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc_val: BaseException | None, exc_tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self._channel.close()

    async def disconnect(self) -> None:
        """Drop the connection at once (calls in flight fail on both sides); later calls reconnect."""
        old, self._channel = self._channel, self._open()
        await old.close(grace=None)

    # -- what the agent says ------------------------------------------------------------

    def status(
        self,
        name: str,
        *,
        service_type: str = "port",
        available: bool = True,
        message: bytes = b'{"status":"ok"}',
        source: str = "status",
        response_time: int = 1000,
    ) -> pb.GatewayServiceStatus:
        """One status as the Go agent fills it (agent_id, partition, tenant claims its own)."""
        return pb.GatewayServiceStatus(
            service_name=name,
            available=available,
            message=message,
            service_type=service_type,
            response_time=response_time,
            agent_id=self.agent_id,
            partition=self.partition,
            source=source,
            tenant_id=self.claim_tenant or "",
            tenant_slug=self.claim_tenant or "",
        )

    def huge_status(self, size: int, *, name: str = "huge", source: str = "results") -> pb.GatewayServiceStatus:
        """A status whose message is `size` bytes (valid JSON)."""
        filler = b"x" * max(0, size - 8)
        return self.status(name, service_type="sweep", message=b'{"x":"' + filler + b'"}', source=source)

    # -- the calls -----------------------------------------------------------------------

    async def hello(self, *, config_version: str = "") -> pb.AgentHelloResponse:
        reply: pb.AgentHelloResponse = await self.stub.Hello(
            pb.AgentHelloRequest(
                agent_id=self.agent_id,
                version=self.version,
                capabilities=["icmp", "port", "grpc", "process"],
                hostname="push-agent",
                os="linux",
                arch="amd64",
                partition=self.partition,
                config_version=config_version,
            ),
            timeout=self.timeout,
        )
        if reply.heartbeat_interval_sec > 0:
            self.interval = float(reply.heartbeat_interval_sec)
        return reply

    async def get_config(self, *, config_version: str = "") -> pb.AgentConfigResponse:
        reply: pb.AgentConfigResponse = await self.stub.GetConfig(
            pb.AgentConfigRequest(agent_id=self.agent_id, config_version=config_version), timeout=self.timeout
        )
        if not reply.not_modified:
            self.config = reply
        return reply

    async def push(
        self, statuses: Iterable[pb.GatewayServiceStatus], *, timestamp: int | None = None
    ) -> pb.GatewayStatusResponse:
        if self.delay:
            await asyncio.sleep(self.delay)
        reply: pb.GatewayStatusResponse = await self.stub.PushStatus(
            pb.GatewayStatusRequest(
                services=list(statuses),
                agent_id=self.agent_id,
                timestamp=time.time_ns() if timestamp is None else timestamp,
                partition=self.partition,
                source_ip="127.0.0.1",
                version=self.version,
                tenant_id=self.claim_tenant or "",
                tenant_slug=self.claim_tenant or "",
            ),
            timeout=self.timeout,
        )
        return reply

    def chunks(
        self, statuses: Sequence[pb.GatewayServiceStatus], *, per_chunk: int = 100, timestamp: int | None = None
    ) -> list[pb.GatewayStatusChunk]:
        """The statuses as StreamStatus chunks, in order, the last one final."""
        stamp = time.time_ns() if timestamp is None else timestamp
        groups = [statuses[i : i + per_chunk] for i in range(0, len(statuses), per_chunk)] or [[]]
        return [
            pb.GatewayStatusChunk(
                services=list(group),
                agent_id=self.agent_id,
                timestamp=stamp,
                partition=self.partition,
                is_final=i == len(groups) - 1,
                chunk_index=i,
                total_chunks=len(groups),
                tenant_id=self.claim_tenant or "",
                tenant_slug=self.claim_tenant or "",
            )
            for i, group in enumerate(groups)
        ]

    async def stream(
        self,
        statuses: Sequence[pb.GatewayServiceStatus] = (),
        *,
        per_chunk: int = 100,
        chunks: Sequence[pb.GatewayStatusChunk] | None = None,
        order: Sequence[int] | None = None,
        final: bool = True,
    ) -> pb.GatewayStatusResponse:
        """StreamStatus: `chunks` (default: `statuses` cut in `per_chunk`), sent in
        `order` (indices into the chunks; leave some out for missing ones);
        final=False leaves is_final off everywhere (then the stream just ends)."""
        parts = list(chunks if chunks is not None else self.chunks(statuses, per_chunk=per_chunk))
        if not final:
            for part in parts:
                part.is_final = False
        sequence = [parts[i] for i in order] if order is not None else parts

        async def send() -> AsyncIterator[pb.GatewayStatusChunk]:
            for part in sequence:
                if self.delay:
                    await asyncio.sleep(self.delay)
                yield part

        reply: pb.GatewayStatusResponse = await self.stub.StreamStatus(send(), timeout=self.timeout)
        return reply

    async def endless_stream(self, *, chunk_bytes: int = 64 * 1024, services_per_chunk: int = 1) -> grpc.aio.AioRpcError:
        """StreamStatus that never sends is_final, until the gateway refuses it; the refusal.

        A grpc.aio client whose write crosses the server's status reports its own
        INTERNAL "Internal error from Core" instead (grpc/grpc#36066), and an endless
        writer is always writing. Such a stream delivers nothing, so it is offered
        again (at most LOST_STATUS_TRIES times) until the gateway's answer arrives.
        """
        for _ in range(LOST_STATUS_TRIES):
            err = await self._one_endless_stream(chunk_bytes, services_per_chunk)
            if not _status_lost_to_a_write(err):
                break
        return err

    async def _one_endless_stream(self, chunk_bytes: int, services_per_chunk: int) -> grpc.aio.AioRpcError:
        async def forever() -> AsyncIterator[pb.GatewayStatusChunk]:
            i = 0
            while True:
                if self.delay:
                    await asyncio.sleep(self.delay)
                yield pb.GatewayStatusChunk(
                    services=[self.huge_status(chunk_bytes, name=f"part-{i}-{j}") for j in range(services_per_chunk)],
                    agent_id=self.agent_id,
                    timestamp=time.time_ns(),
                    partition=self.partition,
                    chunk_index=i,
                    tenant_id=self.claim_tenant or "",
                    tenant_slug=self.claim_tenant or "",
                )
                i += 1

        try:
            await self.stub.StreamStatus(forever(), timeout=max(self.timeout, 60.0))
        except grpc.aio.AioRpcError as err:
            return err
        raise AssertionError("the gateway accepted an endless stream")

    async def abandon_stream(self, chunks: int = 1) -> None:
        """Send `chunks` chunks of a StreamStatus, then drop the connection without is_final."""
        sent = asyncio.Event()

        async def some() -> AsyncIterator[pb.GatewayStatusChunk]:
            for part in self.chunks([self.status(f"s{i}") for i in range(chunks)], per_chunk=1)[:chunks]:
                part.is_final = False
                yield part
            sent.set()
            await asyncio.Event().wait()  # never finish from our side

        call = self.stub.StreamStatus(some(), timeout=self.timeout)
        task = asyncio.ensure_future(call)
        await sent.wait()
        await self.disconnect()
        try:
            await task
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass

    def control_stream(self, *, hello_agent_id: str | None = None) -> ControlSession:
        """Open a HEAD agent's ControlStream (its hello first) and keep it open."""
        outbox: asyncio.Queue[pb.ControlStreamRequest | None] = asyncio.Queue()
        outbox.put_nowait(
            pb.ControlStreamRequest(
                hello=pb.ControlStreamHello(
                    agent_id=self.agent_id if hello_agent_id is None else hello_agent_id,
                    partition=self.partition,
                    version=self.version,
                )
            )
        )

        async def requests() -> AsyncIterator[pb.ControlStreamRequest]:
            while (message := await outbox.get()) is not None:
                yield message

        return ControlSession(self.stub.ControlStream(requests()), outbox)

    # -- as the real agent runs ------------------------------------------------------------

    async def run_checks(self) -> list[pb.GatewayServiceStatus]:
        """One status per check of the last config: `port` checks really connect, others are reported up."""
        statuses = []
        for check in self.config.checks if self.config is not None else ():
            available, message = True, b'{"status":"ok"}'
            if check.check_type == "port":
                started = time.perf_counter_ns()
                try:
                    host, port = split_host_port(check.target)
                    _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=2.0)
                    writer.close()
                except (OSError, ValueError, TimeoutError):
                    available, message = False, b'{"status":"closed"}'
                statuses.append(
                    self.status(
                        check.name,
                        service_type=check.check_type,
                        available=available,
                        message=message,
                        response_time=time.perf_counter_ns() - started,
                    )
                )
            else:
                statuses.append(self.status(check.name, service_type=check.check_type, message=message))
        return statuses

    async def run(self, pushes: int) -> list[pb.GatewayStatusResponse]:
        """Hello, GetConfig, then `pushes` PushStatus calls every interval (the real agent's loop)."""
        hello = await self.hello()
        if hello.config_outdated or self.config is None:
            await self.get_config()
        replies = []
        for i in range(pushes):
            if i:
                await asyncio.sleep(self.interval)
            replies.append(await self.push(await self.run_checks()))
        return replies
