"""Moved to poller.delivery (FileSink, Sink) and poller.testing (MemorySink); this
name stays so that existing imports keep working."""

from poller.delivery.file_sink import FileSink
from poller.delivery.sink import Sink
from poller.testing.memory_sink import MemorySink

__all__ = ["FileSink", "MemorySink", "Sink"]
