"""serviceradar-poller: a tenant-validating mTLS poller for ServiceRadar agents.

>>> import asyncio
>>> from poller import AgentClient, TrustStore, dial_agent
>>> async def main() -> None:
...     conn = await dial_agent("10.0.0.5:50051", tenant="acme-corp", trust=TrustStore("certs"))
...     try:
...         print((await AgentClient(conn).get_status("ping", "icmp")).context.tenant)
...     finally:
...         await conn.close()
>>> asyncio.run(main())  # doctest: +SKIP
acme-corp
"""

from poller._version import __version__ as __version__
from poller.agent import AgentClient, AgentReply, IncompleteStream, StreamDocument
from poller.config.durations import DurationError
from poller.config.engine import ConfigError
from poller.delivery.channels import channel_for
from poller.delivery.registry import Delivery, HandlerRegistry
from poller.delivery.result import PollResult
from poller.dial import AgentConnection, dial_agent
from poller.identity import (
    AgentUnreachable,
    IdentityRefused,
    InvalidName,
    PollerError,
    Reason,
    TenantContext,
    bound_tenant,
    current_tenant,
)
from poller.identity.certinfo import CertificateError
from poller.identity.platform import PlatformIdentity
from poller.identity.reasons import AgentFailure, InvalidArgument, InvalidPayload, PermissionDenied, ResultRefused
from poller.metrics import PollerMetrics
from poller.nats.subjects import SubjectError, tenant_from_subject, tenant_subject
from poller.pki.errors import PkiError
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

__all__ = [
    "Access",
    "AgentClient",
    "AgentConnection",
    "AgentFailure",
    "AgentReply",
    "AgentUnreachable",
    "CertificateError",
    "ConfigError",
    "Decision",
    "Delivery",
    "DurationError",
    "HandlerRegistry",
    "IdentityRefused",
    "IncompleteStream",
    "InvalidArgument",
    "InvalidName",
    "InvalidPayload",
    "PermissionDenied",
    "PkiError",
    "PlatformIdentity",
    "Policy",
    "PollResult",
    "PollerError",
    "PollerMetrics",
    "Reason",
    "ResultRefused",
    "StreamDocument",
    "SubjectError",
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
    "tenant_from_subject",
    "tenant_in",
    "tenant_subject",
    "verify_agent_chain",
]
