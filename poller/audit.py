"""The audit log: every identity decision, accepted or refused (invariant 5 of docs/design.md).

Lines go to the logger "poller.audit" (standard logging, see poller.logs) with the tenant expected and
proven, the component, the certificate serial and fingerprint, and the
reason. Never key material.
"""

from __future__ import annotations

from poller.identity.context import TenantContext
from poller.identity.reasons import IdentityRefused
from poller.logs import get_logger
from poller.metrics import PollerMetrics

log = get_logger("poller.audit")

#: When an accepted server call is audited: "call", a line for every one;
#: "connection", a line for the first call of each method on a connection
#: under each proof (again after a trust reload or with another certificate).
#: Refusals and admin calls are audited every time either way.
ACCEPT_AUDIT_MODES = ("call", "connection")


def accepted(ctx: TenantContext, *, address: str, metrics: PollerMetrics) -> None:
    metrics.identity_accepts.labels(tenant=ctx.tenant).inc()
    log.info(
        "identity_accepted",
        audit=True,
        address=address,
        **ctx.log_fields(),
        not_after=ctx.as_dict()["not_after"],
    )


def refused(err: IdentityRefused, *, address: str, tenant: str, metrics: PollerMetrics, phase: str = "dial") -> None:
    """phase: "dial" (a proof), or "recheck" (a live identity ended by a local
    re-check after trust material changed or a deadline passed). `tenant` is
    the tenant expected (the one dialed); `issuer_tenant`, written when a
    registered tenant CA's key signed the certificate, is the tenant of that
    CA (another one's, for an impostor it minted): who issued it, not whose it is."""
    metrics.identity_refusals.labels(tenant=tenant, reason=err.reason.value).inc()
    issuer = {"issuer_tenant": err.issuer_tenant} if err.issuer_tenant is not None else {}
    log.warning(
        "identity_refused",
        audit=True,
        phase=phase,
        address=address,
        tenant=tenant,
        reason=err.reason.value,
        detail=err.detail,
        subject=err.peer.get("subject"),
        serial=err.peer.get("serial"),
        fingerprint=err.peer.get("fingerprint"),
        **issuer,
    )


def rotated(old: TenantContext, new: TenantContext, *, address: str, metrics: PollerMetrics) -> None:
    """The agent now presents a new certificate for the same identity, proven
    afresh; its channel was re-pinned to it. Both serials are recorded."""
    metrics.identity_accepts.labels(tenant=new.tenant).inc()
    log.info(
        "identity_rotated",
        audit=True,
        rotated=True,
        address=address,
        **new.log_fields(),
        old_serial=old.serial,
        old_fingerprint=old.fingerprint_sha256,
        not_after=new.as_dict()["not_after"],
    )
