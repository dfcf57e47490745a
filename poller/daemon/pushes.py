"""The daemon's push side: the agent gateway it serves, and every push agent's
place on the status board, in the metrics and in the results.

A push agent (`"push": true` in `agents`) is `pending` until its first push,
`proven` while it pushes, and `unreachable` (reason `timeout`) once its last
push is older than 2 of its intervals: then a log line names tenant and agent
and, every interval it stays silent, one `timeout` result per check is
published (so a NATS sink emits the same health events as for a polled
agent: unreachable, then recovered with its next push). A call whose request
lied (identity_mismatch, payload_mismatch, ...; a Hello as much as a push), a
push refused for what it carried, or any call refused for a certificate its
tenant's CA signed but that no longer holds (revoked, expired, ...), makes it
`refused` with that reason until it pushes correctly again; while it keeps
calling it is not silent, so each interval publishes one result per check
with that reason instead of `timeout`. Once it has not
called for 2 intervals it is unreachable, whether or not it ever pushed, and
the log line names it as it falls silent. With a `cluster` section the
replicas share push liveness (poller.gateway.replicas): an agent that
pushes to another replica, or that another replica answers for, is `pending`
here with the detail "answered by gateway replica <id>", never unreachable.

>>> side = PushSide(settings, trust, registry, board, budget, metrics, note_outcome)  # doctest: +SKIP
>>> await side.start()  # serves settings.gateway.listen  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from poller.agent.budget import ReassemblyBudget
from poller.cluster.node import ClusterNode
from poller.config import AgentConfig, CheckConfig, ConfigError, ConfigIssue, PollerConfig
from poller.daemon.status import AgentState, StatusBoard
from poller.daemon.unreported import UnreportedChecks
from poller.delivery.registry import Checked, Delivery, HandlerRegistry
from poller.delivery.result import PollResult, agent_outcome
from poller.gateway import (
    STALE_INTERVALS,
    AgentGateway,
    GatewayBounds,
    GatewayServer,
    PushEntry,
    PushRegistry,
    PushTracker,
    serve_gateway,
)
from poller.gateway.checks import check_type_for
from poller.gateway.liveness import live_interval
from poller.gateway.replicas import SharedPushLiveness
from poller.identity.context import TenantContext, format_time
from poller.identity.reasons import InvalidArgument, Reason
from poller.logs import get_logger
from poller.metrics import PollerMetrics
from poller.trust.serving import serving_problems
from poller.trust.store import TrustStore

__all__ = ["PushSide", "push_entries"]

log = get_logger("poller.daemon.pushes")

NoteOutcome = Callable[[str, str, Reason], None]  # (agent, tenant, outcome): the cycle tally
# Refusals of what an agent sent that are not identity refusals (Reason.is_refusal covers those).
_PAYLOAD_REFUSALS = frozenset({Reason.PAYLOAD_MISMATCH, Reason.LABEL_MISMATCH})


def _is_refused(outcome: Reason | None) -> bool:
    """A refusal of what the agent sent (the gateway's) or of its certificate (the interceptor's)."""
    return outcome is not None and (outcome.is_refusal or outcome in _PAYLOAD_REFUSALS)


def push_entries(settings: PollerConfig) -> list[PushEntry]:
    """The config's push agents as the gateway's push entries."""
    return [
        PushEntry(
            agent.name,
            tenant=agent.tenant,
            component=agent.component_id or agent.name,
            partition=agent.partition,
            checks=agent.checks,
            interval=settings.push_interval(agent),
            config_timestamp=int(time.time()),
        )
        for agent in settings.push_agents
    ]


class _BoardTracker(PushTracker):
    """The gateway's tracker, telling the daemon of every finished push call."""

    def __init__(self, on_push: Callable[[PushEntry, Reason], None]) -> None:
        super().__init__()
        self._on_push = on_push

    def pushed(self, entry: PushEntry, *, outcome: Reason, **fields: Any) -> None:
        # The rest as PushTracker.pushed takes them: one signature to keep, not two.
        super().pushed(entry, outcome=outcome, **fields)
        self._on_push(entry, outcome)


