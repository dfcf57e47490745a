"""What the daemon knows about each agent right now: the operator's view.

One AgentStatus per configured agent, updated from each cycle's results and
the worker's connection state (the scheduler calls StatusBoard.record once per
cycle). An agent that has not finished its first cycle is `pending`. The
records are what `GET /status`, the targets page and `serviceradar-poller
status` show; they never decide anything.

>>> board = StatusBoard()
>>> board.record(worker, results, latency=0.012)  # doctest: +SKIP
>>> to_json(board.snapshot(settings.agents, tenant="acme-corp"))[0]["state"]  # doctest: +SKIP
'proven'
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any

from poller.config import AgentConfig
from poller.daemon.worker import AgentWorker
from poller.delivery.result import PollResult, agent_outcome
from poller.gateway.checks import check_type_for
from poller.identity import certinfo
from poller.identity.context import TenantContext, format_time
from poller.identity.reasons import IdentityRefused, Reason


class AgentState(StrEnum):
    """Where an agent stands, in the order an operator should look at them."""

    REFUSED = "refused"  # it answered with a certificate that does not prove the expected identity
    UNREACHABLE = "unreachable"  # no answer: connect, handshake or calls failed or timed out
    PENDING = "pending"  # its first cycle has not finished yet
    PROVEN = "proven"  # reached over a channel pinned to a proven identity

    def __str__(self) -> str:
        return self.value


EXPIRY_WARNING_DAYS = 14  # a certificate closer than this to its end is highlighted


def outcome_of(result: PollResult) -> Reason:
    """OK, or why the check gave no answer (the outcome label of poller_polls_total)."""
    return Reason.OK if result.available else (result.reason or Reason.UNAVAILABLE)


@dataclass(frozen=True, slots=True)
class CheckStatus:
    """The last outcome of one check of an agent."""

    service_name: str
    service_type: str
    kind: str
    outcome: Reason
    polled_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "service_name": self.service_name,
            "service_type": self.service_type,
            "kind": self.kind,
            "outcome": self.outcome.value,
            "last_poll": _rfc3339(self.polled_at),
        }


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """One agent's latest state; `agent` is the configuration it was recorded for.

    Immutable: each cycle makes a new one, so a snapshot taken on the event
    loop can be rendered in another thread while polling goes on.
    """

    agent: AgentConfig
    state: AgentState = AgentState.PENDING
    reason: Reason | None = None
    detail: str | None = None
    peer: Mapping[str, str] | None = None  # the refused certificate: subject, issuer, serial, fingerprint
    identity: TenantContext | None = None
    last_poll: float | None = None
    last_latency: float | None = None
    consecutive_failures: int = 0
    checks: Mapping[tuple[str, str], CheckStatus] = field(default_factory=dict)  # never mutated once made
    # A push agent (poller.gateway): when its last push was taken, and from where.
    last_push: float | None = None
    peer_address: str | None = None

    def to_json(self, now: datetime | None = None) -> dict[str, Any]:
        """The `GET /status` object of this agent (times RFC 3339 UTC, latency in seconds)."""
        identity = None
        if self.identity is not None:
            identity = {
                "cn": self.identity.cn,
                "serial": self.identity.serial,
                "not_after": _not_after(self.identity.not_after),
                "days_left": days_left(self.identity.not_after, now),
            }
        push = self.agent.push
        doc = {
            "name": self.agent.name,
            "address": (self.peer_address or "") if push else self.agent.address,
            "mode": "push" if push else "poll",
            "tenant": self.agent.tenant,
            "state": self.state.value,
            "reason": self.reason.value if self.reason is not None else None,
            "detail": self.detail,
            "peer": dict(self.peer) if self.peer is not None else None,
            "identity": identity,
            "last_poll": _rfc3339(self.last_poll) if self.last_poll is not None else None,
            "last_latency": round(self.last_latency, 6) if self.last_latency is not None else None,
            "consecutive_failures": self.consecutive_failures,
            "checks": [c.to_json() for _, c in sorted(self.checks.items())],
        }
        if push:
            doc["last_push"] = _rfc3339(self.last_push) if self.last_push is not None else None
            doc["peer_address"] = self.peer_address
        return doc


#: The checks a board row keeps beyond its agent's configured ones. A push agent names
#: its own statuses, and pushes some unasked (its sync status, sweep results, metrics
#: streams), which are shown; but one inventing a new name per status must not grow
#: the board, and every push's copy of the row, without end: the least recently
#: reported go first.
MAX_UNCONFIGURED_CHECKS = 32


def _merged_checks(
    previous: Mapping[tuple[str, str], CheckStatus], results: Sequence[PollResult], agent: AgentConfig
) -> dict[tuple[str, str], CheckStatus]:
    """previous with each result's check updated (moved last: the most recent); of the
    checks its config does not name, the MAX_UNCONFIGURED_CHECKS last reported are kept."""
    checks = dict(previous)
    for r in results:
        key = (r.service_type, r.service_name)
        checks.pop(key, None)
        checks[key] = CheckStatus(r.service_name, r.service_type, r.kind, outcome_of(r), r.polled_at)
    if len(checks) > MAX_UNCONFIGURED_CHECKS:  # else nothing can be over: no set made per push
        # By the whole key: a configured name under an invented type is another row. The
        # type an agent reports for a check is its checker's (tcp runs as port).
        configured = {(check_type_for(c.service_type), c.service_name) for c in agent.checks}
        configured.update((c.service_type, c.service_name) for c in agent.checks)
        unconfigured = [key for key in checks if key not in configured]
        for key in unconfigured[: max(0, len(unconfigured) - MAX_UNCONFIGURED_CHECKS)]:
            del checks[key]
    return checks


class StatusBoard:
    """Every agent's latest AgentStatus, keyed by agent name (written on the event loop)."""

    def __init__(self) -> None:
        self._records: dict[str, AgentStatus] = {}

    def record(self, worker: AgentWorker, results: Sequence[PollResult], latency: float) -> AgentStatus:
        """Fold one finished cycle of worker into a new record for its agent."""
        previous = self._records.get(worker.agent.name)
        if previous is None or previous.agent != worker.agent:  # new, or changed by a reload
            previous = AgentStatus(worker.agent)
        checks = _merged_checks(previous.checks, results, worker.agent)
        state, reason, detail, peer, identity = _classify(worker, results)
        # A failure is a cycle whose outcome (as run --once and poll_summary count it) is not ok.
        answered = state is AgentState.PROVEN and agent_outcome(list(results)) is Reason.OK
        status = AgentStatus(
            agent=worker.agent,
            state=state,
            reason=reason,
            detail=detail,
            peer=peer,
            identity=identity,
            last_poll=time.time(),
            last_latency=latency,
            consecutive_failures=0 if answered else previous.consecutive_failures + (0 if state is AgentState.PENDING else 1),
            checks=checks,
        )
        self._records[worker.agent.name] = status
        return status

    def record_push(
        self,
        agent: AgentConfig,
        *,
        state: AgentState,
        reason: Reason | None,
        identity: TenantContext | None,
        last_push: float | None,
        peer_address: str | None,
        results: Sequence[PollResult] = (),
        detail: str | None = None,
        peer: Mapping[str, str] | None = None,
    ) -> AgentStatus:
        """A push agent's new record: its state (from the gateway's liveness) and the
        checks its last push, or its silence, gave; `detail` and `peer` (the refused
        certificate) as a polled agent's refusal has them."""
        previous = self._records.get(agent.name)
        if previous is None or previous.agent != agent:
            previous = AgentStatus(agent)
        checks = _merged_checks(previous.checks, results, agent)
        answered = state is AgentState.PROVEN and agent_outcome(list(results)) is Reason.OK
        status = AgentStatus(
            agent=agent,
            state=state,
            reason=reason,
            detail=detail,
            peer=peer,
            identity=identity,
            last_poll=last_push,
            consecutive_failures=0 if answered else previous.consecutive_failures + (0 if state is AgentState.PENDING else 1),
            checks=checks,
            last_push=last_push,
            peer_address=peer_address,
        )
        self._records[agent.name] = status
        return status

    def get(self, name: str) -> AgentStatus | None:
        return self._records.get(name)

    def snapshot(self, agents: Iterable[AgentConfig], tenant: str | None = None) -> list[AgentStatus]:
        """The records of the configured agents (of one tenant if given), by tenant then name.

        Cheap (references only), for the event loop; render with to_json().
        Agents not polled yet are pending; records of agents no longer
        configured are dropped here.
        """
        agents = list(agents)
        if len(self._records) > len(agents):
            configured = {a.name for a in agents}
            for name in [n for n in self._records if n not in configured]:
                del self._records[name]
        out = []
        for agent in sorted(agents, key=lambda a: (a.tenant, a.name)):
            if tenant is not None and agent.tenant != tenant:
                continue
            status = self._records.get(agent.name)
            out.append(status if status is not None and status.agent == agent else AgentStatus(agent))
        return out


