"""Dialing: collect the agent's chain, prove its tenant, open a pinned channel."""

from poller.dial.dialer import AgentConnection, dial_agent
from poller.dial.interceptor import tenant_interceptors

__all__ = ["AgentConnection", "dial_agent", "tenant_interceptors"]
