"""One agent's requests are read a few at a time.

grpc holds at most 1 MiB of a request nobody has asked for yet (flow control,
poller.server.read_after_proof), but once a handler asks for a message grpc
takes all of it, up to the receive limit (16 MiB). An agent admitted to 64
calls in flight could so have 64 messages of 16 MiB read at once: one valid
(stolen) key's 48 concurrent 15 MB pushes took the gateway to 2.0 GB, for
every tenant. Each message of an agent's calls is read holding one of its
`READS_PER_AGENT` places; its other calls wait their turn, each holding at most
what flow control lets it send ahead. What a read message then holds is
charged to the tenant's share of the reassembly budget.

ServiceRadar's agent pushes one request at a time (a ControlStream aside,
which reads under its own rule: one per agent, AgentGateway), so the places
cost an honest agent nothing.

>>> async def two_agents_reading():
...     reads = AgentReads(places=1)
...     async with reads.place("agent-001"):
...         async with reads.place("agent-002"):  # another agent's read does not wait
...             return reads.reading("agent-001"), reads.reading("agent-002"), reads.waiting("agent-001")
>>> asyncio.run(two_agents_reading())
(1, 1, 0)
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable
from types import TracebackType

__all__ = ["READS_PER_AGENT", "AgentReads"]

#: Messages of one agent read at once. Four: a push, a GetConfig and a stream's chunk
#: of ServiceRadar's agent never wait; one key holds at most 4 x 16 MiB being read.
READS_PER_AGENT = 4


class _Places:
    __slots__ = ("held", "waiters")

    def __init__(self) -> None:
        self.held = 0
        self.waiters: deque[asyncio.Future[None]] = deque()  # in turn; a freed place is handed to the first


class AgentReads:
    """Read places per agent (any hashable key: the gateway's is tenant, component,
    partition). A record exists only while one of the agent's reads holds or waits
    for a place, so the records are bounded by the calls in flight. A free place is
    taken without a turn of the event loop: this is on every push's path."""

    def __init__(self, places: int = READS_PER_AGENT) -> None:
        if places < 1:
            raise ValueError("an agent needs at least one read place")
        self.places = places
        self._agents: dict[Hashable, _Places] = {}

    def place(self, agent: Hashable) -> _Place:
        """`async with reads.place(agent):` hold one of `agent`'s read places while
        reading one message (waiting, in turn, while all are held). A cancelled wait
        takes none."""
        return _Place(self, agent)

    def reading(self, agent: Hashable) -> int:
        """How many of `agent`'s messages are being read now (places held)."""
        record = self._agents.get(agent)
        return record.held if record is not None else 0

    def waiting(self, agent: Hashable) -> int:
        """How many of `agent`'s reads wait for a place."""
        record = self._agents.get(agent)
        return len(record.waiters) if record is not None else 0

    async def _wait(self, agent: Hashable, record: _Places) -> None:
        turn = asyncio.get_running_loop().create_future()
        record.waiters.append(turn)
        try:
            await turn  # the place of a read that ended, handed over: `held` stays
        except BaseException:
            if turn.done() and not turn.cancelled():  # handed over as the wait was cancelled
                self._give_back(agent, record)
            else:
                # A place given back in the same turn as the cancel has already dropped this
                # turn (and perhaps the record, which a newer read may have made again).
                if turn in record.waiters:
                    record.waiters.remove(turn)
                if self._agents.get(agent) is record:
                    self._forget_if_idle(agent, record)
            raise

    def _give_back(self, agent: Hashable, record: _Places) -> None:
        while record.waiters:
            turn = record.waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        record.held -= 1
        self._forget_if_idle(agent, record)

    def _forget_if_idle(self, agent: Hashable, record: _Places) -> None:
        if not record.held and not record.waiters:
            del self._agents[agent]


class _Place:
    __slots__ = ("agent", "reads")

    def __init__(self, reads: AgentReads, agent: Hashable) -> None:
        self.reads, self.agent = reads, agent

    async def __aenter__(self) -> None:
        reads, agent = self.reads, self.agent
        record = reads._agents.get(agent)
        if record is None:
            record = reads._agents[agent] = _Places()
        if record.held < reads.places and not record.waiters:
            record.held += 1
            return
        await reads._wait(agent, record)

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.reads._give_back(self.agent, self.reads._agents[self.agent])
