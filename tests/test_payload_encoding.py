"""What counts as a JSON payload, and what the poller writes (issue 18 items 3a, 7, 8).

A payload is JSON only as strict UTF-8 JSON (RFC 8259 §8.1) without NaN or
±Infinity, nested at most MAX_DEPTH; anything else goes out as `data_b64`.
The tenant-claim check runs on the parsed document, and also on what a
lenient parser would make of a non-JSON payload (UTF-16/32), so no encoding
smuggles a claim of another tenant. Keys are read NFKC + case folded.

The end-to-end cases run a real PollerDaemon cycle against a real mock agent
over mTLS into the real file sink, then read its files with a strict parser.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from poller.delivery.payload import (
    MAX_DEPTH,
    MAX_NODES,
    NOT_JSON,
    _deeper_than,
    decode_payload,
    payload_cost_refusal,
    payload_refusal,
)
from poller.delivery.registry import Delivery, HandlerRegistry
from poller.identity.reasons import Reason
from poller.metrics import PollerMetrics
from poller.nats.messages import encode
from poller.policy import same_tenant
from poller.testing.mock_agent import AgentBehaviour
from poller.testing.results import sample_result

ACME, XYZ = "acme-corp", "xyz-inc"
CLAIM = {"tenant": XYZ, "status": "ok"}


def strict_loads(text: str | bytes) -> object:
    """As Go's encoding/json or JavaScript's JSON.parse would: no NaN / Infinity."""

    def refuse(name: str) -> object:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


@pytest.mark.parametrize(
    "payload",
    [
        json.dumps(CLAIM).encode("utf-16"),
        json.dumps(CLAIM).encode("utf-16-le"),
        json.dumps(CLAIM).encode("utf-32"),
        json.dumps(CLAIM).encode("utf-32-be"),
        b"\xef\xbb\xbf" + json.dumps(CLAIM).encode(),  # a UTF-8 BOM (RFC 8259: MUST NOT)
        b'{"name": "\xff"}',  # invalid UTF-8
        b'{"latency": NaN}',
        b'{"latency": Infinity}',
        b'{"latency": -Infinity}',
        b'{"latency": 1e400}',  # reads as inf
        deep(100_000),
        deep(MAX_DEPTH + 1),
    ],
    ids=["utf16", "utf16le", "utf32", "utf32be", "utf8-bom", "bad-utf8", "nan", "inf", "-inf", "1e400", "deep", "max+1"],
)
def test_only_strict_utf8_json_is_json(payload):
    assert decode_payload(payload) is NOT_JSON
    result = sample_result(payload=payload)
    assert result.payload_json() is None
    doc = result.to_json()
    assert "data" not in doc and doc["data_b64"]
    strict_loads(encode(doc))  # what NATS gets parses strictly


def test_strict_json_still_is_json():
    assert decode_payload(deep(MAX_DEPTH)) == decode_payload(deep(MAX_DEPTH))  # at the limit: JSON
    assert decode_payload('{"name": "café", "n": 1.5, "big": 1e300}'.encode()) == {"name": "café", "n": 1.5, "big": 1e300}
    assert sample_result(payload=b"null").to_json()["data"] is None


def _refusal(payload: bytes) -> str | None:
    result = sample_result(payload=payload)
    return payload_refusal(result, result.payload_json())


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "utf-32-le"])
def test_a_claim_in_utf16_or_utf32_is_refused_and_the_own_tenant_passes(encoding):
    refusal = _refusal(json.dumps(CLAIM).encode(encoding))
    assert refusal is not None and f"names tenant {XYZ!r}" in refusal and "lenient" in refusal
    assert _refusal(json.dumps({"tenant": ACME}).encode(encoding)) is None


@pytest.mark.parametrize(
    "key",
    ["\uff54\uff45\uff4e\uff41\uff4e\uff54", "\uff34\uff25\uff2e\uff21\uff2e\uff34\uff3f\uff29\uff24", "tenant\uff3fslug"],
    ids=["fullwidth", "fullwidth-upper-id", "fullwidth-low-line"],
)
def test_a_key_that_normalises_to_a_tenant_key_is_a_claim(key):
    assert _refusal(json.dumps({key: XYZ}, ensure_ascii=False).encode()) is not None
    assert _refusal(json.dumps({key: XYZ}).encode()) is not None  # the same key as \u escapes


def _depth(node: object) -> int:
    if isinstance(node, dict):
        return 1 + max(map(_depth, node.values()), default=0)
    if isinstance(node, list):
        return 1 + max(map(_depth, node), default=0)
    return 0


# Strings that would mislead a count of brackets that did not skip them.
_TRICKY = ["]]}", '"[[{', 'x\\"[', "\\", 'q\\\\"]', "\\\\[", "a, b", ""]


def _document(rng: random.Random, depth: int) -> object:
    if depth <= 0 or rng.random() < 0.2:
        return rng.choice([1, None, 2.5, *_TRICKY])
    if rng.random() < 0.5:
        return [_document(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    return {f"k{i}{rng.choice(_TRICKY)}": _document(rng, depth - 1) for i in range(rng.randint(0, 3))}


def test_the_depth_limit_counts_brackets_outside_strings_only():
    """The depth is read from the payload's bytes (a walk of the decoded document
    stalled the loop for seconds): brackets, quotes and escapes inside strings must
    not move it either way."""
    inner = b'"]]]]}}\\"]"'  # closing brackets and an escaped quote inside a string
    assert decode_payload(b"[" * MAX_DEPTH + inner + b"]" * MAX_DEPTH) is not NOT_JSON
    assert decode_payload(b"[" * (MAX_DEPTH + 1) + inner + b"]" * (MAX_DEPTH + 1)) is NOT_JSON
    assert decode_payload(b'["' + b"[" * 5000 + b'"]') == ["[" * 5000]  # depth 1, whatever the string holds
    rng = random.Random(20261207)
    for _ in range(300):
        document = _document(rng, rng.randint(1, 9))
        payload = json.dumps(document).encode()
        depth = _depth(document)
        for limit in range(12):
            assert _deeper_than(payload, limit) == (depth > limit), (payload, limit)


def test_a_payload_of_more_nodes_than_the_bound_is_refused_before_it_is_read():
    """5 million empty lists in 15 MiB took 2 s to decode and 6 s to walk, on the
    loop every tenant shares: a payload is bounded by its nodes, not only its bytes."""
    flood = b"[" + b"[]," * MAX_NODES + b"[]]"
    detail = payload_cost_refusal(flood)
    assert detail is not None and str(MAX_NODES) in detail
    assert decode_payload(flood) is NOT_JSON
    registry = HandlerRegistry(metrics=PollerMetrics())
    registry.register("agents.status", lambda r: None, tenant=ACME, policy=same_tenant(ACME), name="acme")
    refused = registry.check(sample_result(payload=flood))
    assert isinstance(refused, Delivery) and refused.refused is Reason.INVALID_PAYLOAD
    # Commas inside strings are no nodes: a long text is still one string.
    text = json.dumps({"log": "a," * MAX_NODES}).encode()
    assert payload_cost_refusal(text) is None and decode_payload(text) == {"log": "a," * MAX_NODES}
    assert payload_cost_refusal(b"[" + b"1," * (MAX_NODES - 2) + b"1]") is None  # at the bound


def test_a_nan_in_a_nats_message_is_never_written():
    doc = sample_result(payload=b'{"latency": NaN}').to_json()
    doc["data"] = float("nan")  # had anything slipped through, the encoder refuses it
    with pytest.raises(ValueError):
        encode(doc)


# ---------------------------------------------------------------- a real cycle into the file sink

STATUS = {"service_type": "icmp", "service_name": "ping"}
SWEEP = {"service_type": "sweep", "service_name": "network_sweep", "results_interval": "5m"}


def written(data: Path) -> list[dict]:
    docs = []
    for path in sorted(p for p in data.rglob("*") if p.is_file()):
        for line in path.read_text(encoding="utf-8").splitlines():
            doc = strict_loads(line)
            assert isinstance(doc, dict)
            docs.append(doc)
    return docs


@pytest.mark.parametrize(
    "message",
    [deep(100_000), b'{"latency": NaN, "status": "ok"}', json.dumps(CLAIM).encode("utf-16")],
    ids=["deep", "nan", "utf16-claim"],
)
async def test_a_hostile_payload_neither_loses_the_cycle_nor_reaches_the_sink_as_json(pki, serve, tmp_path, message):
    from poller.config import load_config
    from poller.daemon.daemon import PollerDaemon

    agent = await serve(pki.agent(ACME), behaviour=AgentBehaviour(message=message))
    data = tmp_path / "data"
    config = tmp_path / "poller.json"
    config.write_text(
        json.dumps(
            {
                "poller_id": "p",
                "certs_dir": str(pki.directory),
                "sink": {"type": "file", "dir": str(data)},
                "agents": {"edge": {"address": agent.address, "tenant": ACME, "checks": [STATUS, SWEEP]}},
            }
        )
    )
    daemon = PollerDaemon(load_config(config))
    results = await daemon.run_once()
    assert {r.kind for r in results} == {"status", "stream"}  # one result per check: nothing lost
    docs = written(data)
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind["stream"]["data"]["hosts"]) == 2  # the cycle's other check was delivered
    assert XYZ not in json.dumps(docs)  # no claim of another tenant, in any form
    if message.startswith(b"\xff\xfe"):
        assert "status" not in by_kind  # refused payload_mismatch, as the same claim in UTF-8 is
    else:
        assert by_kind["status"]["data_b64"] and "data" not in by_kind["status"]


def test_a_utf16_flood_cannot_hide_its_nodes_from_the_lenient_reading():
    # In UTF-16 a quote byte can be half of another character: U+2200 is 00 22 in
    # UTF-16-LE, so two of them made 2.6 million lists look like one string to the
    # node count, and the lenient reading of the tenant filter decoded them (1.1 s).
    flood = ('["\u2200",' + "[]," * (MAX_NODES + 1) + '"\u2200", {"tenant": "xyz-inc"}]').encode("utf-16-le")
    assert str(MAX_NODES) in (payload_cost_refusal(flood) or "")  # refused invalid_payload by check()
    assert str(MAX_NODES) in (_refusal(flood) or "")  # and by the filter itself, before reading it
