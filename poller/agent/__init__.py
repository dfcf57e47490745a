"""The agents' RPCs over a pinned connection."""

from poller.agent.budget import ReassemblyBudget, StreamLease
from poller.agent.client import AgentClient, AgentReply, StreamDocument
from poller.agent.stream import IncompleteStream, StreamAssembler

__all__ = [
    "AgentClient",
    "AgentReply",
    "IncompleteStream",
    "ReassemblyBudget",
    "StreamAssembler",
    "StreamDocument",
    "StreamLease",
]
