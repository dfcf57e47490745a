"""serviceradar-poller: a tenant-validating mTLS poller for ServiceRadar agents.

>>> from poller import TrustStore, dial_agent, AgentClient
>>> trust = TrustStore("certs")                                            # doctest: +SKIP
>>> conn = await dial_agent("10.0.0.5:50051", tenant="acme-corp", trust=trust)  # doctest: +SKIP
>>> (await AgentClient(conn).get_status("ping", "icmp")).context.tenant    # doctest: +SKIP
'acme-corp'
"""

from poller.agent import AgentClient, AgentReply, IncompleteStream, StreamDocument
from poller.dial import AgentConnection, dial_agent
from poller.identity import (
    AgentUnreachable,
    IdentityRefused,
    PollerError,
    Reason,
    TenantContext,
    current_tenant,
)
from poller.nats.subjects import SubjectError, tenant_from_subject, tenant_subject
from poller.trust import TrustStore, TrustStoreError, verify_agent_chain

__version__ = "0.1.0"

__all__ = [
    "AgentClient",
    "AgentConnection",
    "AgentReply",
    "AgentUnreachable",
    "IdentityRefused",
    "IncompleteStream",
    "PollerError",
    "Reason",
    "StreamDocument",
    "SubjectError",
    "TenantContext",
    "TrustStore",
    "TrustStoreError",
    "current_tenant",
    "dial_agent",
    "tenant_from_subject",
    "tenant_subject",
    "verify_agent_chain",
]
