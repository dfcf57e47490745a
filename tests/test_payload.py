"""The payload tenant-claim filter on its own (poller.delivery.payload): an
agent's JSON may name no tenant but the proven one, and an unproven result
carries no payload."""

from __future__ import annotations

import json

import pytest

from poller.delivery.payload import payload_needs_reading, payload_refusal, payload_tenant_claims
from poller.testing.results import sample_result


def _refusal(payload: bytes, *, proven: bool = True) -> str | None:
    result = sample_result(proven=proven, payload=payload)
    return payload_refusal(result, result.payload_json())


@pytest.mark.parametrize(
    "document",
    [
        {"tenant": "xyz-inc"},
        {"tenant_id": "xyz-inc"},
        {"tenantId": "xyz-inc"},
        {"Tenant-Slug": "xyz-inc"},
        {"TENANT_ID": "xyz-inc"},
        {"hosts": [{"ok": True}, {"nested": {"tenant": "xyz-inc"}}]},
        {"tenant": "acme-corp", "other": {"tenant_slug": "xyz-inc"}},
    ],
)
def test_a_claim_of_another_tenant_anywhere_is_refused(document: object) -> None:
    refusal = _refusal(json.dumps(document).encode())
    assert refusal == "payload names tenant 'xyz-inc', the proven tenant is 'acme-corp'"


def test_a_key_spelled_with_unicode_escapes_is_still_a_claim() -> None:
    assert _refusal(b'{"\\u0074enant": "xyz-inc"}') is not None


@pytest.mark.parametrize(
    "payload",
    [b"", b'{"tenant": "acme-corp"}', b'{"tenant": ""}', b'{"tenant": null}', b'{"status": "up"}', b"not json", b"[1, 2]"],
)
def test_the_proven_tenant_no_claim_or_no_json_passes(payload: bytes) -> None:
    assert _refusal(payload) is None


def test_a_non_string_claim_is_a_claim() -> None:
    assert payload_tenant_claims({"tenant": 7}) == {"7"}
    assert _refusal(b'{"tenant": 7}') is not None


def test_an_unproven_result_may_carry_no_payload() -> None:
    assert _refusal(b"", proven=False) is None
    assert _refusal(b'{"tenant": "acme-corp"}', proven=False) == "a payload without a proven identity"


def test_a_deep_document_does_not_exhaust_the_recursion_limit() -> None:
    depth = 20_000
    document: object = {"tenant": "xyz-inc"}
    for _ in range(depth):
        document = {"a": [document]}
    assert payload_tenant_claims(document) == {"xyz-inc"}


# Payloads the registry does not decode must be exactly those whose decoding could
# change nothing: the claim filter and the labels decide the same either way.
_SPELLINGS = [
    b'{"status": "ok", "latency_ms": 0.41}',
    b'{"tenant": "xyz-inc"}',
    b'{"TENANT-ID": "xyz-inc"}',
    b'{"TeNaNt_Slug": "xyz-inc"}',
    b'{"tenant": "xyz-inc"}'.replace(b":", b"\x00:"),  # a NUL anywhere
    b'{"\\u0074enant": "xyz-inc"}',
    b'{"\\u0061gent_id": "other"}',
    b'{"agent_id": "other"}',
    b'{"partition": "p9"}',
    '{"\uff54\uff45\uff4e\uff41\uff4e\uff54": "xyz-inc"}'.encode(),  # fullwidth "tenant": NFKC reads it so
    '{"tenant": "xyz-inc"}'.encode("utf-16-le"),  # no BOM: only NUL bytes say it is UTF-16
    '{"tenant": "xyz-inc"}'.encode("utf-32"),
    b'{"up": NaN, "tenant": "xyz-inc"}',  # not strict JSON: read as a lenient parser would
    b"not json at all",
    b"null",
]


@pytest.mark.parametrize("payload", _SPELLINGS)
def test_a_payload_left_undecoded_could_not_have_changed_a_decision(payload: bytes) -> None:
    result = sample_result(proven=True, payload=payload)
    decoded = result.payload_json()
    if not payload_needs_reading(payload):  # the rest are decoded (the list below says which)
        assert payload_refusal(result, None) == payload_refusal(result, decoded) is None
        assert result.reported_labels(None) == result.reported_labels(decoded)


def test_only_statuses_that_cannot_spell_a_key_are_left_undecoded() -> None:
    assert not payload_needs_reading(b'{"status": "ok", "port": 22}')
    assert [p for p in _SPELLINGS if not payload_needs_reading(p)] == [
        b'{"status": "ok", "latency_ms": 0.41}',
        b"not json at all",
        b"null",
    ]
