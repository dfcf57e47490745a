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

from poller.agent import AgentClient, AgentReply, IncompleteStream, StreamDocument
from poller.daemon.config import ConfigError
from poller.daemon.durations import DurationError
from poller.dial import AgentConnection, dial_agent
from poller.identity import (
    AgentUnreachable,
    IdentityRefused,
    InvalidName,
    PollerError,
    Reason,
    TenantContext,
    current_tenant,
)
from poller.identity.certinfo import CertificateError
from poller.identity.reasons import AgentFailure, InvalidArgument, InvalidPayload
from poller.pki.errors import PkiError
from poller.trust import TrustStore, TrustStoreError, verify_agent_chain

__version__ = "0.1.0"

__all__ = [
    "AgentClient",
    "AgentConnection",
    "AgentFailure",
    "AgentReply",
    "AgentUnreachable",
    "CertificateError",
    "ConfigError",
    "DurationError",
    "IdentityRefused",
    "IncompleteStream",
    "InvalidArgument",
    "InvalidName",
    "InvalidPayload",
    "PkiError",
    "PollerError",
    "Reason",
    "StreamDocument",
    "TenantContext",
    "TrustStore",
    "TrustStoreError",
    "current_tenant",
    "dial_agent",
    "verify_agent_chain",
]
