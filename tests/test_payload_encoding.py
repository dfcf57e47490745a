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
from pathlib import Path

import pytest

from poller.delivery.payload import MAX_DEPTH, NOT_JSON, decode_payload, payload_refusal
from poller.nats.messages import encode
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
