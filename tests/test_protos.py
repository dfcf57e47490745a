"""The generated code is current, and the wire interface matches PROTOCOL.md."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from poller.proto import monitoring_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent


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
        assert committed.read_bytes() == path.read_bytes(), f"{committed} is stale: run `make protos`"


def test_service_paths():
    service = pb.DESCRIPTOR.services_by_name["AgentService"]
    assert service.full_name == "monitoring.AgentService"
    methods = {m.name: (m.input_type.name, m.output_type.name, m.server_streaming) for m in service.methods}
    assert methods == {
        "GetStatus": ("StatusRequest", "StatusResponse", False),
        "GetResults": ("ResultsRequest", "ResultsResponse", False),
        "StreamResults": ("ResultsRequest", "ResultsChunk", True),
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
}


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
