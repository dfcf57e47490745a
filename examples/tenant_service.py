"""A control-plane service that edge components and admins connect to over mTLS,
guarded by poller.server.TenantServerInterceptor.

Every method answers with the proven caller (a `google.protobuf.Struct`, JSON
in grpcurl), so what the interceptor bound is visible from the client side.
`examples/tenant_service.proto` describes the service; it is registered with
generic handlers (no generated code) and shows the four call shapes and
method-level policies:

    /example.TenantService/Whoami      unary-unary    any proven tenant identity
    /example.TenantService/Watch       unary-stream   any proven tenant identity
    /example.TenantService/Upload      stream-unary   any proven tenant identity
    /example.TenantService/Chat        stream-stream  any proven tenant identity
    /example.TenantService/Register    unary-unary    gateways only
    /example.TenantService/AcmeReport  unary-unary    acme-corp, or a platform admin (audited)
    /example.TenantService/Stats       unary-unary    platform admins only

Run it against a certs directory (e.g. `make certs`):

    python examples/tenant_service.py --certs certs --listen 127.0.0.1:50061

It serves with the certs directory's poller.pem (leaf + platform CA) unless
--cert/--key say otherwise, and logs JSON audit lines to stderr. It serves
gRPC reflection too, so grpcurl needs neither stubs nor the .proto (`-proto
examples/tenant_service.proto` works as well); with an agent's certificate
from the same certs directory:

    grpcurl -cacert certs/root.pem \
        -cert certs/tenants/acme-corp/components/agent-001-partition-1-chain.pem \
        -key certs/tenants/acme-corp/components/agent-001-partition-1-key.pem -servername poller-1.serviceradar \
        -d '{}' 127.0.0.1:50061 example.TenantService/Whoami
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, struct_pb2
from google.protobuf.struct_pb2 import Struct
from grpc_reflection.v1alpha import reflection

from poller import any_of, component_type_in, current_tenant, platform_admin, same_tenant
from poller.logs import configure_logging
from poller.server import TenantServerInterceptor, current_caller, server_credentials
from poller.trust import TrustStore

SERVICE = "example.TenantService"


def method(name: str) -> str:
    return f"/{SERVICE}/{name}"


POLICIES = {
    method("Register"): component_type_in({"gateway"}),
    method("AcmeReport"): any_of(same_tenant("acme-corp"), platform_admin()),
    method("Stats"): platform_admin(),
}


def whoami() -> dict[str, Any]:
    """The proven caller as the handler sees it (current_caller / current_tenant)."""
    caller = current_caller()
    if caller.platform is not None:
        return {"admin": caller.platform.cn, "tenant": caller.tenant}
    ctx = current_tenant()
    return {"tenant": ctx.tenant, "component": ctx.component_id, "partition": ctx.partition_id, "type": ctx.component_type}


def encode(doc: dict[str, Any]) -> bytes:
    """A reply on the wire: the document as a google.protobuf.Struct (tenant_service.proto)."""
    return json_format.ParseDict(doc, Struct()).SerializeToString()


def decode(data: bytes) -> dict[str, Any]:
    """A request or reply from the wire (a Struct) as a dict; numbers come back as floats."""
    return json_format.MessageToDict(Struct.FromString(data))


async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    # A task started by the handler sees the same proven caller.
    return encode(await asyncio.create_task(_in_task()))


async def _in_task() -> dict[str, Any]:
    return whoami()


async def watch(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for i in range(3):
        yield encode({**whoami(), "i": i})


async def upload(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
    count = 0
    async for _ in requests:
        count += 1
    return encode({**whoami(), "received": count})


async def chat(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    async for request in requests:
        yield encode({**whoami(), "echo": decode(request).get("text", "")})


# Each method: its function and call shape (client streaming, server streaming), as in tenant_service.proto.
METHODS: dict[str, tuple[Any, bool, bool]] = {
    "Whoami": (unary, False, False),
    "Watch": (watch, False, True),
    "Upload": (upload, True, False),
    "Chat": (chat, True, True),
    "Register": (unary, False, False),
    "AcmeReport": (unary, False, False),
    "Stats": (unary, False, False),
}
_HANDLER_OF_SHAPE = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def handlers() -> grpc.GenericRpcHandler:
    same = {"request_deserializer": None, "response_serializer": None}  # bytes in and out: encode()/decode()
    return grpc.method_handlers_generic_handler(
        SERVICE, {name: _HANDLER_OF_SHAPE[(cs, ss)](fn, **same) for name, (fn, cs, ss) in METHODS.items()}
    )


def descriptors() -> descriptor_pool.DescriptorPool:
    """tenant_service.proto as descriptors, built here (no protoc at run time), for server reflection."""
    file = descriptor_pb2.FileDescriptorProto(
        name="tenant_service.proto", package="example", syntax="proto3", dependency=["google/protobuf/struct.proto"]
    )
    service = file.service.add(name=SERVICE.split(".")[1])
    for name, (_, client_streaming, server_streaming) in METHODS.items():
        service.method.add(
            name=name,
            input_type=".google.protobuf.Struct",
            output_type=".google.protobuf.Struct",
            client_streaming=client_streaming,
            server_streaming=server_streaming,
        )
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(struct_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(file)
    return pool


async def start_service(
    trust: TrustStore, chain_pem: bytes, key_pem: bytes, listen: str = "127.0.0.1:0"
) -> tuple[grpc.aio.Server, int]:
    """Start the example service; returns the server and the bound port."""
    server = grpc.aio.server(interceptors=[TenantServerInterceptor(trust, policies=POLICIES)])
    server.add_generic_rpc_handlers((handlers(),))
    # Server reflection: `grpcurl ... list` and calls without even the .proto (a proven identity still needed).
    reflection.enable_server_reflection((SERVICE, reflection.SERVICE_NAME), server, pool=descriptors())
    port = server.add_secure_port(listen, server_credentials(trust, chain_pem, key_pem))
    await server.start()
    return server, port


async def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--certs", type=Path, required=True, help="certs directory (root, platform CA, tenant CAs, CRLs)")
    parser.add_argument("--listen", default="127.0.0.1:50061")
    parser.add_argument("--cert", type=Path, help="server certificate chain (default: <certs>/poller-chain.pem)")
    parser.add_argument("--key", type=Path, help="server key (default: <certs>/poller-key.pem)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    configure_logging("json")
    trust = TrustStore(args.certs, require_client=False)
    chain = (args.cert or args.certs / "poller-chain.pem").read_bytes()
    key = (args.key or args.certs / "poller-key.pem").read_bytes()
    server, port = await start_service(trust, chain, key, args.listen)
    print(f"{SERVICE} listening on port {port}", flush=True)  # noqa: T201 - the program's one line of output
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, trust.reload)  # new CRLs and tenant CAs apply to the next call
    await stop.wait()
    await server.stop(2)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
