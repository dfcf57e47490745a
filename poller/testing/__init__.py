"""Test harness: mock agents, forged certificates, and unproven contexts for tests.

>>> from poller.testing import MockAgent, ForgePki  # doctest: +SKIP
"""

from poller.testing.forge import ForgedCert, ForgePki, serviceradar_style_dir
from poller.testing.identity import unverified_platform_identity, unverified_tenant_context
from poller.testing.mock_agent import AgentBehaviour, MockAgent, MockAgentError

__all__ = [
    "AgentBehaviour",
    "ForgePki",
    "ForgedCert",
    "MockAgent",
    "MockAgentError",
    "serviceradar_style_dir",
    "unverified_platform_identity",
    "unverified_tenant_context",
]