class PushSide:
    """The gateway of a daemon whose config has a `gateway` section."""

    def __init__(
        self,
        settings: PollerConfig,
        trust: TrustStore,
        registry: HandlerRegistry,
        board: StatusBoard,
        budget: ReassemblyBudget,
        metrics: PollerMetrics,
        note_outcome: NoteOutcome,
        *,
        cluster: ClusterNode | None = None,
    ) -> None:
        assert settings.gateway is not None
        self.settings = settings
        self.trust = trust
        self.registry = registry
        self.board = board
        self.metrics = metrics
        self.note_outcome = note_outcome
        self.tracker = _BoardTracker(self._pushed)
        self.pushes = PushRegistry(
            push_entries(settings), accept_unlisted=settings.gateway.accept_unlisted, default_interval=settings.poll_interval
        )
        self.gateway = AgentGateway(
            pushes=self.pushes,
            delivery=self,
            gateway_id=settings.poller_id,
            partition=settings.partition,
            bounds=GatewayBounds.from_config(settings.gateway),
            budget=budget,
            trust=trust,
            tracker=self.tracker,
            metrics=metrics,
        )
        self.server: GatewayServer | None = None
        self._results: dict[tuple[str, str], list[PollResult]] = {}  # of the push call being delivered
        self._silent_until: dict[str, float] = {}  # agent -> when its next timeout results are due
        self.unreported = UnreportedChecks()  # configured checks a pushing agent leaves out
        self._announced: set[str] = set()  # agents whose silence was logged since their last accepted push
        # Listed agents never heard from: since when this replica has waited, and whether it said so.
        self._pending_since: dict[str, float] = {}
        self._never_seen_said: dict[str, str] = {}  # agent -> the warning it was named in
        self._pushed_event = asyncio.Event()
        self._started = time.time()
        self.listening = asyncio.Event()  # set once the gateway serves
        self.collected: list[PollResult] | None = None  # run --once: the pushed results, when a list
        # Several replicas behind one address: who answers for an agent that is not connected here
        # (poller.gateway.replicas), once the cluster's bucket is open.
        self.cluster = cluster
        self.shared: SharedPushLiveness | None = None
        self._elsewhere: dict[str, str | None] = {}  # agent -> the replica that answers for it

    # -- serving -------------------------------------------------------------------------

    async def start(self) -> int:
        """Serve the gateway (mTLS, client certificate required); the bound port."""
        gateway = self.settings.gateway
        assert gateway is not None
        try:
            chain, key = gateway.cert.read_bytes(), gateway.key.read_bytes()
        except OSError as exc:
            where = "gateway.cert" if exc.filename == str(gateway.cert) else "gateway.key"
            raise ConfigError([ConfigIssue(where, f"cannot read {exc.filename}: {exc.strerror}")]) from None
        if problems := serving_problems(chain, key, where=str(gateway.cert)):
            raise ConfigError([ConfigIssue("gateway.cert", problem) for problem in problems])
        try:
            # The paths, not the bytes just checked: the files are re-read and checked at each reload
            # (poller.server.credentials), so a rotated certificate needs no restart.
            self.server = await serve_gateway(
                self.gateway, self.trust, gateway.listen, gateway.cert, gateway.key, audit_accepted=gateway.audit_accepted
            )
        except InvalidArgument as exc:
            raise ConfigError([ConfigIssue("gateway.listen", str(exc))]) from None
        self._started = time.time()
        self.listening.set()
        for tenant in {agent.tenant for agent in self.settings.push_agents}:  # 0, not "No data"
            self.metrics.gateway_pushes.labels(tenant=tenant, outcome=Reason.OK.value)
            self.metrics.gateway_connected.labels(tenant=tenant).set(0)
        for agent in self.settings.push_agents:
            self.board.record_push(
                agent, state=AgentState.PENDING, reason=Reason.PENDING, identity=None, last_push=None, peer_address=None
            )
        log.info(
            "gateway_listening",
            address=gateway.listen.rsplit(":", 1)[0] + f":{self.server.port}",
            push_agents=len(self.settings.push_agents),
            accept_unlisted=gateway.accept_unlisted,
        )
        return self.server.port

    async def stop(self, grace: float = 1.0) -> None:
        if self.shared is not None:
            await self.shared.stop()
            self.shared = None
        if self.server is not None:
            await self.server.stop(grace)
            self.server = None

    def apply(self, settings: PollerConfig) -> None:
        """A reloaded config: the push entries (the listen address and bounds need a restart)."""
        self.settings = settings
        entries = push_entries(settings)
        self.pushes.set_entries(entries)
        if settings.gateway is not None:
            self.pushes.accept_unlisted = settings.gateway.accept_unlisted
        self.pushes.default_interval = settings.poll_interval
        self.tracker.forget(entries)
        self.unreported.forget(e.name for e in entries)
        if self.shared is not None:
            self.shared.set_entries(entries)

    # -- the gateway's deliverer: results reach the registry, and the board sees them ------

    def check(self, result: PollResult) -> Checked | Delivery:
        return self.registry.check(result)

    async def deliver(self, result: PollResult, checked: Checked | None = None) -> Delivery:
        self._results.setdefault((result.tenant, result.agent), []).append(result)
        return await self.registry.deliver(result, checked)

    async def flush(self) -> Mapping[str, Reason]:
        return await self.registry.flush()  # the gateway refuses a push a sink did not make durable

    def _pushed(self, entry: PushEntry, outcome: Reason) -> None:
        results = self._results.pop((entry.tenant, entry.name), [])
        if self.collected is not None and outcome is Reason.OK:
            self.collected.extend(results)
        agent = self._agent(entry)
        if agent is None:  # admitted by accept_unlisted: not on the board
            return
        record = self.tracker.get(entry.tenant, entry.name)
        assert record is not None
        if outcome is Reason.OK:
            previous = self.board.get(agent.name)
            if previous is not None and previous.state is AgentState.UNREACHABLE:
                log.info("push_agent_recovered", tenant=agent.tenant, agent=agent.name, peer=record.peer)
                self.unreported.restart(agent.name)  # back from silence: its checks are waited for anew
            self._silent_until.pop(agent.name, None)
            self._announced.discard(agent.name)
            self.unreported.reported(agent, ((r.service_type, r.service_name) for r in results), now=time.time())
            state, reason = AgentState.PROVEN, None
            self.note_outcome(agent.name, agent.tenant, agent_outcome(results))
        elif _is_refused(outcome):
            state, reason = AgentState.REFUSED, outcome
            self.note_outcome(agent.name, agent.tenant, Reason.REFUSED)
        else:  # over a bound, an incomplete stream: the agent is there, its push was not taken
            state, reason = (AgentState.PROVEN if record.last_push is not None else AgentState.PENDING), outcome
        self.board.record_push(
            agent,
            state=state,
            reason=reason,
            identity=record.identity,
            last_push=record.last_push,
            peer_address=record.peer or None,
            results=results,
            detail=record.last_detail,
            peer=record.last_certificate,
        )
        self._pushed_event.set()

    def _agent(self, entry: PushEntry) -> AgentConfig | None:
        """The config's push agent of a listed entry; None for one admitted by accept_unlisted."""
        if not entry.listed:
            return None
        agent = self.settings.agents_by_name.get(entry.name)
        return agent if agent is not None and agent.push and agent.tenant == entry.tenant else None

    # -- silence ------------------------------------------------------------------------

    def entries(self) -> tuple[PushEntry, ...]:
        return tuple(e for e in self.pushes.entries if e.listed)

    async def watch(self, tick: float = 1.0) -> None:
        """Until cancelled: find push agents gone silent, and count connected ones."""
        while True:
            await asyncio.sleep(tick)
            await self.check_silence(time.time())

    async def check_silence(self, now: float) -> None:
        """Agents whose last push is older than 2 intervals: unreachable (timeout),
        with timeout results once per interval of silence; the connected gauge."""
        unlisted = self.pushes.default_interval if self.pushes.accept_unlisted else None
        for tenant, count in self.tracker.connected(self.entries(), now=now, unlisted_interval=unlisted).items():
            self.metrics.gateway_connected.labels(tenant=tenant).set(count)
        if unlisted is not None:  # long out of the connected window: no longer remembered
            self.tracker.forget_idle_unlisted(self.entries(), idle_since=now - 2 * STALE_INTERVALS * unlisted)
        self._share()
        for entry in self.entries():
            state = self._state(entry, now)
            # Refused while it calls, whether it ever pushed (unreachable) or not (pending).
            refusal = self._refused_lately(entry, now) if state in ("pending", "unreachable") else None
            if state == "pending" and refusal is None and self._last_refusal(entry) is not None:
                state = "unreachable"  # refused every time it called, and silent since: not pending again
            if state == "pending" and refusal is None:
                self._never_seen(entry, now)
            else:
                self._pending_since.pop(entry.name, None)
                self._never_seen_said.pop(entry.name, None)
            # By this replica's own pushes: another replica's are not reported here.
            if refusal is None and self.tracker.state_of(entry, now=now) == "ok":
                await self._unreported_checks(entry, now)
            if state != "unreachable" and refusal is None:
                continue
            due = self._silent_until.get(entry.name, 0.0)
            if now >= due:
                self._silent_until[entry.name] = now + entry.interval
                if refusal is not None:
                    await self.refused(entry, refusal, now)
                else:
                    await self.silent(entry, now)

    def _never_seen(self, entry: PushEntry, now: float) -> None:
        """A listed agent that has not pushed for 2 intervals since this replica began
        waiting for it (start, or the reload that listed it) stays `pending`, as listed
        agents are until their first push, but is named once, saying whether it calls
        at all: a typo in its entry, a wrong gateway address or certificate leave no
        other trace here, and an agent that says Hello but has nothing to push (no
        checks) is not silent. The board's detail follows what it does."""
        since = self._pending_since.setdefault(entry.name, now)
        waited = now - since
        if waited <= STALE_INTERVALS * entry.interval:
            return
        record = self.tracker.get(entry.tenant, entry.name)
        last_call = record.last_seen if record is not None else None
        if last_call is not None:
            event = "push_agent_not_pushing"
            ago = now - last_call
            detail = f"{entry.component} of {entry.tenant} calls (last {ago:.0f} s ago) but pushed nothing in {waited:.0f} s"
            if not entry.checks:
                detail += ": its entry lists no checks, and ServiceRadar's agent pushes nothing without one"
        else:
            event = "push_agent_not_seen"
            detail = f"no call from {entry.component} of {entry.tenant} in {waited:.0f} s"
        if self._never_seen_said.get(entry.name) != event:
            self._never_seen_said[entry.name] = event
            log.warning(
                event,
                tenant=entry.tenant,
                agent=entry.name,
                component=entry.component,
                partition=entry.partition,
                reason=Reason.PENDING.value,
                waited_s=round(waited, 3),
                detail=detail,
            )
        agent = self._agent(entry)
        if agent is not None:
            self.board.record_push(
                agent,
                state=AgentState.PENDING,
                reason=Reason.PENDING,
                identity=None,
                last_push=None,
                peer_address=(record.peer or None) if record is not None else None,
                detail=detail,
            )

    def _last_refusal(self, entry: PushEntry) -> tuple[Reason, float] | None:
        """Why the agent's last call was refused, and when; None if it was not refused."""
        record = self.tracker.get(entry.tenant, entry.name)
        if record is None or record.last_seen is None or record.last_outcome is None or not _is_refused(record.last_outcome):
            return None
        return record.last_outcome, record.last_seen

    def _refused_lately(self, entry: PushEntry, now: float) -> Reason | None:
        """The refusal of an agent that keeps calling but is refused (a revoked
        certificate, a lying request): not silent, so not `timeout`."""
        last = self._last_refusal(entry)
        if last is None or now - last[1] > STALE_INTERVALS * entry.interval:
            return None  # not refused, or refused once and silent since: unreachable after all
        return last[0]

    async def refused(self, entry: PushEntry, reason: Reason, now: float) -> list[PollResult]:
        """Publish a refused agent's results for this interval (one per check, with the
        refusal's reason) and keep it on the board as refused."""
        agent = self._agent(entry)
        if agent is None:
            return []
        return await self._unanswered(entry, agent, now, state=AgentState.REFUSED, reason=reason)

    def _share(self) -> None:
        """Start sharing push liveness once the cluster's bucket is open (dynamic cluster mode)."""
        if self.shared is None and self.cluster is not None and self.cluster.bucket is not None:
            self.shared = SharedPushLiveness(
                self.cluster.bucket,
                self.tracker,
                poller_id=self.settings.poller_id,
                members=self.cluster.live_members,
                # a sighting reaches the others well within an agent's 2-interval window
                tick=min([1.0, *(e.interval / 4 for e in self.pushes.entries)]),
            )
            self.shared.set_entries(self.pushes.entries)
            self.shared.start()

    def _state(self, entry: PushEntry, now: float) -> str:
        """This replica's answer for entry: its own tracker's, or with replicas the shared view,
        where an agent another replica answers for is on the board as pending there."""
        if self.shared is None:
            return self.tracker.state_of(entry, now=now)
        view = self.shared.view(entry, now=now)
        agent = self._agent(entry)
        if view.state != "elsewhere" or agent is None:
            self._elsewhere.pop(entry.name, None)
            return view.state
        if entry.name not in self._elsewhere or self._elsewhere[entry.name] != view.via:
            self._elsewhere[entry.name] = view.via
            self._silent_until.pop(entry.name, None)
            self._announced.discard(entry.name)  # another replica answers: a later silence is news again
            record = self.tracker.get(entry.tenant, entry.name)
            self.board.record_push(
                agent,
                state=AgentState.PENDING,
                reason=None,
                identity=None,
                last_push=record.last_push if record is not None else None,
                peer_address=None,
                detail=f"answered by gateway replica {view.via}",
            )
        return view.state

    async def silent(self, entry: PushEntry, now: float) -> list[PollResult]:
        """Publish the timeout results of a silent agent and put it on the board as unreachable."""
        agent = self._agent(entry)
        if agent is None:
            return []
        record = self.tracker.get(entry.tenant, entry.name)
        last = record.last_push if record is not None else None
        refusal = self._last_refusal(entry)
        if last is not None:
            why = f"no push for more than {STALE_INTERVALS} intervals"
        elif refusal is not None:
            why = f"refused {refusal[0].value} when it called, no call for more than {STALE_INTERVALS} intervals since"
        else:
            why = "no push"
        # An expired certificate is refused by the TLS handshake, before any call could
        # say so (grpcio verifies client certificates itself): say what is most likely.
        expired = _expired_note(record.identity if record is not None else None, now)
        if expired is not None:
            why = f"{why}; {expired}"
        # One line per silence: an agent refused at each of its calls, calling less often than
        # every 2 intervals, goes refused -> unreachable -> refused ...; named once until it pushes.
        if agent.name not in self._announced:
            self._announced.add(agent.name)
            log.warning(
                "push_agent_unreachable",
                tenant=agent.tenant,
                agent=agent.name,
                reason=Reason.TIMEOUT.value,
                last_push=round(last, 3) if last is not None else None,
                interval=entry.interval,
                why=why,
            )
        return await self._unanswered(entry, agent, now, state=AgentState.UNREACHABLE, reason=Reason.TIMEOUT, detail=expired)

    async def _unanswered(
        self, entry: PushEntry, agent: AgentConfig, now: float, *, state: AgentState, reason: Reason, detail: str | None = None
    ) -> list[PollResult]:
        """An interval without an accepted push: one unproven result per check with
        `reason`, delivered and flushed, and the agent on the board as `state`."""
        record = self.tracker.get(entry.tenant, entry.name)
        results = await self._publish(self.timeout_results(agent, now, reason=reason))
        self.board.record_push(
            agent,
            state=state,
            reason=reason,
            identity=None,
            last_push=record.last_push if record is not None else None,
            peer_address=(record.peer or None) if record is not None else None,
            results=results,
            detail=record.last_detail if record is not None and state is AgentState.REFUSED else detail,
            peer=record.last_certificate if record is not None and state is AgentState.REFUSED else None,
        )
        self.note_outcome(agent.name, agent.tenant, Reason.REFUSED if state is AgentState.REFUSED else reason)
        return results

    async def _publish(self, results: list[PollResult]) -> list[PollResult]:
        """Results the daemon makes for a push agent, delivered and flushed as a cycle's."""
        for result in results:
            await self.registry.deliver(result)
        await self.registry.flush()
        return results

    def timeout_results(
        self, agent: AgentConfig, now: float, *, reason: Reason = Reason.TIMEOUT, of: Iterable[CheckConfig] | None = None
    ) -> list[PollResult]:
        """One unproven `timeout` (or `reason`) result per check (one for the agent when it
        has none); `of`: for those checks only."""
        # The type the agent reports for a check is its checker's (tcp runs as port, ping as icmp):
        # a silence filed under the config's type would be a second row of the same check.
        chosen = agent.checks if of is None else tuple(of)
        checks: Iterable[tuple[str, str]] = [(c.service_name, check_type_for(c.service_type)) for c in chosen] or [
            ("push", "push")
        ]
        return [
            PollResult(
                tenant=agent.tenant,
                agent=agent.name,
                address="",
                poller_id=self.settings.poller_id,
                partition=self.settings.partition,
                kind="status",
                service_name=name,
                service_type=service_type,
                available=False,
                reason=reason,
                polled_at=now,
            )
            for name, service_type in checks
        ]

    async def _unreported_checks(self, entry: PushEntry, now: float) -> None:
        """A pushing agent's configured checks it has not reported for 2 of their intervals:
        named once, and a timeout result each interval (poller.daemon.unreported)."""
        agent = self._agent(entry)
        record = self.tracker.get(entry.tenant, entry.name)
        if agent is None or not agent.checks or record is None:
            return
        live = live_interval(record, entry)
        # One interval more than an agent's silence: a check's result comes up to its
        # timeout (at most half the interval) after the interval's start, and late is not missing.
        missing = self.unreported.missing(
            agent, window=lambda check: (STALE_INTERVALS + 1) * max(live, check.results_interval or 0.0), now=now
        )
        for check in self.unreported.newly_missing(agent.name, missing):
            service_type = check_type_for(check.service_type)
            log.warning(
                "push_check_not_reported",
                tenant=agent.tenant,
                agent=agent.name,
                check=check.service_name,
                service_type=service_type,
                reason=Reason.TIMEOUT.value,
                why=f"the agent pushes, but not this check for more than {STALE_INTERVALS + 1} intervals;"
                f" its release may not run {service_type} checks (docs/gateway.md)",
            )
        if not missing or not self.unreported.due(agent.name, now=now, interval=entry.interval):
            return
        results = await self._publish(self.timeout_results(agent, now, of=missing))
        self.board.record_push(
            agent,
            state=AgentState.PROVEN,
            reason=None,
            identity=record.identity,
            last_push=record.last_push,
            peer_address=record.peer or None,
            results=results,
        )

    # -- run --once ----------------------------------------------------------------------

    async def wait_once(self) -> list[PollResult]:
        """Wait up to one interval (the longest push agent's) for every push agent's
        first push; those that did not push at all are unreachable (timeout results)."""
        entries = self.entries()
        if not entries:
            return list(self.collected or ())
        deadline = time.monotonic() + max(e.interval for e in entries)
        while True:
            # An agent whose push call was refused has its outcome already (refused).
            waiting = [e for e in entries if (r := self.tracker.get(e.tenant, e.name)) is None or r.last_outcome is None]
            left = deadline - time.monotonic()
            if not waiting or left <= 0:
                break
            self._pushed_event.clear()
            try:
                async with asyncio.timeout(left):
                    await self._pushed_event.wait()
            except TimeoutError:
                pass
        now = time.time()
        out: list[PollResult] = list(self.collected or ())
        unheard = {e.name for e in waiting}  # a set: a list's `in` would be quadratic in the fleet
        for entry in entries:
            if entry.name in unheard:
                out.extend(await self.silent(entry, now))
            elif (refusal := self._refused_lately(entry, now)) is not None and not self._pushed_ok(entry):
                out.extend(await self.refused(entry, refusal, now))  # refused every time it called: a named refusal
        return out

    def _pushed_ok(self, entry: PushEntry) -> bool:
        record = self.tracker.get(entry.tenant, entry.name)
        return record is not None and record.last_push is not None


def _expired_note(identity: TenantContext | None, now: float) -> str | None:
    """What to say of a silent agent whose last proven certificate has expired since."""
    if identity is None or identity.not_after.timestamp() >= now:
        return None
    return (
        f"its certificate (serial {identity.serial}) expired at {format_time(identity.not_after)}: "
        "the gateway's TLS handshake refuses it before any call"
    )
