"""serviceradar-poller: a tenant-validating mTLS poller for ServiceRadar agents.

>>> from poller import TrustStore, dial_agent, AgentClient
>>> trust = TrustStore("certs")                                            # doctest: +SKIP
>>> conn = await dial_agent("10.0.0.5:50051", tenant="acme-corp", trust=trust)  # doctest: +SKIP
>>> (await AgentClient(conn).get_status("ping", "icmp")).context.tenant    # doctest: +SKIP
'acme-corp'
"""

from poller.agent import AgentClient, AgentReply, IncompleteStream, StreamDocument
from poller.dial import AgentConnection, dial_agent
from poller.handlers import Delivery, HandlerRegistry, channel_for
from poller.identity import (
    AgentUnreachable,
    IdentityRefused,
    PollerError,
    Reason,
    TenantContext,
    bound_tenant,
    current_tenant,
)
from poller.identity.platform import PlatformIdentity
from poller.identity.reasons import PermissionDenied, ResultRefused
from poller.policy import (
    Access,
    Decision,
    Policy,
    all_of,
    any_of,
    any_tenant,
    component_type_in,
    platform_admin,
    same_tenant,
    tenant_in,
)
from poller.trust import TrustStore, TrustStoreError, verify_agent_chain

__version__ = "0.1.0"

__all__ = [
    "Access",
    "AgentClient",
    "AgentConnection",
    "AgentReply",
    "AgentUnreachable",
    "Decision",
    "Delivery",
    "HandlerRegistry",
    "IdentityRefused",
    "IncompleteStream",
    "PermissionDenied",
    "PlatformIdentity",
    "Policy",
    "PollerError",
    "Reason",
    "ResultRefused",
    "StreamDocument",
    "TenantContext",
    "TrustStore",
    "TrustStoreError",
    "all_of",
    "any_of",
    "any_tenant",
    "bound_tenant",
    "channel_for",
    "component_type_in",
    "current_tenant",
    "dial_agent",
    "platform_admin",
    "same_tenant",
    "tenant_in",
    "verify_agent_chain",
]
