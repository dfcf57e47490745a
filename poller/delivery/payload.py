"""What an agent's payload is, and the tenant-claim filter: it may not name another tenant.

A payload is JSON only as strict UTF-8 JSON (RFC 8259 §8.1: no UTF-16/32,
no BOM, no invalid UTF-8), without NaN or ±Infinity (also none from a number
too large for a double), nested at most MAX_DEPTH deep; anything else is not
JSON, and a result carries it as `data_b64` (decode_payload returns NOT_JSON).

A payload of more than MAX_NODES JSON nodes is not read at all: decoding is C
but holds the event loop (a 15 MiB `[[],[],...]` is 5 million lists, 2 s to
decode), so a payload's cost is bounded by its nodes, not only by its bytes.
payload_cost_refusal names such a payload, and it is refused `invalid_payload`
before anything decodes it; a legitimate 15 MiB sweep has about a million.

A proven result's payload is refused (`payload_mismatch`) when any tenant key
anywhere in its JSON names a tenant other than the proven one. Keys are
compared as a consumer that normalises them would read them: NFKC, case
folded, without `_` and `-`, so `tenantId`, `Tenant-Slug`, `TENANT_ID` and
`tenant` in fullwidth letters all count. The check runs on the parsed document; a
payload that is not strict JSON but that a lenient parser would read as JSON
(UTF-16 or UTF-32, which `json.loads(bytes)` detects, NaN) is checked as that
parser would read it, so no encoding carries a claim past the filter. An
unproven result may carry no payload at all.

>>> sorted(payload_tenant_claims({"hosts": [{"tenant_id": "xyz-inc"}], "tenant": "acme-corp"}))
['acme-corp', 'xyz-inc']
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from array import array
from itertools import accumulate
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from poller.delivery.result import PollResult

__all__ = [
    "MAX_DEPTH",
    "MAX_NODES",
    "NOT_JSON",
    "TENANT_KEYS",
    "decode_payload",
    "payload_cost_refusal",
    "payload_needs_reading",
    "payload_refusal",
    "payload_tenant_claims",
]

#: Deeper documents are not JSON here: re-encoding them must never exhaust the
#: recursion limit on the way to a sink (the C parser stops near 1,000 anyway).
MAX_DEPTH = 512

#: More nodes (containers, array elements and object members, counted outside
#: strings) than this and a payload is not read (see the module doc). Measured:
#: a 15 MiB sweep of 81,000 hosts has 1.06 million and decodes in 0.35 s. At the
#: bound the costliest shape found, 4,000 chains 500 deep (3.8 MiB), takes about
#: 1 s to decode (0.3 s of it the depth check) and 1.1 s more for the tenant-claim
#: walk when its bytes may name a tenant: the bound caps a push's cost near 2 s of
#: the loop, it does not make it small.
MAX_NODES = 2_000_000

# A string of a payload reduced to quotes, brackets and commas, its escapes gone.
_QUOTED = re.compile(rb'"[^"]*"')
_AS_SQUARE = bytes.maketrans(b"{}", b"[]")
# `[` as 1 and `]` as -1, read as signed bytes (array "b"): a running sum at C speed.
_STEP = bytes.maketrans(b"[]", b"\x01\xff")
_CONTAINERS = (dict, list)


class _NotJson:
    def __repr__(self) -> str:
        return "NOT_JSON"


#: What decode_payload returns for a payload that is not (strict) JSON.
NOT_JSON: Any = _NotJson()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 reads as inf, which no JSON can carry
        raise ValueError(f"{text} is out of range")
    return value


# One decoder for all, as json.loads() without options shares one: json.loads with
# options builds a decoder and its scanner on every call (a tenth of the decode).
_STRICT = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)


def decode_payload(payload: bytes) -> Any:
    """The payload's JSON document, or NOT_JSON (see the module doc).

    >>> decode_payload(b'{"up": true}'), decode_payload('{"up": true}'.encode("utf-16")), decode_payload(b"[NaN]")
    ({'up': True}, NOT_JSON, NOT_JSON)
    """
    if len(payload) > MAX_NODES and _nodes(payload) > MAX_NODES:
        return NOT_JSON
    try:
        document = _STRICT.decode(payload.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return NOT_JSON
    if payload.count(b"[") + payload.count(b"{") > MAX_DEPTH and _deeper_than(payload, MAX_DEPTH):
        return NOT_JSON
    return document


def payload_cost_refusal(payload: bytes) -> str | None:
    """Why a payload is too costly to read (more than MAX_NODES nodes), or None.

    Cheap: a payload of fewer bytes than MAX_NODES cannot have more nodes.

    >>> payload_cost_refusal(b'{"up": true}') is None, payload_cost_refusal(b"[0" + b",0" * MAX_NODES + b"]")
    (True, 'payload has 2000002 JSON nodes, more than the 2000000 a payload may have')
    """
    if len(payload) <= MAX_NODES:
        return None
    # NUL bytes: UTF-16 or UTF-32, which the tenant filter reads as a lenient parser
    # would. There a quote byte may be half of another character (U+2200 is 00 22 in
    # UTF-16-LE), so only the raw count bounds what that reading costs.
    nodes = _raw_nodes(payload) if b"\x00" in payload else _nodes(payload)
    return f"payload has {nodes} JSON nodes, more than the {MAX_NODES} a payload may have" if nodes > MAX_NODES else None


def _outside_strings(payload: bytes, keep: bytes) -> bytes:
    """The payload's bytes of `keep` (some of `[]{},`) outside its JSON strings, at
    C speed; `{}` read as `[]` (for text that is not JSON, only an estimate).

    Escaped backslashes go first, then escaped quotes, so every quote left opens
    or closes a string. Most strings hold none of `keep`: reduced to `""`, they go
    in one replace; only if a quote is left does a regex take each string out."""
    if b"\\" in payload:
        payload = payload.replace(b"\\\\", b"").replace(b'\\"', b"")
    reduced = payload.translate(_AS_SQUARE, bytes(set(range(256)) - set(keep + b'"')))
    # No quote left means every string was empty here: a string holding one of
    # `keep` leaves its opening quote, whatever the pairs around it.
    outside = reduced.replace(b'""', b"")
    return _QUOTED.sub(b"", reduced) if b'"' in outside else outside


def _raw_nodes(payload: bytes) -> int:
    """The payload's bytes `,` `[` `{` (and one): more than its JSON nodes in any
    encoding a parser detects, as each of those characters holds its byte."""
    return payload.count(b",") + payload.count(b"[") + payload.count(b"{") + 1


def _nodes(payload: bytes) -> int:
    """The payload's JSON nodes (containers, elements, members) as the strict reading
    has them: counted in the raw bytes, and again outside strings only if that is too
    many. Exact for UTF-8, where a quote or backslash byte is always that character;
    a payload that is not UTF-8 is never decoded strictly anyway."""
    raw = _raw_nodes(payload)
    if raw <= MAX_NODES:
        return raw
    structure = _outside_strings(payload, b"[{,")
    return structure.count(b",") + structure.count(b"[") + 1


def _deeper_than(payload: bytes, limit: int) -> bool:
    """Whether a payload that decoded as JSON nests deeper than limit; at C speed
    on its brackets (a walk of the decoded document was a second per million nodes)."""
    brackets = _outside_strings(payload, b"[]{}")
    removed = 0  # each pass takes every innermost pair, so the depth falls by exactly one
    while brackets and removed < 8:  # a few passes empty an ordinary document
        brackets, removed = brackets.replace(b"[]", b""), removed + 1
    return removed + (max(accumulate(array("b", brackets.translate(_STEP)))) if brackets else 0) > limit


def _as_a_lenient_parser_reads_it(payload: bytes) -> Any:
    """What json.loads(bytes) makes of a payload (UTF-16/32 detected, NaN allowed), or NOT_JSON."""
    try:
        return json.loads(payload)
    except (ValueError, RecursionError):
        return NOT_JSON


#: JSON keys whose value names a tenant; one that is not the proven tenant is a
#: lie. Keys are compared without case, `_` and `-`, so `tenantId`,
#: `Tenant-Slug` and `TENANT_ID` count too.
TENANT_KEYS = frozenset({"tenant", "tenant_id", "tenant_slug"})
_TENANT_KEYS_NORMALISED = frozenset(k.replace("_", "") for k in TENANT_KEYS)


def _may_name_a_tenant(payload: bytes) -> bool:
    """Cheap pre-check on the raw payload, for a strict and a lenient reading alike:
    a tenant key has "tenant" in it, in any case, unless it is spelled with \\u
    escapes or non-ASCII letters (fullwidth, ligatures), or the payload is one a
    lenient parser reads as UTF-16 or UTF-32 (NUL bytes). Then the full walk decides.
    `_` and `-` are taken out first, as the key rule (_is_tenant_key) takes them out:
    `ten_ant` and `Ten-Ant-Id` are tenant keys too."""
    if not payload.isascii() or b"\\u" in payload or b"\x00" in payload:
        return True
    lowered = payload.lower()
    return b"tenant" in lowered or ((b"_" in lowered or b"-" in lowered) and b"tenant" in lowered.translate(None, b"_-"))


def payload_needs_reading(payload: bytes) -> bool:
    """False when no reading of the payload can hold a tenant key or a reported
    label (`agent_id`, `partition`): then neither the tenant-claim filter nor the
    labels need it decoded. Most statuses are such (`{"status": "ok", ...}`).

    >>> payload_needs_reading(b'{"status": "ok"}'), payload_needs_reading(b'{"partition": "p2"}')
    (False, True)
    """
    # Substring scans, not one regex: an alternation regex is ten times slower on a
    # results document of a few KiB (measured: 8 KiB, 204 against 23 us).
    return b"agent_id" in payload or b"partition" in payload or _may_name_a_tenant(payload)


def _is_tenant_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    if not key.isascii():  # as a consumer that normalises keys reads it
        key = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", key).casefold())
    return key.lower().replace("_", "").replace("-", "") in _TENANT_KEYS_NORMALISED


def payload_tenant_claims(document: Any) -> set[str]:
    """Every value of a tenant key anywhere in a JSON document (as text).

    Empty strings and nulls claim nothing; any other value is a claim.

    >>> sorted(payload_tenant_claims({"hosts": [{"tenant_id": "xyz-inc"}], "tenant": "acme-corp"}))
    ['acme-corp', 'xyz-inc']
    """
    claims: set[str] = set()
    stack = [document]
    pop, append, extend = stack.pop, stack.append, stack.extend
    known: dict[str, bool] = {}  # key -> whether it is a tenant key: a document repeats its keys
    # Iterative, so a deep document cannot exhaust the recursion limit. It runs on the
    # event loop, about a microsecond a node: only non-empty containers are stacked
    # (an empty one holds no key), and each distinct key is normalised once.
    while stack:
        node = pop()
        if isinstance(node, dict):
            for key, value in node.items():
                tenant_key = known.get(key)
                if tenant_key is None:
                    tenant_key = known[key] = _is_tenant_key(key)
                if tenant_key and value not in (None, ""):
                    claims.add(value if isinstance(value, str) else repr(value))
                if value and isinstance(value, _CONTAINERS):
                    append(value)
        elif isinstance(node, list):
            extend([v for v in node if v and isinstance(v, _CONTAINERS)])
    return claims


def payload_refusal(result: PollResult, document: Any) -> str | None:
    """Why result's payload must be refused, or None when it may pass.

    `document` is the payload already decoded (result.payload_json()), so it is decoded once.
    """
    if result.context is None:
        # An unproven result is made by the poller and carries no agent data.
        return "a payload without a proven identity" if result.payload else None
    if not result.payload or not _may_name_a_tenant(result.payload):
        return None
    cost = payload_cost_refusal(result.payload)
    if cost is not None:  # not read, so it cannot be cleared
        return cost
    how = ""
    if document is None and result.payload.strip() != b"null":  # not strict JSON: as a lenient parser reads it
        document, how = _as_a_lenient_parser_reads_it(result.payload), " (read as a lenient JSON parser would)"
        if document is NOT_JSON:
            return None
    lies = sorted(c for c in payload_tenant_claims(document) if c != result.context.tenant)
    if lies:
        return f"payload{how} names tenant {lies[0][:64]!r}, the proven tenant is {result.context.tenant!r}"
    return None
