"""Scheduler: runs every AgentWorker on the poll interval, concurrently and bounded.

Each agent has its own loop task, started at a staggered offset inside the
interval so that thousands of agents do not all dial at the same instant. A
limiter (resized on reload) bounds how many agents are polled at once, each
tenant with its fair share of it (poller.daemon.limiter), and the wait for a
slot counts against the cycle deadline; a
cycle deadline (below the interval) bounds how long one agent's cycle may
take, so a hung agent never delays the others or its own next cycle.

No failure ends in silence: a cycle cut short by its deadline, or by an
unexpected error, still yields one result per due check (timeout or
internal_error for those that did not finish), an error is logged with its
traceback, and the agent's loop keeps running. Each loop is supervised: one
that ever ends while the scheduler runs (an error, or a cancellation nobody
asked for, as grpc.aio raises in calls whose channel closes) is logged with
its traceback, naming tenant and agent, and started again.
"""

from __future__ import annotations

import asyncio
import random
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

import structlog

from poller.agent.budget import ReassemblyBudget
from poller.config import AgentConfig, PollerConfig
from poller.daemon.dialgate import DialGate
from poller.daemon.limiter import Limiter
from poller.daemon.status import AgentState, AgentStatus, StatusBoard
from poller.daemon.worker import AgentWorker, failure_cause
from poller.delivery.result import PollResult, agent_outcome
from poller.identity.context import bound_tenant
from poller.identity.reasons import AgentUnreachable, Reason
from poller.logs import get_logger
from poller.metrics import PollerMetrics, default_metrics
from poller.timers import coarse_timeout, task_cancelling
from poller.trust.store import TrustStore

log = get_logger("poller.scheduler")

Publish = Callable[[PollResult], Awaitable[object]]
CycleDone = Callable[[], Awaitable[Mapping[str, Reason]]]  # the sinks that did not flush (HandlerRegistry.flush)


class PollGate(Protocol):
    """Who may poll an agent when (dynamic cluster mode: poller.cluster.node.ClusterNode)."""

    def next_slot(self, agent: str) -> float:
        """The monotonic time of the agent's next poll slot."""
        ...

    def slot_deadline(self, agent: str) -> float:
        """The monotonic time by which a poll in the current slot must be over."""
        ...

    async def may_poll(self, agent: AgentConfig) -> bool:
        """May this replica poll the agent now?"""
        ...


def first_poll_offset(name: str, agents: int, interval: float) -> float:
    """When an agent is first polled, in seconds after the scheduler starts: stable
    (same agent, same offset) inside the first stretch of time. Not the cluster's
    poller.cluster.slots.slot_offset, which is a phase in absolute time.

    The stretch grows with the number of agents (about 200 first dials a
    second) so a large fleet does not start with a handshake storm, while
    a small one is polled at once; it never exceeds the poll interval.
    """
    spread = min(interval, max(1.0, agents / 200))
    return (zlib.crc32(name.encode()) % 1000) / 1000 * spread


def polled_tenants(settings: PollerConfig) -> set[str]:
    """The tenants of the agents this poller dials (poll and dial slots are shared between them)."""
    return {agent.tenant for agent in settings.polled_agents}


