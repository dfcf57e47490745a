"""Scheduler: runs every AgentWorker on the poll interval, concurrently and bounded.

Each agent has its own loop task, started at a staggered offset inside the
interval so that thousands of agents do not all dial at the same instant. A
semaphore bounds how many agents are polled at once; a cycle deadline (below
the interval) bounds how long one agent's cycle may take, so a hung agent
never delays the others or its own next cycle.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

from poller import metrics
from poller.daemon.config import AgentConfig, PollerConfig
from poller.daemon.results import PollResult
from poller.daemon.worker import AgentWorker
from poller.identity.context import bound_tenant
from poller.trust.store import TrustStore

log = structlog.get_logger("poller.scheduler")

Publish = Callable[[PollResult], Awaitable[None]]


class PollGate(Protocol):
    """Who may poll an agent when (dynamic cluster mode: poller.cluster.ClusterNode)."""

    def next_slot(self, agent: str) -> float:
        """The monotonic time of the agent's next poll slot."""
        ...

    def slot_deadline(self, agent: str) -> float:
        """The monotonic time by which a poll in the current slot must be over."""
        ...

    async def may_poll(self, agent: AgentConfig) -> bool:
        """May this replica poll the agent now?"""
        ...


class Scheduler:
    def __init__(self, settings: PollerConfig, trust: TrustStore, publish: Publish, gate: PollGate | None = None) -> None:
        self.settings = settings
        self.gate = gate
        self.trust = trust
        self._publish = publish
        self._workers: dict[str, AgentWorker] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()
        self._semaphore = asyncio.Semaphore(settings.max_concurrent_polls)
        self.cycles_completed = 0
        self.cycles_late = 0
        self._tally: Counter[tuple[str, str]] = Counter()

    @property
    def agent_names(self) -> list[str]:
        return sorted(self._workers)

    def worker(self, name: str) -> AgentWorker:
        return self._workers[name]

    def start(self, *, loops: bool = True) -> None:
        """Make a worker per agent; with loops, each runs on the poll interval."""
        for agent in self.settings.polled_agents:
            self._start_agent(agent, loop=loops)

    def _start_agent(self, agent: AgentConfig, *, loop: bool = True) -> None:
        worker = AgentWorker(agent, self.settings, self.trust)
        self._workers[agent.name] = worker
        if loop:
            self._tasks[agent.name] = asyncio.get_running_loop().create_task(self._loop(worker), name=f"agent {agent.name}")
        log.debug("agent_started", agent=agent.name, tenant=agent.tenant, address=agent.address)

    async def _stop_agent(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._workers.pop(name).close()

    def _offset(self, name: str) -> float:
        """A stable slot (same agent, same slot) inside the first stretch of time.

        The stretch grows with the number of agents (about 200 first dials a
        second) so a large fleet does not start with a handshake storm, while
        a small one is polled at once; it never exceeds the poll interval.
        """
        spread = min(self.settings.poll_interval, max(1.0, len(self.settings.polled_agents) / 200))
        return (zlib.crc32(name.encode()) % 1000) / 1000 * spread

    async def _loop(self, worker: AgentWorker) -> None:
        gate = self.gate
        next_at = gate.next_slot(worker.agent.name) if gate else time.monotonic() + self._offset(worker.agent.name)
        while not self._stopping.is_set():
            if await self._wait_until(next_at):
                return
            started = time.monotonic()
            if gate is not None:  # cluster: poll only in slots whose lease this replica holds
                if await gate.may_poll(worker.agent):  # a poll never outlasts its slot
                    await self.run_cycle(worker, deadline=gate.slot_deadline(worker.agent.name))
                next_at = gate.next_slot(worker.agent.name)
                continue
            await self.run_cycle(worker)
            interval = self.settings.poll_interval
            next_at += interval
            if time.monotonic() > next_at:  # overran: skip the missed slots, never burst
                self.cycles_late += 1
                next_at = started + interval * (1 + int((time.monotonic() - started) // interval))

    async def _wait_until(self, deadline: float) -> bool:
        """Wait for deadline; True if the scheduler is stopping instead."""
        delay = deadline - time.monotonic()
        if delay <= 0:
            return self._stopping.is_set()
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        except TimeoutError:
            return False
        return True

    async def run_cycle(self, worker: AgentWorker, *, deadline: float | None = None) -> list[PollResult]:
        """One bounded cycle of one agent (ended at the monotonic `deadline` if that
        comes first); its results are published before it returns."""
        timeout = self.settings.cycle_timeout
        if deadline is not None:
            timeout = min(timeout, deadline - time.monotonic())
        # The binding puts the agent's name on the audit lines of its dials too.
        with structlog.contextvars.bound_contextvars(agent=worker.agent.name):
            async with self._semaphore:
                try:
                    async with asyncio.timeout(timeout):
                        results = await worker.cycle()
                except TimeoutError:
                    results = worker.unavailable(worker.due_checks(time.monotonic()), "timeout")
                    worker.log.warning("cycle_timeout", after=round(timeout, 3))
        for result in results:
            outcome = "ok" if result.available else (result.reason or "unavailable")
            metrics.POLLS.labels(tenant=result.tenant, outcome=outcome).inc()
            self._tally[(result.tenant, outcome)] += 1
            if result.context is None:
                await self._publish(result)
            else:
                with bound_tenant(result.context):  # handlers may ask current_tenant()
                    await self._publish(result)
        self.cycles_completed += 1
        return results

    def take_tally(self) -> dict[str, dict[str, int]]:
        """Results per tenant and outcome since the last call (for the summary line)."""
        tally: dict[str, dict[str, int]] = {}
        for (tenant, outcome), n in sorted(self._tally.items()):
            tally.setdefault(tenant, {})[outcome] = n
        self._tally.clear()
        return tally

    async def run_once(self) -> list[PollResult]:
        """Every agent once, concurrently (bounded); for `run --once` and tests."""
        batches = await asyncio.gather(*(self.run_cycle(w) for w in self._workers.values()))
        return [r for batch in batches for r in batch]

    async def apply(self, settings: PollerConfig) -> dict[str, list[str]]:
        """Switch to new settings: start added agents, stop removed ones, restart
        changed ones; the others keep their connections and schedules."""
        old = {agent.name: agent for agent in self.settings.polled_agents}
        new = {agent.name: agent for agent in settings.polled_agents}
        removed = [n for n in old if n not in new]
        added = [n for n in new if n not in old]
        changed = [n for n in new if n in old and new[n] != old[n]]
        self.settings = settings
        for worker in self._workers.values():
            worker.settings = settings
        for name in removed + changed:
            await self._stop_agent(name)
        for name in added + changed:
            self._start_agent(new[name])
        return {"added": added, "removed": removed, "changed": changed}

    async def stop(self, grace: float) -> None:
        """Stop scheduling; let in-flight cycles finish within grace, then cancel."""
        self._stopping.set()
        tasks = list(self._tasks.values())
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(w.close() for w in self._workers.values()), return_exceptions=True)
        self._tasks.clear()