def to_json(statuses: Iterable[AgentStatus], now: datetime | None = None) -> list[dict[str, Any]]:
    """The `GET /status` document: one object per agent."""
    now = now or certinfo.utcnow()
    return [s.to_json(now) for s in statuses]


_Classified = tuple[AgentState, Reason | None, str | None, Mapping[str, str] | None, TenantContext | None]


def _classify(worker: AgentWorker, results: Sequence[PollResult]) -> _Classified:
    """State, reason, detail, refused certificate and identity, from the cycle and the worker."""
    down = worker.down
    if down is None and results and all(r.reason is Reason.PENDING for r in results):
        return AgentState.PENDING, Reason.PENDING, "waiting for a dial slot", None, None
    if down is not None:  # no connection: the last dial failed and it waits to retry
        state = AgentState.REFUSED if down.reason.is_refusal else AgentState.UNREACHABLE
        error = down.error
        peer = dict(error.peer) if isinstance(error, IdentityRefused) and error.peer else None
        return state, down.reason, error.detail if error is not None else None, peer, None
    connection = worker.connection
    identity = connection.context if connection is not None and connection.refusal is None else None
    if any(r.proven for r in results) or (not results and identity is not None):
        return AgentState.PROVEN, None, None, None, identity
    # Connected earlier, but nothing came back over the proven channel this cycle.
    failure = worker.last_failure
    detail = failure.detail if failure is not None else None
    reasons = [r.reason for r in results if r.reason is not None]
    refusal = next((r for r in reasons if r.is_refusal), None)
    if refusal is not None:
        peer = dict(failure.peer) if isinstance(failure, IdentityRefused) and failure.peer else None
        return AgentState.REFUSED, refusal, detail, peer, None
    return AgentState.UNREACHABLE, reasons[0] if reasons else Reason.UNREACHABLE, detail, None, identity


def days_left(not_after: datetime, now: datetime | None = None) -> float:
    """Days from now until not_after (negative once expired), to 2 decimals."""
    return round((not_after - (now or certinfo.utcnow())).total_seconds() / 86400, 2)


def _rfc3339(epoch: float) -> str:
    return _second(int(epoch))


# strftime was most of a /status render; agents polled in the same second, and
# the same certificate seen each render, share one formatting (bounded caches).
@lru_cache(maxsize=4096)
def _second(epoch: int) -> str:
    return format_time(datetime.fromtimestamp(epoch, UTC))


@lru_cache(maxsize=16384)
def _not_after(value: datetime) -> str:
    return format_time(value)
