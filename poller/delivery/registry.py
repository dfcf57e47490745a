"""The handler registry: who may act on a result, decided by policy, deny by default.

Handlers (and sinks, which are handlers) are registered for a channel pattern
with a policy and a scope:

- `tenant="acme-corp"`: bound to one tenant. The registry, not the handler,
  guarantees it only ever receives that tenant's proven results.
- `platform=<PlatformIdentity>`: may receive any tenant's results (and the
  unproven ones: unreachable, refused). Every delivery to a non-local
  platform identity (an administrator) is audited with the identity and the
  tenant touched; the poller's own sinks use its local identity.

For each result, deliver():

1. maps it to its channel (`agents.status`, `agents.results.<service_type>`,
   `events.poller.health`, `pollers.heartbeat`; poller.delivery.channels);
2. refuses it (`payload_mismatch`, audited) when its payload names a tenant
   (`tenant`, `tenant_id`, `tenant_slug` anywhere in its JSON) other than the
   proven one, or carries a payload without any proof (poller.delivery.payload);
3. compares the agent's own labels (`agent_id`, `partition`) with the proof:
   a disagreement is counted and logged, and refused (`label_mismatch`) only
   when strict labels are asked for that result's agent;
4. runs every handler whose pattern, scope and policy allow the result, each
   in its own task with current_tenant() bound to the result's proven
   context, each bounded by its timeout: a raising or hanging handler is
   counted and logged with the tenant and its name, the others still run,
   and deliver() never waits longer than the largest timeout;
5. refuses (`no_handler`) a result that no handler allows. Every refusal is
   counted in poller_results_refused_total{tenant,channel,reason} and logged.

check() runs steps 1-3 and 5 alone (no handler runs), and deliver() takes
what it answers without checking again: how the gateway refuses a whole
request before it delivers any of it.

>>> registry = HandlerRegistry(timeout=2.0)  # doctest: +SKIP
>>> registry.register("agents.status", on_status, tenant="acme-corp", policy=same_tenant("acme-corp"))  # doctest: +SKIP
>>> registry.register(">", FileSink(Path("data")), platform=local_identity, policy=platform_admin())  # doctest: +SKIP
>>> await registry.deliver(result)  # doctest: +SKIP
Delivery(channel='agents.status', refused=None, delivered=('on_status', 'FileSink'), failed={})
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, cast

from poller import eager
from poller.delivery.channels import CHANNEL_RESULTS, channel_for, check_pattern, matches
from poller.delivery.payload import payload_cost_refusal, payload_needs_reading, payload_refusal
from poller.delivery.result import PollResult
from poller.delivery.sink import Sink
from poller.identity.context import _current
from poller.identity.names import check_label
from poller.identity.platform import PlatformIdentity
from poller.identity.reasons import InvalidArgument, Reason, ResultRefused
from poller.logs import get_logger
from poller.metrics import PollerMetrics, default_metrics
from poller.policy import Access, Policy
from poller.timers import wait_done

__all__ = ["DEFAULT_HANDLER_TIMEOUT", "Checked", "Delivery", "Handler", "HandlerRegistry", "Registration"]

log = get_logger("poller.handlers")
audit_log = get_logger("poller.audit")

DEFAULT_HANDLER_TIMEOUT = 5.0
_MAX_REMEMBERED = 10_000  # label disagreements remembered so each is logged once
# A results channel is named by the agent's service type: the distinct ones a refusal
# counts under are capped per tenant, the rest counted as "other", so that an agent
# inventing a type per refused result cannot mint metric series without end (nor, the
# cap being its tenant's, take the names of another tenant's channels).
MAX_RESULTS_CHANNEL_LABELS = 64
_NONE_FAILED: Mapping[str, Reason] = MappingProxyType({})  # flush()'s usual answer, not built per flush


# --------------------------------------------------------------------------- registry


Handler = Callable[[PollResult], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class Registration:
    """One registered handler: where it listens, who it acts as, what its policy allows."""

    name: str
    pattern: str
    policy: Policy
    tenant: str | None
    platform: PlatformIdentity | None
    timeout: float
    call: Handler = field(repr=False)
    target: object = field(repr=False)
    tokens: tuple[str, ...] = field(repr=False, default=())
    threaded: bool = field(repr=False, default=False)
    sink: Sink | None = field(repr=False, default=None)  # decided once: a runtime Protocol check is slow
    eager: bool = field(repr=False, default=False)  # started in the caller's task (poller.eager)

    def admits(self, result: PollResult, channel: tuple[str, ...]) -> bool:
        """Pattern and scope (the registry's tenant binding); the policy comes after."""
        if not matches(self.tokens, channel):
            return False
        if self.tenant is not None:
            return result.context is not None and result.context.tenant == self.tenant
        return True


@dataclass(frozen=True, slots=True)
class Delivery:
    """What became of one result: refused with a reason, or the handlers it reached."""

    channel: str | None
    refused: Reason | None = None
    delivered: tuple[str, ...] = ()
    failed: Mapping[str, Reason] = field(default_factory=dict)
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.refused is None and not self.failed


@dataclass(frozen=True, slots=True)
class Checked:
    """A result that passed the registry's checks (HandlerRegistry.check): its
    channel and the handlers allowed to have it, which deliver() then runs."""

    result: PollResult  # the one result it was made for: deliver() takes it for no other
    channel: str
    handlers: list[Registration]


class HandlerRegistry:
    """Handlers by channel with policies; deny by default. See the module doc.

    `timeout`: the default per-handler timeout in seconds. `strict_labels`:
    True, or a function of the result, saying when a reported agent_id or
    partition that disagrees with the proof refuses the result. `metrics`:
    where the counters go (the daemon passes the registry it serves).
    """

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_HANDLER_TIMEOUT,
        strict_labels: bool | Callable[[PollResult], bool] = False,
        metrics: PollerMetrics | None = None,
    ) -> None:
        if timeout <= 0:
            raise InvalidArgument("timeout must be positive")
        self.timeout = timeout
        self.metrics = metrics if metrics is not None else default_metrics()
        self._strict = strict_labels
        self._registrations: dict[str, Registration] = {}
        self._abandoned: set[asyncio.Future[Any]] = set()
        self._mismatches_seen: set[tuple[str, str, str, str]] = set()
        self._results_channel_labels: dict[str, set[str]] = {}  # per tenant
        # Per handler name: deliveries, flushes and closes that failed or timed out
        # (what `run --once` reads to say results were not durably handed over).
        self.failures: collections.Counter[str] = collections.Counter()
        self._sink_list: tuple[tuple[Registration, Sink], ...] | None = None

    @property
    def registrations(self) -> tuple[Registration, ...]:
        return tuple(self._registrations.values())

    def register(
        self,
        channel: str,
        handler: Handler | Sink,
        *,
        policy: Policy,
        tenant: str | None = None,
        platform: PlatformIdentity | None = None,
        name: str | None = None,
        timeout: float | None = None,
        eager: bool | None = None,
    ) -> Registration:
        """Register handler (an async function of a PollResult, or a sink) for a channel pattern.

        Exactly one scope: `tenant` (bound to that tenant) or `platform` (a
        proven platform identity; cross-tenant, audited unless local). A plain
        (non-async) function runs in a worker thread so it cannot block polling.
        `eager` (default: the handler's or sink's own `eager` attribute, else
        False): run it up to its first await in the delivering task, and give it
        a task only if it waits (poller.eager); only for code that neither enters
        asyncio.timeout() nor reads asyncio.current_task() before its first await.
        """
        if not isinstance(policy, Policy):
            raise TypeError("policy must be a poller.policy Policy (same_tenant, tenant_in, ... all_of, any_of)")
        if (tenant is None) == (platform is None):
            raise InvalidArgument("give exactly one scope: tenant=<slug> (bound to it) or platform=<PlatformIdentity>")
        if tenant is not None:
            check_label(tenant, "tenant slug")
        if platform is not None and not isinstance(platform, PlatformIdentity):
            raise TypeError("platform must be a proven PlatformIdentity")
        tokens = check_pattern(channel)
        if isinstance(handler, Sink):
            call: Handler = handler.publish
            default_name = type(handler).__name__
        elif callable(handler):
            call = handler
            default_name = getattr(handler, "__qualname__", type(handler).__name__)
        else:
            raise TypeError(f"{handler!r} is neither a callable nor a sink")
        name = name or default_name
        if name in self._registrations:
            raise InvalidArgument(f"a handler named {name!r} is already registered")
        limit = self.timeout if timeout is None else timeout
        if limit <= 0:
            raise InvalidArgument("timeout must be positive")
        registration = Registration(
            name=name,
            pattern=channel,
            policy=policy,
            tenant=tenant,
            platform=platform,
            timeout=limit,
            call=call,
            target=handler,
            tokens=tokens,
            threaded=not _is_async(call),
            sink=handler if isinstance(handler, Sink) else None,
            eager=bool(getattr(handler, "eager", False) if eager is None else eager),
        )
        self._registrations[name] = registration
        self._sink_list = None
        log.info(
            "handler_registered",
            handler=name,
            channel=channel,
            tenant=tenant,
            platform=platform and platform.cn,
            policy=repr(policy),
        )
        return registration

    def unregister(self, name: str) -> None:
        self._registrations.pop(name, None)
        self._sink_list = None

    # -- delivery ------------------------------------------------------------------

    async def deliver(self, result: PollResult, checked: Checked | None = None) -> Delivery:
        """Deliver one result to every handler that may have it; see the module doc.

        `checked`: what check() answered for this very result, to run its handlers
        without checking it again (a caller that checks a whole batch first)."""
        if checked is None:
            outcome = self.check(result)
            if isinstance(outcome, Delivery):
                return outcome
            checked = outcome
        elif checked.result is not result:
            # Another result's handlers and checks (maybe another tenant's): never a shortcut.
            raise InvalidArgument("deliver(result, checked): checked was made by check() for another result")
        channel, chosen = checked.channel, checked.handlers
        if len(chosen) == 1:  # the common case (the daemon's sink, the gateway's): no gather task
            only = chosen[0]
            reason = await self._run(only, result, channel)
            if reason is None:
                return Delivery(channel=channel, delivered=(only.name,))
            return Delivery(channel=channel, failed={only.name: reason})
        outcomes = await asyncio.gather(*(self._run(r, result, channel) for r in chosen))
        failed = {r.name: reason for r, reason in zip(chosen, outcomes, strict=True) if reason is not None}
        delivered = tuple(r.name for r, reason in zip(chosen, outcomes, strict=True) if reason is None)
        return Delivery(channel=channel, delivered=delivered, failed=failed)

    def check(self, result: PollResult) -> Checked | Delivery:
        """deliver()'s steps 1-3 and 5 without running a handler: its channel, the
        payload and label checks, the handlers whose policy allows it. A refusal is
        logged and counted as deliver() would, and answered as its Delivery;
        otherwise the Checked to hand to deliver(). The gateway checks every result
        of a request before it delivers any, so a request its checks refuse is not
        delivered at all (a refused push is pushed again: none of it is filed twice)."""
        try:
            channel = channel_for(result)
        except ResultRefused as err:
            return self._refuse(result, None, err.reason, err.detail)
        cost = payload_cost_refusal(result.payload)
        if cost is not None:  # before anything decodes it: see poller.delivery.payload.MAX_NODES
            return self._refuse(result, channel, Reason.INVALID_PAYLOAD, cost, audited=True)
        if result.context is not None and not payload_needs_reading(result.payload):
            # Its bytes cannot spell a tenant key or a label: nothing either check looks
            # for, so it is not decoded here (the sinks read it themselves).
            document = None
        else:
            document = result.payload_json()
            refusal = payload_refusal(result, document)
            if refusal is not None:
                return self._refuse(result, channel, Reason.PAYLOAD_MISMATCH, refusal, audited=True)
        refusal = self._check_labels(result, document)
        if refusal is not None:
            return self._refuse(result, channel, Reason.LABEL_MISMATCH, refusal, audited=True)

        tokens = tuple(channel.split("."))
        chosen: list[Registration] = []
        for registration in self._registrations.values():
            if not registration.admits(result, tokens):
                continue
            access = Access(identity=result.context, platform=registration.platform, result=result, tenant=result.tenant)
            if _allows(registration, access):
                chosen.append(registration)
        if not chosen:
            return self._refuse(result, channel, Reason.NO_HANDLER, "no registered handler's policy allows this result")
        return Checked(result, channel, chosen)

    def _check_labels(self, result: PollResult, document: Any) -> str | None:
        ctx = result.context
        if ctx is None:
            return None
        reported = result.reported_labels(document)
        if not reported:  # nearly every result: nothing more to compare
            return None
        proven = {"agent_id": ctx.component_id, "partition": ctx.partition_id}
        problems = []
        for label, value in reported.items():
            if value == proven[label]:
                continue
            self.metrics.label_mismatches.labels(tenant=ctx.tenant, label=label).inc()
            problems.append(f"reported {label} {value[:64]!r}, proven {proven[label]!r}")
            key = (result.agent, label, value, proven[label])
            if key not in self._mismatches_seen:  # one line per new disagreement, not one per poll
                if len(self._mismatches_seen) >= _MAX_REMEMBERED:  # an agent inventing labels cannot grow it forever
                    self._mismatches_seen.clear()
                self._mismatches_seen.add(key)
                log.warning(
                    "label_mismatch",
                    tenant=ctx.tenant,
                    agent=result.agent,
                    label=label,
                    reported=value[:64],
                    proven=proven[label],
                    component=ctx.component_id,
                )
        if problems and self._strict_for(result):
            return "; ".join(problems)
        return None

    def _strict_for(self, result: PollResult) -> bool:
        return self._strict(result) if callable(self._strict) else bool(self._strict)

    def _refuse(self, result: PollResult, channel: str | None, reason: Reason, detail: str, *, audited: bool = False) -> Delivery:
        self.metrics.results_refused.labels(
            tenant=result.tenant, channel=self._channel_label(result.tenant, channel), reason=reason.value
        ).inc()
        fields = {
            "tenant": result.tenant,
            "agent": result.agent,
            "channel": channel,
            "reason": reason.value,
            "detail": detail,
            "kind": result.kind,
            "service": result.service_name,
        }
        if result.context is not None:
            fields.update(
                component=result.context.component_id, serial=result.context.serial, fingerprint=result.context.fingerprint_sha256
            )
        if audited:
            audit_log.warning("result_refused", audit=True, **fields)
        else:
            log.warning("result_refused", **fields)
        return Delivery(channel=channel, refused=reason, detail=detail)

    def _channel_label(self, tenant: str, channel: str | None) -> str:
        if channel is None or not channel.startswith(CHANNEL_RESULTS):
            return channel or ""  # the fixed channels, and none
        named = self._results_channel_labels.setdefault(tenant, set())
        if channel not in named:
            if len(named) >= MAX_RESULTS_CHANNEL_LABELS:
                return "other"
            named.add(channel)
        return channel

    async def _run(self, registration: Registration, result: PollResult, channel: str) -> Reason | None:
        """Run one handler in its own task and context; never wait past its timeout."""
        context = contextvars.copy_context()
        context.run(_current.set, result.context)  # None for an unproven result: current_tenant() raises
        if registration.platform is not None and not registration.platform.local:
            self.metrics.cross_tenant_deliveries.labels(tenant=result.tenant).inc()
            audit_log.info(
                "cross_tenant_delivery",
                audit=True,
                tenant=result.tenant,
                channel=channel,
                handler=registration.name,
                agent=result.agent,
                **registration.platform.log_fields(),
            )
        name = f"handler {registration.name}"
        # An async handler's coroutine is run as it is (making it runs none of the
        # handler's code); a plain function runs in a thread.
        try:
            step = (
                _in_thread(registration, result)
                if registration.threaded
                else cast(Coroutine[Any, Any, None], registration.call(result))
            )
        except Exception as uncallable:  # an async handler that cannot even be called (its signature)
            detail = f"{type(uncallable).__name__}: {str(uncallable)[:200]}"
            return self._failed(registration, result, Reason.HANDLER_FAILED, detail)
        task: asyncio.Future[None] | eager.Finished[None]
        if registration.eager:  # most finish at once: then no task, no timer, no loop round
            task = eager.start(step, context=context, name=name)
        else:
            task = asyncio.get_running_loop().create_task(step, name=name, context=context)
        if isinstance(task, asyncio.Future) and not task.done() and not await wait_done(task, registration.timeout):
            self._abandon(task)
            return self._failed(registration, result, Reason.HANDLER_TIMEOUT, f"no answer within {registration.timeout:g}s")
        if task.cancelled():
            return self._failed(registration, result, Reason.HANDLER_FAILED, "cancelled")
        exc = task.exception()
        if exc is not None:
            return self._failed(registration, result, Reason.HANDLER_FAILED, f"{type(exc).__name__}: {str(exc)[:200]}")
        return None

    def _abandon(self, task: asyncio.Future[Any]) -> None:
        """Cancel a task past its timeout and leave it: not awaited, so a handler
        that ignores cancellation cannot hold us (close() cancels it again)."""
        task.cancel()
        self._abandoned.add(task)
        task.add_done_callback(_forget(self._abandoned))

    def _failed(self, registration: Registration, result: PollResult, reason: Reason, detail: str) -> Reason:
        self.failures[registration.name] += 1
        self.metrics.handler_failures.labels(tenant=result.tenant, handler=registration.name, reason=reason.value).inc()
        log.error(
            "handler_failed",
            tenant=result.tenant,
            handler=registration.name,
            agent=result.agent,
            reason=reason.value,
            detail=detail,
        )
        return reason

    # -- lifecycle -----------------------------------------------------------------

    def _sinks(self) -> tuple[tuple[Registration, Sink], ...]:
        """Each registered sink once (a sink registered twice is flushed once); kept
        until the registrations change, since the gateway flushes on every push."""
        if self._sink_list is None:
            seen: set[int] = set()
            sinks = []
            for registration in self._registrations.values():
                target = registration.sink
                if target is not None and id(target) not in seen:
                    seen.add(id(target))
                    sinks.append((registration, target))
            self._sink_list = tuple(sinks)
        return self._sink_list

    async def flush(self) -> Mapping[str, Reason]:
        """Flush every registered sink (the daemon calls it at the end of each
        agent's cycle, the gateway before it answers `received`). Each is
        bounded by its handler's timeout like a delivery: a hanging flush is
        logged and counted, never waited out.

        Returns the sinks whose flush failed or timed out, by handler name, with
        why; empty when every sink made its results durable. A caller that
        promises durability (the gateway's `received`) must refuse on a
        non-empty answer: the results it handed over may be lost."""
        sinks = self._sinks()
        if len(sinks) == 1:  # the daemon's case: no gather per agent-cycle
            only, sink = sinks[0]
            reason = await self._bounded(only, sink.flush(), "flush")
            return _NONE_FAILED if reason is None else {only.name: reason}
        outcomes = await asyncio.gather(*(self._bounded(r, sink.flush(), "flush") for r, sink in sinks))
        failed = {r.name: reason for (r, _), reason in zip(sinks, outcomes, strict=True) if reason is not None}
        return failed or _NONE_FAILED

    async def close(self) -> None:
        """Flush and close every registered sink (bounded the same way); cancel
        handlers still running past their timeout."""
        await self.flush()
        await asyncio.gather(*(self._bounded(r, sink.close(), "close") for r, sink in self._sinks()))
        for task in list(self._abandoned):
            task.cancel()

    async def _bounded(self, registration: Registration, step: Coroutine[Any, Any, None], what: str) -> Reason | None:
        task: asyncio.Future[None] | eager.Finished[None]
        if registration.eager:
            task = eager.start(step, context=contextvars.copy_context(), name=f"sink {what}")
        else:
            task = asyncio.ensure_future(step)
        if isinstance(task, asyncio.Future) and not task.done() and not await wait_done(task, registration.timeout):
            self._abandon(task)
            reason, detail = Reason.HANDLER_TIMEOUT, f"no answer within {registration.timeout:g}s"
        elif not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            reason, detail = Reason.HANDLER_FAILED, f"{type(exc).__name__}: {str(exc)[:200]}"
        else:
            return None
        self.failures[registration.name] += 1
        self.metrics.handler_failures.labels(tenant="", handler=registration.name, reason=reason.value).inc()
        # A sink is shared by every tenant: its caller (which knows whose results) names them.
        log.error(f"sink_{what}_failed", handler=registration.name, reason=reason.value, detail=detail)
        return reason


def _allows(registration: Registration, access: Access) -> bool:
    """The registration's policy decision; a policy that raises denies (fail closed)."""
    try:
        return registration.policy.evaluate(access).allowed
    except Exception as exc:
        log.error(
            "policy_failed",
            handler=registration.name,
            tenant=access.tenant_touched,
            policy=repr(registration.policy),
            detail=f"{type(exc).__name__}: {str(exc)[:200]}",
        )
        return False


async def _in_thread(registration: Registration, result: PollResult) -> None:
    """A plain function's call, in a thread (which copies the bound context); an awaitable it returns is awaited here."""
    outcome = await asyncio.to_thread(registration.call, result)
    if inspect.isawaitable(outcome):
        await outcome


def _is_async(call: object) -> bool:
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(getattr(call, "__call__", None))  # noqa: B004


def _forget(tasks: set[asyncio.Future[Any]]) -> Callable[[asyncio.Future[Any]], None]:
    def done(task: asyncio.Future[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log "never retrieved"

    return done
