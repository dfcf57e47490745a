"""Test helper: a TenantContext made from plain strings, WITHOUT any proof.

Only for tests of code that consumes a TenantContext (sinks, policies). The
name says it: nothing in the poller itself calls this.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from poller.identity.context import _PROOF, TenantContext
from poller.identity.platform import PlatformIdentity, format_platform_cn


def unverified_tenant_context(
    tenant: str = "acme-corp",
    component_id: str = "agent-001",
    partition_id: str = "partition-1",
    *,
    component_type: str | None = "agent",
) -> TenantContext:
    now = datetime.now(UTC)
    return TenantContext(
        tenant=tenant,
        component_id=component_id,
        partition_id=partition_id,
        component_type=component_type,
        spiffe_id=None,
        serial="0",
        fingerprint_sha256="0" * 64,
        issuer_spki_sha256="0" * 64,
        not_after=now + timedelta(days=1),
        verified_at=now,
        _proof=_PROOF,
    )


def unverified_platform_identity(name: str = "ops-admin", *, local: bool = False) -> PlatformIdentity:
    """A PlatformIdentity made from a name, WITHOUT any proof (tests of handlers and policies only)."""
    now = datetime.now(UTC)
    return PlatformIdentity(
        name=name,
        cn=format_platform_cn(name),
        serial="0",
        fingerprint_sha256="0" * 64,
        issuer_spki_sha256="0" * 64,
        not_after=now + timedelta(days=1),
        verified_at=now,
        local=local,
        _proof=_PROOF,
    )