class Scheduler:
    def __init__(
        self,
        settings: PollerConfig,
        trust: TrustStore,
        publish: Publish,
        metrics: PollerMetrics | None = None,
        *,
        cycle_done: CycleDone | None = None,
        gate: PollGate | None = None,
    ) -> None:
        self.settings = settings
        self.gate = gate
        self.trust = trust
        self.metrics = metrics if metrics is not None else default_metrics()
        self._publish = publish
        self._cycle_done = cycle_done  # e.g. make the cycle's results durable
        self._workers: dict[str, AgentWorker] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()
        self._sleeping: set[asyncio.Task[object]] = set()  # loops waiting for their next poll
        # Poll and dial slots are shared between the tenants polled (issue 18): one
        # tenant's hanging agents hold at most its share plus what it may borrow.
        self.limiter = Limiter(settings.max_concurrent_polls, tenants=polled_tenants(settings))
        # One bound for every stream being reassembled, a fair share per tenant,
        # so one tenant's hostile agents cannot exhaust the poller (issue 10).
        self.budget = ReassemblyBudget(settings.reassembly_budget, tenants=settings.tenants)
        # Dials at once, sized from how fast this machine proves agents (issue 10).
        # A dial that takes half its deadline means the poller is saturated:
        # slower than that, and the next ones risk timing out in its own queue.
        self.dial_gate = DialGate(target=max(0.5, settings.call_timeout / 2), tenants=polled_tenants(settings))
        # One jitter source for every agent's backoff: a Random holds 2.5 KiB of state,
        # which per agent was the largest Python object of a connection (issue 22).
        self.rng = random.Random()
        self.cycles_completed = 0
        self.cycles_late = 0
        # Each agent's outcome in its latest cycle since the last summary: (tenant, outcome).
        self._outcomes: dict[str, tuple[str, Reason]] = {}
        self.status = StatusBoard()  # what /status and the targets page show
        self._states: dict[str, tuple[AgentState, Reason | None]] = {}  # last logged, per agent

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
        worker = AgentWorker(
            agent, self.settings, self.trust, self.metrics, budget=self.budget, dial_gate=self.dial_gate, rng=self.rng
        )
        self._workers[agent.name] = worker
        if loop:
            self._tasks[agent.name] = asyncio.get_running_loop().create_task(self._supervise(worker), name=f"agent {agent.name}")
        log.debug("agent_started", agent=agent.name, tenant=agent.tenant, address=agent.address)

    async def _stop_agent(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._states.pop(name, None)
        await self._workers.pop(name).close()

    def _offset(self, name: str) -> float:
        return first_poll_offset(name, len(self.settings.polled_agents), self.settings.poll_interval)

    async def _supervise(self, worker: AgentWorker) -> None:
        """Run the agent's loop for as long as the scheduler runs.

        A loop that ends otherwise is a bug or a stray cancellation: it is
        logged with its traceback (the worker's logger names tenant and agent)
        and started again, at once if it had run a poll interval, else after one
        (a loop that fails at once must not spin).
        """
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                await self._loop(worker)
            except asyncio.CancelledError:
                if task_cancelling() or self._stopping.is_set():
                    raise  # stopped or removed: the one way a loop may end
                worker.log.error("agent_loop_failed", reason=Reason.INTERNAL_ERROR.value, exc_info=True)
            except Exception:
                worker.log.exception("agent_loop_failed", reason=Reason.INTERNAL_ERROR.value)
            else:
                if self._stopping.is_set():
                    return
                worker.log.error("agent_loop_failed", reason=Reason.INTERNAL_ERROR.value, why="the loop returned")
            if await self._wait_until(started + self.settings.poll_interval):
                return
            worker.log.info("agent_loop_restarted")

    async def _loop(self, worker: AgentWorker) -> None:
        gate = self.gate
        next_at = gate.next_slot(worker.agent.name) if gate else time.monotonic() + self._offset(worker.agent.name)
        while not self._stopping.is_set():
            if await self._wait_until(next_at):
                return
            started = time.monotonic()
            if gate is not None:  # cluster: poll only in slots this replica's lease covers
                try:
                    allowed = await gate.may_poll(worker.agent)
                except Exception:  # a bug in the gate: log it, keep this agent's loop alive
                    worker.log.exception("agent_cycle_failed", reason=Reason.INTERNAL_ERROR.value)
                    allowed = False
                if allowed:
                    await self._run_cycle_logged(worker, deadline=gate.slot_deadline(worker.agent.name))
                next_at = gate.next_slot(worker.agent.name)
                continue
            await self._run_cycle_logged(worker)
            interval = self.settings.poll_interval
            next_at += interval
            if time.monotonic() > next_at:  # overran: skip the missed slots, never burst
                self.cycles_late += 1
                next_at = started + interval * (1 + int((time.monotonic() - started) // interval))

    async def _wait_until(self, deadline: float) -> bool:
        """Wait for deadline; True if the scheduler is stopping instead.

        A plain sleep, which stop() cancels: waiting on the stop event instead
        would queue one waiter per agent on it, and each wake-up would scan
        that queue (quadratic: at 100,000 agents the loop could not keep up).
        """
        delay = deadline - time.monotonic()
        if delay <= 0 or self._stopping.is_set():
            return self._stopping.is_set()
        task = asyncio.current_task()
        assert task is not None
        self._sleeping.add(task)
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            if self._stopping.is_set():
                return True
            raise
        finally:
            self._sleeping.discard(task)
        return self._stopping.is_set()

    async def run_cycle(self, worker: AgentWorker, *, deadline: float | None = None) -> list[PollResult]:
        """One bounded cycle of one agent; its results are published before it returns.

        Every due check yields a result: TIMEOUT for those unfinished at the
        cycle deadline (or at the monotonic `deadline`, if that comes first),
        INTERNAL_ERROR for those an unexpected error cut short.
        """
        timeout = self.settings.cycle_timeout
        if deadline is not None:
            timeout = min(timeout, deadline - time.monotonic())
        # The binding puts the agent's name on the audit lines of its dials too.
        with structlog.contextvars.bound_contextvars(agent=worker.agent.name):
            started = time.monotonic()
            checks = worker.due_checks(started)  # before the cycle moves results_due on
            slot = self.limiter.slot(worker.agent.tenant)
            try:
                # coarse: thousands of these, no loop timer each; the wait for a poll slot
                # is inside it, so an agent queued too long gets `pending`, never a skip.
                async with coarse_timeout(timeout), slot:
                    results = await worker.cycle(checks)
            except TimeoutError:
                if slot.waiting:  # the poller's own poll slots, all held (the tenant's share)
                    results = worker.settle(checks, Reason.PENDING)
                    worker.log.info(
                        "agent_pending",
                        reason=Reason.PENDING.value,
                        waited_for="poll slot",
                        poll_slots=self.limiter.limit,
                        tenant_share=self.limiter.share(worker.agent.tenant),
                    )
                elif worker.waiting_to_dial:  # the poller's own dial queue, not the agent
                    results = worker.settle(checks, Reason.PENDING)
                    worker.log.info(
                        "agent_pending", reason=Reason.PENDING.value, waited_for="dial slot", dial_slots=self.dial_gate.limit
                    )
                else:
                    results = worker.settle(checks, Reason.TIMEOUT)
                    worker.log.warning("cycle_timeout", after=round(timeout, 3))
                    worker.last_failure = AgentUnreachable(
                        f"the cycle deadline ({timeout:.3g}s) passed before the agent answered", code="DEADLINE_EXCEEDED"
                    )
            except (Exception, asyncio.CancelledError) as exc:
                if isinstance(exc, asyncio.CancelledError) and task_cancelling():
                    raise  # the scheduler stops or the agent was removed
                # A bug, or a cancellation nobody asked for: still one result per check.
                results = worker.settle(checks, Reason.INTERNAL_ERROR)
                worker.log.error("agent_cycle_failed", reason=Reason.INTERNAL_ERROR.value, exc_info=True)
            record = self.status.record(worker, results, time.monotonic() - started)
            self._log_change(worker, record)
            labels = dict(tenant=worker.agent.tenant, agent=worker.agent.name)
            self.metrics.agent_failures.labels(**labels).set(record.consecutive_failures)
        # An agent without checks has no results: its outcome is what the cycle found of it
        # (a refused proof must not be counted ok, nor `run --once` exit 0).
        overall = agent_outcome(results) if results else _outcome_of(record)
        self._outcomes[worker.agent.name] = (worker.agent.tenant, overall)
        if results and overall is Reason.OK:
            self.metrics.agent_last_success.labels(**labels).set(time.time())
        for result in results:
            outcome = Reason.OK if result.available else (result.reason or Reason.UNAVAILABLE)
            self.metrics.polls.labels(tenant=result.tenant, outcome=outcome).inc()
            if result.context is None:
                await self._publish(result)
            else:
                with bound_tenant(result.context):  # handlers may ask current_tenant()
                    await self._publish(result)
        if self._cycle_done is not None and results:
            unflushed = await self._cycle_done()
            if unflushed:  # counted by the registry (run --once reads it); named here with its agent
                sink, reason = next(iter(unflushed.items()))
                worker.log.error("agent_cycle_not_durable", sink=sink, reason=reason.value, results=len(results))
        self.cycles_completed += 1
        return results

    def _log_change(self, worker: AgentWorker, status: AgentStatus) -> None:
        """One line when an agent's state (or its reason) changes, naming tenant,
        agent and the cause; nothing while it stays as it was.

        The first proof of an agent needs none: the audit log's identity_accepted is that line.
        """
        name = worker.agent.name
        now = (status.state, status.reason)
        before = self._states.get(name)
        if before == now:
            return
        self._states[name] = now
        if status.state is AgentState.PENDING or (before is None and status.state is AgentState.PROVEN):
            return
        fields = {"state": status.state.value, "previous": before[0].value if before is not None else None}
        if status.state is AgentState.PROVEN:
            worker.log.info("agent_recovered", **fields)
            return
        failure = worker.last_failure or (worker.down.error if worker.down is not None else None)
        cause = failure_cause(failure) or ("identity refused" if status.state is AgentState.REFUSED else None)
        event = "agent_refused" if status.state is AgentState.REFUSED else "agent_unreachable"
        worker.log.warning(event, **fields, reason=status.reason, cause=cause, detail=status.detail, retry_in=worker.retry_in)

    def note_outcome(self, agent: str, tenant: str, outcome: Reason) -> None:
        """An agent's outcome that was not a polled cycle (a push agent's push or silence)."""
        self._outcomes[agent] = (tenant, outcome)

    def take_tally(self) -> dict[str, dict[str, int]]:
        """Agents per tenant and outcome (their latest cycle) since the last call,
        e.g. {"acme-corp": {"ok": 2, "refused": 1}}, for the summary line."""
        tally: dict[str, dict[str, int]] = {}
        for tenant, outcome in self._outcomes.values():
            counts = tally.setdefault(tenant, {})
            counts[outcome.value] = counts.get(outcome.value, 0) + 1
        self._outcomes.clear()
        return {tenant: dict(sorted(counts.items())) for tenant, counts in sorted(tally.items())}

    async def _run_cycle_logged(self, worker: AgentWorker, *, deadline: float | None = None) -> list[PollResult]:
        """run_cycle, with a failure outside the cycle (e.g. a sink's) logged, not raised."""
        try:
            return await self.run_cycle(worker, deadline=deadline)
        except Exception:  # keep polling this agent and the others
            worker.log.exception("agent_cycle_failed", reason=Reason.INTERNAL_ERROR.value)
            return []

    async def run_once(self) -> list[PollResult]:
        """Every agent once, concurrently (bounded); for `run --once` and tests.

        A sink failing for one agent is logged; that agent adds no results here."""
        batches = await asyncio.gather(*(self._run_cycle_logged(w) for w in self._workers.values()))
        return [r for batch in batches for r in batch]

    async def apply(self, settings: PollerConfig) -> dict[str, list[str]]:
        """Switch to new settings: start added agents, stop removed ones, restart
        changed ones; the others keep their connections and schedules."""
        old = {agent.name: agent for agent in self.settings.polled_agents}
        new = {agent.name: agent for agent in settings.polled_agents}
        changes = name_changes(old, new)
        added, removed, changed = changes["added"], changes["removed"], changes["changed"]
        self.settings = settings
        self.limiter.resize(settings.max_concurrent_polls)
        self.limiter.set_tenants(polled_tenants(settings))
        self.dial_gate.set_tenants(polled_tenants(settings))
        self.budget.total_bytes = settings.reassembly_budget
        self.budget.set_tenants(settings.tenants)
        self.dial_gate.target = max(0.5, settings.call_timeout / 2)
        for worker in self._workers.values():
            worker.settings = settings
        for name in removed + changed:
            await self._stop_agent(name)
        for name in removed:  # a removed agent's series are no longer news
            for gauge in (self.metrics.agent_last_success, self.metrics.agent_failures):
                try:
                    gauge.remove(old[name].tenant, name)
                except KeyError:
                    pass
        for name in added + changed:
            self._start_agent(new[name])
        return changes

    async def stop(self, grace: float) -> None:
        """Stop scheduling; let in-flight cycles finish within grace, then cancel."""
        self._stopping.set()
        for sleeper in list(self._sleeping):  # waiting for their next slot: end them now
            sleeper.cancel()
        tasks = list(self._tasks.values())
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(w.close() for w in self._workers.values()), return_exceptions=True)
        self._tasks.clear()


def name_changes(before: Mapping[str, object], after: Mapping[str, object]) -> dict[str, list[str]]:
    """The names a reload added, removed and changed (in the order the configs list them)."""
    return {
        "added": [n for n in after if n not in before],
        "removed": [n for n in before if n not in after],
        "changed": [n for n in after if n in before and after[n] != before[n]],
    }


def _outcome_of(status: AgentStatus) -> Reason:
    """An agent's outcome from its board record, for a cycle with no results to judge by."""
    if status.state is AgentState.PROVEN:
        return Reason.OK
    if status.state is AgentState.REFUSED:
        return Reason.REFUSED
    if status.state is AgentState.PENDING:
        return Reason.PENDING
    return status.reason or Reason.UNREACHABLE
