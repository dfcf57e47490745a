"""docs/protocol.md (the wire facts the README and protos/monitoring.proto cite)
and the compiled .proto agree: every documented field has its number, name and
type in the generated descriptors, and every documented rpc exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from google.protobuf.descriptor import FieldDescriptor

from poller.proto import monitoring_pb2 as pb

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
_SCALARS = {
    "string": FieldDescriptor.TYPE_STRING,
    "bool": FieldDescriptor.TYPE_BOOL,
    "bytes": FieldDescriptor.TYPE_BYTES,
    "int32": FieldDescriptor.TYPE_INT32,
    "int64": FieldDescriptor.TYPE_INT64,
}


def documented_fields(text: str) -> dict[str, dict[int, tuple[str, str]]]:
    """{message: {number: (type, name)}} from the field tables (a heading line, then `- N: type name`)."""
    tables: dict[str, dict[int, tuple[str, str]]] = {}
    current: str | None = None
    for line in text.splitlines():
        if heading := re.fullmatch(r"([A-Z]\w+)( \(.*\))?", line):
            current = heading.group(1)
            tables[current] = {}
        elif current and (field := re.match(r"- (\d+): ((?:repeated )?(?:map<[^>]+>|\w+)) (\w+)", line)):
            tables[current][int(field.group(1))] = (field.group(2), field.group(3))
        elif not line.startswith("- "):
            current = None
    return {name: fields for name, fields in tables.items() if fields}


def _type_of(field: FieldDescriptor) -> str:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key, value = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
        return f"map<{_scalar(key)}, {_scalar(value)}>"
    if field.message_type is not None:
        base = field.message_type.name
    elif field.enum_type is not None:
        base = field.enum_type.name
    else:
        base = _scalar(field)
    return f"repeated {base}" if field.is_repeated else base


def _scalar(field: FieldDescriptor) -> str:
    return next(name for name, kind in _SCALARS.items() if kind == field.type)


TABLES = documented_fields(DOC.read_text())


def test_the_doc_has_the_tables_it_cites():
    assert {"StatusRequest", "ResultsResponse", "ResultsChunk", "SweepCompletionStatus", "AgentHelloRequest"} <= set(TABLES)
    assert TABLES["ResultsChunk"][2] == ("bool", "is_final")


@pytest.mark.parametrize("message", sorted(TABLES))
def test_every_documented_field_is_in_the_compiled_proto(message):
    descriptor = pb.DESCRIPTOR.message_types_by_name[message]
    compiled = {f.number: (_type_of(f), f.name) for f in descriptor.fields}
    for number, (kind, name) in TABLES[message].items():
        assert compiled.get(number) == (kind, name), f"{message} field {number}: doc {kind} {name}, proto {compiled.get(number)}"


def test_every_documented_rpc_is_in_the_compiled_proto():
    rpcs = set(re.findall(r"`(\w+)\((?:stream )?(\w+)\) returns \((?:stream )?(\w+)\)`", DOC.read_text()))
    assert len(rpcs) >= 7
    methods = {
        (m.name, m.input_type.name, m.output_type.name)
        for service in pb.DESCRIPTOR.services_by_name.values()
        for m in service.methods
    }
    assert rpcs <= methods, sorted(rpcs - methods)
