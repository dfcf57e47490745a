"""Identity: names, reason codes and the proven TenantContext (no I/O)."""

from poller.identity.context import TenantContext, bound_tenant, current_tenant
from poller.identity.names import (
    EdgeName,
    InvalidName,
    SpiffeId,
    format_edge_cn,
    format_spiffe_id,
    format_tenant_ca_cn,
    is_label,
    parse_edge_cn,
    parse_spiffe_id,
    parse_tenant_ca_cn,
)
from poller.identity.reasons import (
    AgentFailure,
    AgentUnreachable,
    IdentityRefused,
    InvalidArgument,
    InvalidPayload,
    PollerError,
    Reason,
)

__all__ = [
    "AgentFailure",
    "AgentUnreachable",
    "EdgeName",
    "IdentityRefused",
    "InvalidArgument",
    "InvalidName",
    "InvalidPayload",
    "PollerError",
    "Reason",
    "SpiffeId",
    "TenantContext",
    "bound_tenant",
    "current_tenant",
    "format_edge_cn",
    "format_spiffe_id",
    "format_tenant_ca_cn",
    "is_label",
    "parse_edge_cn",
    "parse_spiffe_id",
    "parse_tenant_ca_cn",
]
