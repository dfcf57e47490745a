"""Test harness: mock agents, forged certificates, a real nats-server, a memory sink, and unproven contexts for tests.

>>> from poller.testing import MockAgent, ForgePki  # doctest: +SKIP
"""

from poller.testing.clock import ManualClock
from poller.testing.forge import ForgedCert, ForgePki, serviceradar_style_dir
from poller.testing.identity import unverified_platform_identity, unverified_tenant_context
from poller.testing.memory_sink import MemorySink
from poller.testing.mock_agent import AgentBehaviour, MockAgent, MockAgentError
from poller.testing.nats_server import NatsServer, NatsServerError, find_nats_server
from poller.testing.results import sample_result

__all__ = [
    "AgentBehaviour",
    "ForgePki",
    "ForgedCert",
    "ManualClock",
    "MemorySink",
    "MockAgent",
    "MockAgentError",
    "NatsServer",
    "NatsServerError",
    "find_nats_server",
    "sample_result",
    "serviceradar_style_dir",
    "unverified_platform_identity",
    "unverified_tenant_context",
]
