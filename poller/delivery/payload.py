"""The payload tenant-claim filter: an agent's JSON may not name another tenant.

A proven result's payload is refused (`payload_mismatch`) when any tenant key
anywhere in its JSON (`tenant`, `tenant_id`, `tenant_slug`, compared without
case, `_` and `-`) names a tenant other than the proven one; an unproven
result may carry no payload at all.

>>> sorted(payload_tenant_claims({"hosts": [{"tenant_id": "xyz-inc"}], "tenant": "acme-corp"}))
['acme-corp', 'xyz-inc']
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from poller.delivery.result import PollResult

__all__ = ["TENANT_KEYS", "payload_refusal", "payload_tenant_claims"]

#: JSON keys whose value names a tenant; one that is not the proven tenant is a
#: lie. Keys are compared without case, `_` and `-`, so `tenantId`,
#: `Tenant-Slug` and `TENANT_ID` count too.
TENANT_KEYS = frozenset({"tenant", "tenant_id", "tenant_slug"})
_TENANT_KEYS_NORMALISED = frozenset(k.replace("_", "") for k in TENANT_KEYS)


def _may_name_a_tenant(payload: bytes) -> bool:
    """Cheap pre-check on the raw JSON: a tenant key has "tenant" in it, in any
    case, unless it is spelled with \\u escapes (then the full walk decides)."""
    return b"tenant" in payload.lower() or b"\\u" in payload


def _is_tenant_key(key: object) -> bool:
    # ASCII only, so that the byte pre-check above and this test agree.
    return isinstance(key, str) and key.isascii() and key.lower().replace("_", "").replace("-", "") in _TENANT_KEYS_NORMALISED


def payload_tenant_claims(document: Any) -> set[str]:
    """Every value of a tenant key anywhere in a JSON document (as text).

    Empty strings and nulls claim nothing; any other value is a claim.

    >>> sorted(payload_tenant_claims({"hosts": [{"tenant_id": "xyz-inc"}], "tenant": "acme-corp"}))
    ['acme-corp', 'xyz-inc']
    """
    claims: set[str] = set()
    stack = [document]
    while stack:  # iterative: a deep document cannot exhaust the recursion limit
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if _is_tenant_key(key) and value not in (None, ""):
                    claims.add(value if isinstance(value, str) else repr(value))
                if isinstance(value, (dict, list)):
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, (dict, list)))
    return claims


def payload_refusal(result: PollResult, document: Any) -> str | None:
    """Why result's payload must be refused, or None when it may pass.

    `document` is the payload already decoded (result.payload_json()), so it is decoded once.
    """
    if result.context is None:
        # An unproven result is made by the poller and carries no agent data.
        return "a payload without a proven identity" if result.payload else None
    if document is None or not _may_name_a_tenant(result.payload):
        return None
    lies = sorted(c for c in payload_tenant_claims(document) if c != result.context.tenant)
    if lies:
        return f"payload names tenant {lies[0][:64]!r}, the proven tenant is {result.context.tenant!r}"
    return None
