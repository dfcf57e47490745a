"""AgentWorker: everything the daemon does for one agent.

Per cycle: make sure a proven connection exists (dialing with exponential
backoff and jitter after failures), check health (grpc.health.v1,
"AgentService"), run the status checks, and run the results checks that are
due. Every check yields one PollResult, including when the agent could not be
reached or its identity was refused, so silence never hides a problem.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

from grpc_health.v1 import health_pb2

from poller.agent.budget import ReassemblyBudget
from poller.agent.client import AgentClient
from poller.config import AgentConfig, CheckConfig, PollerConfig
from poller.daemon.dialgate import DialGate
from poller.delivery.result import PollResult
from poller.dial.dialer import AgentConnection, dial_agent
from poller.identity.context import TenantContext
from poller.identity.reasons import AgentFailure, IdentityRefused, InvalidPayload, Reason
from poller.logs import get_logger
from poller.metrics import PollerMetrics, default_metrics
from poller.trust.store import TrustStore

log = get_logger("poller.worker")

STREAM_TYPES = frozenset({"sweep", "sync"})


def backoff_delay(failures: int, *, initial: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with equal jitter: in [d/2, d] where d = min(cap, initial * 2^(n-1))."""
    delay = min(cap, initial * (2 ** max(0, failures - 1)))
    return rng.uniform(delay / 2, delay)


@dataclass
class _Down:
    """Why the agent has no connection now, and when to try again."""

    reason: Reason
    retry_at: float
    error: AgentFailure | None = None  # what the last dial said (detail, refused certificate)


