"""Reassembly of a StreamResults stream into one complete document.

A document is complete only when a chunk with is_final arrives, chunk
indices run 0, 1, 2, ... without gaps or repeats, and total_chunks (when the
agent sets it) agrees. Anything else is an IncompleteStream: the partial data
is never passed on as if it were whole.

>>> asm = StreamAssembler()
>>> asm.add(pb.ResultsChunk(data=b'{"a":', chunk_index=0, total_chunks=2))  # doctest: +SKIP
>>> asm.add(pb.ResultsChunk(data=b'1}', chunk_index=1, total_chunks=2, is_final=True))  # doctest: +SKIP
>>> asm.data  # doctest: +SKIP
b'{"a":1}'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from poller.identity.reasons import IncompleteStream
from poller.proto import monitoring_pb2 as pb

if TYPE_CHECKING:
    from poller.agent.budget import StreamLease

# IncompleteStream lives with the other AgentFailures; re-exported for existing imports.
__all__ = ["DEFAULT_MAX_BYTES", "IncompleteStream", "StreamAssembler"]

DEFAULT_MAX_BYTES = 256 * 1024 * 1024


class StreamAssembler:
    """Chunks of one stream, checked as they arrive.

    max_bytes caps this stream; lease (from a ReassemblyBudget) also holds it
    to its tenant's share of the poller-wide budget. The caller releases the
    lease when the document has been handed on or refused.
    """

    def __init__(self, *, max_bytes: int = DEFAULT_MAX_BYTES, lease: StreamLease | None = None) -> None:
        self._lease = lease
        self._parts: list[bytes] = []
        self._size = 0
        self._max = max_bytes
        self._total = 0
        self.final = False
        self.current_sequence = ""
        self.timestamp = 0

    @property
    def chunks(self) -> int:
        return len(self._parts)

    def add(self, chunk: pb.ResultsChunk) -> None:
        if self.final:
            raise IncompleteStream(f"chunk {chunk.chunk_index} arrived after the final chunk")
        expected = len(self._parts)
        if chunk.chunk_index != expected:
            raise IncompleteStream(f"chunk_index {chunk.chunk_index} where {expected} was expected")
        if chunk.total_chunks < 0:
            raise IncompleteStream(f"negative total_chunks {chunk.total_chunks}")
        if chunk.total_chunks:
            if self._total and chunk.total_chunks != self._total:
                raise IncompleteStream(f"total_chunks changed from {self._total} to {chunk.total_chunks}")
            self._total = chunk.total_chunks
            if chunk.chunk_index >= self._total:
                raise IncompleteStream(f"chunk_index {chunk.chunk_index} beyond total_chunks {self._total}")
        self._size += len(chunk.data)
        if self._size > self._max:
            raise IncompleteStream(f"document larger than {self._max} bytes")
        if self._lease is not None:
            self._lease.grow(len(chunk.data))
        self._parts.append(chunk.data)
        if chunk.current_sequence:
            self.current_sequence = chunk.current_sequence
        if chunk.timestamp:
            self.timestamp = chunk.timestamp
        if chunk.is_final:
            if self._total and len(self._parts) != self._total:
                raise IncompleteStream(f"final chunk after {len(self._parts)} of {self._total} chunks")
            self.final = True

    @property
    def data(self) -> bytes:
        """The whole document; IncompleteStream if is_final has not arrived."""
        if not self.final:
            raise IncompleteStream(f"stream ended after {len(self._parts)} chunks without is_final")
        return b"".join(self._parts)
