"""The generated code is current, and the wire interface matches docs/protocol.md."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from poller.proto import monitoring_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent


# The generators' own version stamps: a newer grpcio-tools patch release stamps
# its version, nothing else changes. The committed stamp is the lower bound the
# code asks of the runtime, so an older one is not stale.
_STAMPS = re.compile(
    rb"^GRPC_GENERATED_VERSION = '[^']*'$|^# Protobuf Python Version: .*$"
    rb"|_runtime_version\.ValidateProtobufRuntimeVersion\([^)]*\)",
    re.M,
)


def _without_stamps(code: bytes) -> bytes:
    return _STAMPS.sub(b"<stamp>", code)


def test_committed_generated_code_is_not_stale(tmp_path):
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpcio-tools is not installed")
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gen_protos
    finally:
        sys.path.pop(0)
    generated = gen_protos.generate(tmp_path)
    assert generated, "nothing was generated"
    for path in generated:
        committed = ROOT / path.relative_to(tmp_path)
        assert committed.exists(), f"{committed} is missing: run `make protos`"
        fresh, kept = _without_stamps(path.read_bytes()), _without_stamps(committed.read_bytes())
        assert kept == fresh, f"{committed} is stale: run `make protos`"


def test_a_changed_message_is_stale_whatever_the_stamps():
    # The stamps are ignored, the code is not.
    code = b"GRPC_GENERATED_VERSION = '1.85.1'\nclass A: pass\n"
    assert _without_stamps(code) == _without_stamps(code.replace(b"1.85.1", b"1.85.4"))
    assert _without_stamps(code) != _without_stamps(code.replace(b"class A", b"class B"))


def test_service_paths():
    service = pb.DESCRIPTOR.services_by_name["AgentService"]
    assert service.full_name == "monitoring.AgentService"
    methods = {m.name: (m.input_type.name, m.output_type.name, m.server_streaming) for m in service.methods}
    assert methods == {
        "GetStatus": ("StatusRequest", "StatusResponse", False),
        "GetResults": ("ResultsRequest", "ResultsResponse", False),
        "StreamResults": ("ResultsRequest", "ResultsChunk", True),
    }


def test_gateway_service_paths():
    service = pb.DESCRIPTOR.services_by_name["AgentGatewayService"]
    assert service.full_name == "monitoring.AgentGatewayService"
    methods = {m.name: (m.input_type.name, m.output_type.name, m.client_streaming, m.server_streaming) for m in service.methods}
    assert methods == {
        "Hello": ("AgentHelloRequest", "AgentHelloResponse", False, False),
        "GetConfig": ("AgentConfigRequest", "AgentConfigResponse", False, False),
        "PushStatus": ("GatewayStatusRequest", "GatewayStatusResponse", False, False),
        "StreamStatus": ("GatewayStatusChunk", "GatewayStatusResponse", True, False),
        "ControlStream": ("ControlStreamRequest", "ControlStreamResponse", True, True),
    }


T = {"string": 9, "bool": 8, "bytes": 12, "int32": 5, "int64": 3, "message": 11, "enum": 14}

WIRE = {
    "StatusRequest": [(1, "string"), (2, "string"), (3, "string"), (4, "string"), (5, "string"), (6, "int32")],
    "StatusResponse": [(1, "bool"), (2, "bytes"), (3, "string"), (4, "string"), (5, "int64"), (6, "string"), (7, "string")],
    "ResultsRequest": [(1, "string"), (2, "string"), (3, "string"), (4, "string"), (5, "string"), (6, "string"), (7, "message")],
    "ResultsResponse": [
        (1, "bool"),
        (2, "bytes"),
        (3, "string"),
        (4, "string"),
        (5, "int64"),
        (6, "string"),
        (7, "string"),
        (8, "int64"),
        (9, "string"),
        (10, "bool"),
        (11, "message"),
        (12, "string"),
        (13, "string"),
    ],
    "ResultsChunk": [(1, "bytes"), (2, "bool"), (3, "int32"), (4, "int32"), (5, "string"), (6, "int64")],
    "SweepCompletionStatus": [
        (1, "enum"),
        (2, "int64"),
        (3, "string"),
        (4, "int32"),
        (5, "int32"),
        (6, "string"),
        (7, "string"),
        (8, "string"),
    ],
    # The push side (docs/protocol.md): cac9ec1af's fields, plus HEAD's additions. The
    # tenant fields HEAD reserves (8/9, 11/12) stay parseable for cac9ec1af agents.
    "AgentHelloRequest": [
        *((n, "string") for n in range(1, 9)),  # 3: repeated string capabilities
        (9, "message"),  # map<string, string> labels
        (10, "string"),
    ],
    "AgentHelloResponse": [
        (1, "bool"),
        (2, "string"),
        (3, "string"),
        (4, "string"),
        (5, "int64"),
        (6, "int32"),
        (7, "bool"),
        (8, "string"),
        (9, "string"),
    ],
    "AgentConfigRequest": [(1, "string"), (2, "string")],
    "AgentConfigResponse": [(1, "bool"), (2, "string"), (3, "int64"), (4, "int32"), (5, "int32"), (6, "message"), (7, "bytes")],
    "AgentCheckConfig": [
        (1, "string"),
        (2, "string"),
        (3, "string"),
        (4, "bool"),
        (5, "int32"),
        (6, "int32"),
        (7, "string"),
        (8, "int32"),
        (9, "string"),
        (10, "string"),
        (11, "message"),
    ],
    "GatewayStatusRequest": [
        (1, "message"),
        (2, "string"),
        (3, "string"),
        (4, "int64"),
        (5, "string"),
        (6, "string"),
        (7, "string"),
        (8, "string"),
        (9, "string"),
        (10, "string"),
        (11, "string"),
        (12, "string"),
        (13, "string"),
        (14, "string"),
    ],
    "GatewayStatusResponse": [(1, "bool")],
    "GatewayStatusChunk": [
        (1, "message"),
        (2, "string"),
        (3, "string"),
        (4, "int64"),
        (5, "string"),
        (6, "string"),
        (7, "bool"),
        (8, "int32"),
        (9, "int32"),
        (10, "string"),
        (11, "string"),
        (12, "string"),
        (13, "string"),
        (14, "string"),
        (15, "string"),
        (16, "string"),
        (17, "string"),
    ],
    "GatewayServiceStatus": [
        (1, "string"),
        (2, "bool"),
        (3, "bytes"),
        (4, "string"),
        (5, "int64"),
        (6, "string"),
        (7, "string"),
        (8, "string"),
        (9, "string"),
        (10, "string"),
        (11, "string"),
        (12, "string"),
    ],
    "ControlStreamHello": [*((n, "string") for n in range(1, 9)), (9, "message"), (10, "string")],
    "CommandRequest": [(1, "string"), (2, "string"), (3, "bytes"), (4, "int64"), (5, "int64")],
    "CommandAck": [(1, "string"), (2, "string"), (3, "int64"), (4, "string")],
    "CommandProgress": [(1, "string"), (2, "string"), (3, "int32"), (4, "string"), (5, "int64"), (6, "bytes")],
    "CommandResult": [(1, "string"), (2, "string"), (3, "bool"), (4, "string"), (5, "bytes"), (6, "int64")],
    "ConfigAck": [(1, "string"), (2, "int64")],
    "ControlStreamRequest": [(1, "message"), (2, "message"), (3, "message"), (4, "message"), (5, "message")],
    "ControlStreamResponse": [(1, "message"), (2, "message")],
}


def test_repeated_and_oneof_fields():
    def repeated(message, number):
        return pb.DESCRIPTOR.message_types_by_name[message].fields_by_number[number].is_repeated

    assert repeated("AgentHelloRequest", 3) and repeated("AgentConfigResponse", 6)
    assert repeated("GatewayStatusRequest", 1) and repeated("GatewayStatusChunk", 1)
    assert pb.ControlStreamRequest.DESCRIPTOR.oneofs_by_name["payload"].fields[0].message_type.name == "ControlStreamHello"
    assert pb.ControlStreamResponse.DESCRIPTOR.fields_by_number[2].message_type.name == "AgentConfigResponse"


def test_head_config_fields_are_skipped_as_unknown():
    """A HEAD gateway's sysmon/snmp/plugin config (8, 9, 11) parses: unknown fields are skipped."""
    # field 8, length-delimited, 2 bytes (an empty nested message would do; give it a bool)
    wire = pb.AgentConfigResponse(config_version="v1").SerializeToString() + bytes([8 << 3 | 2, 2, 8, 1])
    assert pb.AgentConfigResponse.FromString(wire).config_version == "v1"


@pytest.mark.parametrize("message", sorted(WIRE))
def test_field_numbers_and_types(message):
    fields = sorted((f.number, f.type) for f in pb.DESCRIPTOR.message_types_by_name[message].fields)
    assert fields == [(n, T[t]) for n, t in WIRE[message]]


def test_sweep_status_enum():
    enum = pb.SweepCompletionStatus.DESCRIPTOR.enum_types_by_name["Status"]
    assert {v.name: v.number for v in enum.values} == {
        "UNKNOWN": 0,
        "NOT_STARTED": 1,
        "IN_PROGRESS": 2,
        "COMPLETED": 3,
        "FAILED": 4,
    }