class AgentWorker:
    def __init__(
        self,
        agent: AgentConfig,
        settings: PollerConfig,
        trust: TrustStore,
        metrics: PollerMetrics | None = None,
        *,
        budget: ReassemblyBudget | None = None,
        dial_gate: DialGate | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.agent = agent
        self.rng = rng if rng is not None else random.Random()  # the backoff's jitter; a seeded one in tests
        self.budget = budget  # the poller-wide stream reassembly budget (None: per-stream cap only)
        self.dial_gate = dial_gate  # bounds the daemon's concurrent dials (None: unbounded)
        self.waiting_to_dial = False  # waiting for a dial slot: the poller's delay, not the agent's
        self.metrics = metrics if metrics is not None else default_metrics()
        self.settings = settings
        self.trust = trust
        self.connection: AgentConnection | None = None
        self.client: AgentClient | None = None
        self.failures = 0
        self.down: _Down | None = None
        self.sequences: dict[tuple[str, str], str] = {}
        self.results_due: dict[tuple[str, str], float] = {}
        # Results of the current cycle's checks as each one finishes (None: no new
        # data), by position in the cycle's checks, so a cycle cut short keeps them.
        self._settled: dict[int, PollResult | None] = {}
        # What cut the current cycle short, when something did (for /status's detail
        # and the state-change log line); cleared at the start of every cycle.
        self.last_failure: AgentFailure | None = None
        self.log = log.bind(agent=agent.name, tenant=agent.tenant, address=agent.address)

    # -- connection ----------------------------------------------------------

    async def _connect(self) -> AgentClient | None:
        """A client over a proven connection, or None (self.down says why)."""
        if self.client is not None and self.connection is not None and self.connection.refusal is None:
            return self.client
        if self.connection is not None:
            await self._drop()
        now = time.monotonic()
        if self.down is not None and now < self.down.retry_at:
            return None
        try:
            self.connection = await self._dial()
        except AgentFailure as err:
            self._failed(err)
            return None
        ctx = self.connection.context
        self.client = AgentClient(
            self.connection, poller_id=self.settings.poller_id, timeout=self.settings.call_timeout, budget=self.budget
        )
        # No log line here: the scheduler logs each change of state (agent_recovered).
        self.failures = 0
        self.down = None
        self.metrics.connected_agents.labels(tenant=self.agent.tenant).inc()
        self.metrics.cert_expiry.labels(kind="agent", tenant=ctx.tenant, name=self.agent.name).set(ctx.not_after.timestamp())
        # No log line here: the audit log's identity_accepted is the one line per acceptance.
        return self.client

    async def _dial(self) -> AgentConnection:
        gate = self.dial_gate
        if gate is None:
            return await self._dial_now()
        self.waiting_to_dial = True  # stays set if the cycle ends while it waits
        async with gate.admit(self.agent.tenant):
            self.waiting_to_dial = False
            return await self._dial_now()

    async def _dial_now(self) -> AgentConnection:
        return await dial_agent(
            self.agent.address,
            tenant=self.agent.tenant,
            trust=self.trust,
            component=self.agent.component_id,
            partition=self.agent.partition,
            timeout=self.settings.call_timeout,
            metrics=self.metrics,
        )

    def _failed(self, err: AgentFailure) -> None:
        self.failures += 1
        delay = backoff_delay(self.failures, initial=self.settings.backoff_initial, cap=self.settings.backoff_max, rng=self.rng)
        self.down = _Down(reason=err.reason, retry_at=time.monotonic() + delay, error=err)
        self.last_failure = err
        # The scheduler logs the change of state once; the audit log has each decision.
        self.log.debug("agent_dial_failed", reason=err.reason, retry_in=round(delay, 1), failures=self.failures)

    @property
    def retry_in(self) -> float | None:
        """Seconds until the next dial while the agent is down (None when connected)."""
        return None if self.down is None else max(0.0, round(self.down.retry_at - time.monotonic(), 1))

    async def _drop(self) -> None:
        if self.connection is not None:
            self.metrics.connected_agents.labels(tenant=self.agent.tenant).dec()
            await self.connection.close()
        self.connection = None
        self.client = None

    async def close(self) -> None:
        await self._drop()

    # -- one cycle -------------------------------------------------------------

    def _result(self, check: CheckConfig, kind: str, **fields: Any) -> PollResult:
        return PollResult(
            tenant=self.agent.tenant,
            agent=self.agent.name,
            address=self.agent.address,
            poller_id=self.settings.poller_id,
            partition=self.settings.partition,
            kind=kind,
            service_name=check.service_name,
            service_type=check.service_type,
            **fields,
        )

    def unavailable(self, checks: list[CheckConfig], reason: Reason, context: TenantContext | None = None) -> list[PollResult]:
        """One available=false result per check, saying why."""
        return [self._result(c, _kind(c), available=False, reason=reason, context=context) for c in checks]

    def due_checks(self, now: float) -> list[CheckConfig]:
        """Status checks always; results checks when their interval has passed."""
        due = []
        for check in self.agent.checks:
            if check.results_interval is None or self.results_due.get(_key(check), 0.0) <= now:
                due.append(check)
        return due

    def settle(self, checks: list[CheckConfig], reason: Reason) -> list[PollResult]:
        """The results of a cycle cut short: those of the checks that finished,
        and an available=false result with `reason` for every other check."""
        finished = [r for i, r in sorted(self._settled.items()) if r is not None]
        rest = [c for i, c in enumerate(checks) if i not in self._settled]
        return finished + self.unavailable(rest, reason)

    async def cycle(self, checks: list[CheckConfig] | None = None) -> list[PollResult]:
        """Poll the agent once; one result per check of `checks` (default: those
        due now), except results checks whose data did not change."""
        now = time.monotonic()
        if checks is None:
            checks = self.due_checks(now)
        self._settled = {}
        self.waiting_to_dial = False
        self.last_failure = None
        client = await self._connect()
        if client is None:
            assert self.down is not None
            return self.unavailable(checks, self.down.reason)
        try:
            health = await client.check_health()
        except AgentFailure as err:
            return await self._call_failed(err, checks)
        if health.response.status != health_pb2.HealthCheckResponse.SERVING:
            return self.unavailable(checks, Reason.NOT_SERVING, health.context)
        if len(checks) == 1:  # the common case: no gather (and its tasks) per agent-cycle
            results = [await self._run_check(client, 0, checks[0], now)]
        else:
            results = await asyncio.gather(*(self._run_check(client, i, c, now) for i, c in enumerate(checks)))
        return [r for r in results if r is not None]

    async def _call_failed(self, err: AgentFailure, checks: list[CheckConfig]) -> list[PollResult]:
        self.last_failure = err
        if isinstance(err, IdentityRefused):
            await self._drop()
            self._failed(err)
        return self.unavailable(checks, err.outcome)

    async def _run_check(self, client: AgentClient, index: int, check: CheckConfig, now: float) -> PollResult | None:
        result = await self._check(client, check, now)
        self._settled[index] = result
        return result

    async def _check(self, client: AgentClient, check: CheckConfig, now: float) -> PollResult | None:
        kind = _kind(check)
        try:
            if kind == "status":
                return await self._status(client, check)
            self.results_due[_key(check)] = now + (check.results_interval or 0.0)
            if kind == "stream":
                return await self._stream(client, check)
            return await self._results(client, check)
        except AgentFailure as err:
            self.last_failure = err
            if err.reason is Reason.INCOMPLETE_STREAM:
                self.log.warning("stream_incomplete", check=check.service_name, detail=err.detail)
            if isinstance(err, IdentityRefused):
                await self._drop()
                self._failed(err)
            return self._result(check, kind, available=False, reason=err.outcome)
        except Exception:  # a bug must not cost the other checks their results
            self.log.exception("check_failed", check=check.service_name, reason=Reason.INTERNAL_ERROR.value)
            return self._result(check, kind, available=False, reason=Reason.INTERNAL_ERROR)

    async def _status(self, client: AgentClient, check: CheckConfig) -> PollResult:
        reply = await client.get_status(check.service_name, check.service_type, details=check.details, port=check.port)
        r = reply.response
        return self._result(
            check,
            "status",
            available=r.available,
            context=reply.context,
            payload=r.message,
            response_time_ns=r.response_time,
            reported_agent_id=r.agent_id,
        )

    async def _results(self, client: AgentClient, check: CheckConfig) -> PollResult | None:
        key = _key(check)
        reply = await client.get_results(
            check.service_name, check.service_type, details=check.details, last_sequence=self.sequences.get(key, "")
        )
        r = reply.response
        if r.current_sequence:
            self.sequences[key] = r.current_sequence
        if not r.has_new_data:
            return None  # nothing changed since last_sequence: nothing to forward
        return self._result(
            check,
            "results",
            available=r.available,
            context=reply.context,
            payload=r.data,
            response_time_ns=r.response_time,
            reported_agent_id=r.agent_id,
            current_sequence=r.current_sequence,
            agent_timestamp=r.timestamp,
        )

    async def _stream(self, client: AgentClient, check: CheckConfig) -> PollResult:
        key = _key(check)
        doc = await client.fetch_document(
            check.service_name, check.service_type, details=check.details, last_sequence=self.sequences.get(key, "")
        )
        if doc.current_sequence:
            self.sequences[key] = doc.current_sequence
        return self._result(
            check,
            "stream",
            available=True,
            context=doc.context,
            payload=doc.data,
            current_sequence=doc.current_sequence,
            agent_timestamp=doc.timestamp,
        )


def failure_cause(err: AgentFailure | None) -> str | None:
    """What kind of failure err is, for an operator: "identity refused",
    "timeout", "connection refused", "TLS failure", "call cut" (the poller
    closed the channel under a call), "invalid answer", or "connection failed".

    gRPC says what failed only in its details text, so that is read here.

    >>> from poller.identity.reasons import AgentUnreachable
    >>> failure_cause(AgentUnreachable("cannot connect to 10.0.0.5:50051: Connection refused"))
    'connection refused'
    """
    if err is None:
        return None
    if isinstance(err, IdentityRefused):
        return "identity refused"
    if isinstance(err, InvalidPayload) or err.reason is Reason.INCOMPLETE_STREAM:
        return "invalid answer"
    code = getattr(err, "code", None)
    detail = err.detail.lower()
    if code == "DEADLINE_EXCEEDED" or "timed out" in detail or "deadline" in detail:
        return "timeout"
    if code == "CANCELLED":
        return "call cut"
    if "connection refused" in detail:
        return "connection refused"
    if any(word in detail for word in ("tls", "ssl", "handshake", "certificate")):
        return "TLS failure"
    return "connection failed"


def _key(check: CheckConfig) -> tuple[str, str]:
    return (check.service_type, check.service_name)


def _kind(check: CheckConfig) -> str:
    if check.results_interval is None:
        return "status"
    return "stream" if check.service_type in STREAM_TYPES else "results"
