"""Trust: the material a poller trusts (certs directory or PEM bytes), and the
decision whether a chain proves a tenant."""

from poller.trust.binding import BindingError, parse_binding
from poller.trust.layout import CertsLayout
from poller.trust.snapshot import ClientIdentity, CrlInForce, TenantAuthority, TrustSnapshot
from poller.trust.source import NotifyingTrustSource, TrustSource
from poller.trust.store import ReloadReport, TrustListener, TrustStore, TrustStoreError
from poller.trust.verify import verify_agent_chain

__all__ = [
    "BindingError",
    "CertsLayout",
    "ClientIdentity",
    "CrlInForce",
    "NotifyingTrustSource",
    "ReloadReport",
    "TenantAuthority",
    "TrustListener",
    "TrustSnapshot",
    "TrustSource",
    "TrustStore",
    "TrustStoreError",
    "parse_binding",
    "verify_agent_chain",
]
