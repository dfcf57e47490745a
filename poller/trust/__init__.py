"""Trust: the certs directory, and the decision whether a chain proves a tenant."""

from poller.trust.layout import CertsLayout
from poller.trust.store import ClientIdentity, TenantAuthority, TrustSnapshot, TrustStore, TrustStoreError
from poller.trust.verify import verify_agent_chain

__all__ = [
    "CertsLayout",
    "ClientIdentity",
    "TenantAuthority",
    "TrustSnapshot",
    "TrustStore",
    "TrustStoreError",
    "verify_agent_chain",
]
