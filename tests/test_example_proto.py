"""examples/tenant_service.proto describes what examples/tenant_service.py
serves: protoc (grpcio-tools) compiles it, and the stubs it generates call the
running example service over mTLS, in all four call shapes, as a client in
another language (or grpcurl -proto) would."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct
from grpc_tools import protoc
from test_server_interceptor import ACME, example, service, trust_store  # noqa: F401 - the running example service

PROTO = Path(__file__).resolve().parent.parent / "examples" / "tenant_service.proto"


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("example_stubs")
    include = Path(protoc.__file__).parent / "_proto"  # google/protobuf/struct.proto
    args = ["protoc", f"-I{PROTO.parent}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}", PROTO.name]
    assert protoc.main(args) == 0
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module("tenant_service_pb2"), importlib.import_module("tenant_service_pb2_grpc")
    finally:
        sys.path.remove(str(out))
        for name in ("tenant_service_pb2", "tenant_service_pb2_grpc"):
            sys.modules.pop(name, None)


def test_the_proto_names_every_method_the_example_registers_with_its_call_shape(stubs):
    messages, _ = stubs
    methods = {
        m.name: (m.client_streaming, m.server_streaming) for m in messages.DESCRIPTOR.services_by_name["TenantService"].methods
    }
    assert methods == {
        "Whoami": (False, False),
        "Watch": (False, True),
        "Upload": (True, False),
        "Chat": (True, True),
        "Register": (False, False),
        "AcmeReport": (False, False),
        "Stats": (False, False),
    }
    assert messages.DESCRIPTOR.package + "." + "TenantService" == example.SERVICE


async def test_generated_stubs_call_the_running_example(stubs, pki, service):  # noqa: F811
    _, grpc_stubs = stubs
    stub = grpc_stubs.TenantServiceStub(service.channel(pki.agent(ACME, "agent-001")))

    def doc(message: Struct) -> dict:
        return json_format.MessageToDict(message)

    assert doc(await stub.Whoami(Struct(), timeout=10))["tenant"] == ACME
    assert [doc(m)["i"] for m in [m async for m in stub.Watch(Struct(), timeout=10)]] == [0, 1, 2]

    def texts():
        for text in ("a", "b"):
            yield json_format.ParseDict({"text": text}, Struct())

    assert doc(await stub.Upload(texts(), timeout=10))["received"] == 2
    assert [doc(m)["echo"] async for m in stub.Chat(texts(), timeout=10)] == ["a", "b"]
    with pytest.raises(grpc.aio.AioRpcError) as refused:  # an agent is not a platform admin
        await stub.Stats(Struct(), timeout=10)
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED


def _reflect(port: int, pki, who) -> tuple[list[str], dict[str, tuple[bool, bool]], dict]:
    """What grpcurl does with neither stubs nor the .proto: list, describe, call Whoami (sync gRPC, in a thread)."""
    from google.protobuf import descriptor_pool, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    creds = grpc.ssl_channel_credentials(pki.root_pem, who.key_pem, who.chain_pem)
    options = [("grpc.ssl_target_name_override", "poller-1.serviceradar")]
    with grpc.secure_channel(f"127.0.0.1:{port}", creds, options=options) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = sorted(database.get_services())
        service = descriptor_pool.DescriptorPool(database).FindServiceByName("example.TenantService")
        shapes = {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}
        whoami = service.FindMethodByName("Whoami")
        reply_class = message_factory.GetMessageClass(whoami.output_type)
        call = channel.unary_unary(
            "/example.TenantService/Whoami",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=reply_class.FromString,
        )
        reply = call(message_factory.GetMessageClass(whoami.input_type)(), timeout=10)
        return services, shapes, json_format.MessageToDict(reply)


async def test_the_example_serves_reflection_that_matches_the_proto(stubs, pki, service):  # noqa: F811
    import asyncio

    messages, _ = stubs
    compiled = {
        m.name: (m.client_streaming, m.server_streaming) for m in messages.DESCRIPTOR.services_by_name["TenantService"].methods
    }
    services, shapes, reply = await asyncio.to_thread(_reflect, service.port, pki, pki.agent(ACME, "agent-001"))
    assert services == ["example.TenantService", "grpc.reflection.v1alpha.ServerReflection"]
    assert shapes == compiled  # the descriptors the example builds are the .proto's
    assert reply["tenant"] == ACME
