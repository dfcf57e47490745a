"""Where results go: the result type, channels, the payload filter, the handler
registry and the sinks.

- poller.delivery.result: PollResult, one check's outcome with its proof;
- poller.delivery.channels: a result's channel and the one token rule;
- poller.delivery.payload: the tenant-claim filter on agent payloads;
- poller.delivery.registry: HandlerRegistry, deny by default;
- poller.delivery.sink / file_sink: the Sink protocol and the file sink.

>>> from poller.delivery import channel_matches
>>> channel_matches("agents.*", "agents.status")
True
"""

from poller.delivery.channels import channel_for, channel_matches
from poller.delivery.file_sink import FileSink
from poller.delivery.payload import payload_tenant_claims
from poller.delivery.registry import Checked, Delivery, HandlerRegistry
from poller.delivery.result import PollResult, agent_outcome
from poller.delivery.sink import Sink

__all__ = [
    "Checked",
    "Delivery",
    "FileSink",
    "HandlerRegistry",
    "PollResult",
    "Sink",
    "agent_outcome",
    "channel_for",
    "channel_matches",
    "payload_tenant_claims",
]
