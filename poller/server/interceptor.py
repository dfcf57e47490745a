"""TenantServerInterceptor: prove each caller's identity from its verified
client certificate, authorize the method by policy, and run the handler with
that identity bound.

For every call, from `context.auth_context()` (`x509_pem_cert_chain`, else
`x509_pem_cert`) it requires:

- the chain's issuing CA is a registered tenant CA, found by its key (the
  presented intermediate's SPKI, else the CA whose key signed the leaf), never
  by name; or the platform CA, for a `<name>.platform.serviceradar` identity;
- then poller.trust's own verifier decides, exactly as on the client side:
  CN in the edge grammar, CN tenant == issuing CA's tenant, SPIFFE SAN (if
  any) agreeing, within validity (its own, its CA's and the root's above that
  CA), not on the tenant's CRL (the store's current snapshot, so a reloaded
  CRL applies to the next call), full path validation.

Outcomes: no identity or a bad one aborts with UNAUTHENTICATED; a proven
identity that the method's policy refuses aborts with PERMISSION_DENIED. The
status details start with the reason code (`tenant_mismatch: ...`), which is
also sent as trailing metadata `x-serviceradar-reason`. Every decision is an
audit line (poller.audit) and a count in poller_server_calls_total. On
success current_tenant() (an edge caller) and current_caller() are bound for
the handler and every task it starts. A platform admin is allowed only where
a method's policy says platform_admin(); each such call is audited with the
admin identity and the tenant it names in `x-serviceradar-tenant` metadata
(used for the audit line only, never as an identity).

All four call shapes are covered (unary and streaming, either side).

A long-lived call (any streaming shape) is proven at its start and then
held to its identity while it runs (invariant 8, server side): the caller's
chain is proven again whenever the trust source changes (a new CRL, a CA
removed; at once for a source that notifies, as TrustStore does, else every
`recheck_interval` seconds), and when the first notAfter of its chain
(certificate, tenant CA, root) or its tenant's CRL's nextUpdate is reached.
Once the identity stops holding, the handler is cancelled and the call ends
UNAUTHENTICATED with the reason code, audited (`server_call_ended`). Unary
calls are short; they are proven once.

>>> interceptor = TenantServerInterceptor(
...     trust,
...     policies={"/core.Core/Register": component_type_in({"gateway"}),
...               "/core.Core/Stats": platform_admin()},
... )  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import grpc
from cryptography import x509

from poller.audit import ACCEPT_AUDIT_MODES
from poller.dial.interceptor import TENANT_METADATA_KEY
from poller.identity import certinfo
from poller.identity.context import TenantContext, _current
from poller.identity.names import EdgeName, is_label
from poller.identity.platform import PlatformIdentity
from poller.identity.reasons import IdentityRefused, PermissionDenied, Reason
from poller.logs import get_logger
from poller.metrics import LabelCache, PollerMetrics, default_metrics
from poller.policy import Access, Decision, Policy, any_tenant
from poller.server.read_after_proof import ReadAfterProof
from poller.trust.layout import CertsLayout
from poller.trust.platform import PlatformAuthority, load_platform_authority, platform_not_after, verify_platform_chain
from poller.trust.source import notifies
from poller.trust.store import TenantAuthority, TrustSnapshot
from poller.trust.verify import check_anchor, check_revocation, parse_chain, proof_deadline, verify_agent_chain

log = get_logger("poller.server")
audit_log = get_logger("poller.audit")

REASON_METADATA_KEY = "x-serviceradar-reason"
#: The message of the cancellation with which a long-lived call's handler is ended when its
#: caller's identity stops holding (audited as server_call_ended): a handler that treats a
#: cancellation as its caller gone can tell the two apart by `CancelledError.args`.
IDENTITY_ENDED = "poller: the caller's identity no longer holds"


class IdentityEnded(str):
    """That cancellation's message: equal to IDENTITY_ENDED, and carrying why the
    identity stopped holding, so a handler can count and log the call under it.

    >>> ended = IdentityEnded(Reason.REVOKED)
    >>> ended == IDENTITY_ENDED, ended.reason.value
    (True, 'revoked')
    """

    reason: Reason

    def __new__(cls, reason: Reason) -> IdentityEnded:
        message = super().__new__(cls, IDENTITY_ENDED)
        message.reason = reason
        return message


_MAX_REMEMBERED = 65536

# What the caller is told: the reason code and a fixed sentence. The detail
# (which CA, which serial) goes to the audit log only.
_PUBLIC = {
    Reason.UNTRUSTED_CHAIN: "the certificate does not chain to a registered tenant or platform CA",
    Reason.TENANT_MISMATCH: "the certificate names a tenant other than the CA that issued it",
    Reason.INVALID_CN: "the certificate's CN is not a ServiceRadar identity",
    Reason.IDENTITY_MISMATCH: "the certificate's SPIFFE ID disagrees with its CN",
    Reason.EXPIRED: "the certificate has expired",
    Reason.NOT_YET_VALID: "the certificate is not yet valid",
    Reason.REVOKED: "the certificate is revoked",
    Reason.BAD_CERTIFICATE: "no usable client certificate",
    Reason.CRL_EXPIRED: "revocation cannot be checked: the issuing CA's CRL is out of date",
    Reason.POLICY_DENIED: "this identity may not call this method",
    Reason.UNKNOWN_AGENT: "this identity is not a listed agent",
}


@dataclass(frozen=True, slots=True)
class Caller:
    """The proven caller of one server call: an edge identity or a platform one."""

    method: str
    identity: TenantContext | None = None
    platform: PlatformIdentity | None = None
    tenant: str | None = None  # the tenant touched (for an admin: the one it named)
    peer: str = ""  # grpc's peer of the call ("ipv4:10.0.0.5:41000"), read once for the proof


_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("poller_server_caller", default=None)


def current_caller() -> Caller:
    """The proven caller of the server call being handled; LookupError outside one."""
    caller = _caller.get()
    if caller is None:
        raise LookupError("no proven caller: not inside a call behind TenantServerInterceptor")
    return caller


# What caller_still_holds needs of the call being handled: its interceptor, grpc context,
# caller, and the trust snapshot it was proven under.
_proven: contextvars.ContextVar[tuple[TenantServerInterceptor, grpc.aio.ServicerContext, Caller, Any] | None] = (
    contextvars.ContextVar("poller_server_proven", default=None)
)


def caller_still_holds() -> None:
    """Raise IdentityRefused if the caller of the call being handled is no longer
    proven by the trust in force now: a handler about to act on what the caller
    sent (file a unary push) asks first, as a long-lived call is cut off. Costs
    nothing until a reload swaps the trust snapshot; then the caller is proven
    again, as at the call's start. LookupError outside a call.

    >>> caller_still_holds()  # doctest: +SKIP
    """
    proven = _proven.get()
    if proven is None:
        raise LookupError("no proven caller: not inside a call behind TenantServerInterceptor")
    interceptor, context, caller, snapshot = proven
    if interceptor.trust.snapshot is not snapshot:
        interceptor.still_holds(context, caller)


def prove_caller(
    auth: Mapping[str, Sequence[bytes]],
    snapshot: TrustSnapshot,
    platform: PlatformAuthority | None,
) -> TenantContext | PlatformIdentity:
    """The identity a verified client chain proves (auth is context.auth_context()),
    or IdentityRefused with the reason."""
    # grpcio gives the leaf as x509_pem_cert and what the client sent after it
    # (its intermediates) as x509_pem_cert_chain; be tolerant of a chain that
    # repeats the leaf.
    leaf_pem = b"".join(auth.get("x509_pem_cert") or ())
    if not leaf_pem:
        raise IdentityRefused(Reason.BAD_CERTIFICATE, "the caller presented no client certificate")
    try:
        leaf_cert = x509.load_pem_x509_certificates(leaf_pem)[0]
        rest_pem = b"".join(auth.get("x509_pem_cert_chain") or ())
        rest = x509.load_pem_x509_certificates(rest_pem) if rest_pem else []
    except ValueError:
        raise IdentityRefused(Reason.BAD_CERTIFICATE, "the client certificate does not parse") from None
    certs = parse_chain([leaf_cert, *(c for c in rest if c != leaf_cert)])
    leaf = certs[0]
    if platform is not None and platform.issued(leaf):
        return verify_platform_chain(certs, platform, root=snapshot.root)
    authority = _issuing_tenant(certs, snapshot)
    if authority is None:
        raise IdentityRefused(
            Reason.UNTRUSTED_CHAIN,
            f"issuer {leaf.issuer.rfc4514_string()} is no registered tenant CA",
            peer=certinfo.summary(leaf),
        )
    return verify_agent_chain(certs, tenant=authority.slug, trust=snapshot, purpose="client")


class ProofCache:
    """Remembers what a client chain proved, so that the calls of one
    connection do not each repeat the path validation.

    An entry holds only while the trust snapshot and platform CA it was
    decided under are still the ones in force (a reload, e.g. a new CRL,
    makes a new snapshot, so the next call is proven afresh), and only until
    proof_ends(): the first notAfter of the proven chain or the tenant CRL's
    nextUpdate; a refusal is remembered for at most REFUSAL_TTL seconds.
    """

    REFUSAL_TTL = 30.0

    def __init__(self, size: int = 4096, *, clock: Callable[[], float] | None = None) -> None:
        self.size = size
        self.proofs = 0  # chains actually verified (the rest came from memory)
        self._clock = clock or time.time  # the wall clock notAfter and nextUpdate are on
        self._entries: dict[bytes, tuple[object, object, float, TenantContext | PlatformIdentity | IdentityRefused]] = {}

    def prove(
        self, auth: Mapping[str, Sequence[bytes]], snapshot: TrustSnapshot, platform: PlatformAuthority | None
    ) -> TenantContext | PlatformIdentity:
        key = b"".join(auth.get("x509_pem_cert") or ()) + b"|" + b"".join(auth.get("x509_pem_cert_chain") or ())
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None and entry[0] is snapshot and entry[1] is platform and now < entry[2]:
            outcome = entry[3]
        else:
            self.proofs += 1
            try:
                outcome = prove_caller(auth, snapshot, platform)
            except IdentityRefused as err:
                outcome = err
            self._remember(key, snapshot, platform, now, outcome)
        if isinstance(outcome, IdentityRefused):  # a fresh error each time: a re-raised one would grow its traceback
            raise IdentityRefused(
                outcome.reason, outcome.detail, peer=outcome.peer, vouched=outcome.vouched, issuer_tenant=outcome.issuer_tenant
            )
        return outcome

    def _remember(
        self,
        key: bytes,
        snapshot: TrustSnapshot,
        platform: PlatformAuthority | None,
        now: float,
        outcome: TenantContext | PlatformIdentity | IdentityRefused,
    ) -> None:
        until = now + self.REFUSAL_TTL if isinstance(outcome, IdentityRefused) else proof_ends(outcome, snapshot, platform)
        if len(self._entries) >= self.size:
            del self._entries[next(iter(self._entries))]  # the oldest
        self._entries[key] = (snapshot, platform, until, outcome)


def proof_ends(proven: TenantContext | PlatformIdentity, snapshot: TrustSnapshot, platform: PlatformAuthority | None) -> float:
    """When (epoch seconds) a proof made under `snapshot` stops holding by the clock
    alone: the first notAfter over the proven chain (the leaf, its tenant CA and
    the root above that CA, or the platform CA and the root above it) or the
    tenant CRL's nextUpdate. The CA's own notAfter counts: an external CA need
    not cap its leaves at it."""
    if isinstance(proven, TenantContext):
        return proof_deadline(proven.not_after, snapshot.tenants.get(proven.tenant), snapshot).timestamp()
    end = proven.not_after
    if platform is not None:
        end = min(end, platform_not_after(platform, snapshot.root))
    return end.timestamp()


def _issuing_tenant(certs: list[x509.Certificate], snapshot: TrustSnapshot) -> TenantAuthority | None:
    """The tenant CA whose key issued the leaf: by the presented intermediate's SPKI, else by signature."""
    leaf = certs[0]
    for cert in certs[1:2]:
        authority = snapshot.tenant_by_spki(certinfo.spki_sha256(cert))
        if authority is not None and authority.issued(leaf):
            return authority
    return snapshot.issuer_tenant(leaf)


class SnapshotSource(Protocol):
    """Anything that holds the trust material in force (a TrustStore, for one)."""

    @property
    def snapshot(self) -> TrustSnapshot: ...


class TenantServerInterceptor(grpc.aio.ServerInterceptor):
    """Proves, authorizes, audits and binds the caller of every call; see the module doc.

    `policies` maps full method names (`/package.Service/Method`) to a Policy;
    other methods get `default_policy` (any proven tenant identity; a platform
    admin is then refused). `platform`: True (default) reads the platform CA
    for admin identities from the trust store's directory (certs/platform/ca.pem),
    again whenever the store reloads; a PlatformAuthority uses that one; False
    accepts no platform identity at all. `metrics`: where poller_server_calls_total goes.
    `recheck_interval`: how often a long-lived call re-checks its caller against a
    trust source that cannot notify (one that can is followed at once).
    `audit_accepted`: "call" (default) writes the acceptance audit line for every
    call; "connection" writes it for the first call of each method from a caller
    address under each proof (again after a trust reload, or with another
    certificate), for servers whose callers make many small calls (the gateway).
    Refusals, ends of streams and admin calls are audited every time; every call
    is counted in poller_server_calls_total either way. A refused certificate
    that its tenant's CA signed, with agreeing names (revoked, expired, ...),
    is audited and counted with that tenant, component and partition. Any
    refused certificate whose signature verified under a registered tenant
    CA's key (a bad CN, a CN naming another tenant, a SPIFFE ID disagreeing
    with the CN, ...) has that CA's tenant in its audit line as
    `issuer_tenant`: who issued it, never whose agent it is. It is not a
    `tenant`, and not a label: poller_server_calls_total counts a refusal
    under the proven or vouched tenant, else "".
    `on_refused(method, peer, refusal)` is told of every identity refusal
    (`refusal.vouched` says whose certificate it was, when that is known).
    """

    def __init__(
        self,
        trust: SnapshotSource,
        *,
        policies: Mapping[str, Policy] | None = None,
        default_policy: Policy | None = None,
        platform: PlatformAuthority | bool = True,
        metrics: PollerMetrics | None = None,
        recheck_interval: float = 5.0,
        audit_accepted: str = "call",
        on_refused: Callable[[str, str, IdentityRefused], None] | None = None,
    ) -> None:
        if audit_accepted not in ACCEPT_AUDIT_MODES:
            raise ValueError(f"audit_accepted must be one of {', '.join(ACCEPT_AUDIT_MODES)}, not {audit_accepted!r}")
        self.trust = trust
        self.recheck_interval = recheck_interval
        self.audit_accepted = audit_accepted
        self.on_refused = on_refused
        # (peer, method) -> the proof its last audited accept was decided on
        self._audited: dict[tuple[str, str], TenantContext | PlatformIdentity] = {}
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}
        self.metrics = metrics if metrics is not None else default_metrics()
        self._calls = LabelCache(self.metrics.server_calls)  # (tenant, outcome)
        self.policies = dict(policies or {})
        for method, policy in self.policies.items():
            if not isinstance(policy, Policy):
                raise TypeError(f"policy for {method} is not a poller.policy Policy")
        self.default_policy = default_policy or any_tenant()
        self._platform_source = platform
        self._platform_for: TrustSnapshot | None = None
        self._platform: PlatformAuthority | None = platform if isinstance(platform, PlatformAuthority) else None
        self._proofs = ProofCache()

    def policy_for(self, method: str) -> Policy:
        return self.policies.get(method, self.default_policy)

    def _platform_authority(self, snapshot: TrustSnapshot) -> PlatformAuthority | None:
        if self._platform_source is True and self._platform_for is not snapshot:
            layout: CertsLayout | None = getattr(self.trust, "layout", None)  # None: not a certs directory
            try:
                self._platform = load_platform_authority(layout) if layout is not None else None
            except (OSError, ValueError) as exc:
                log.error("platform_ca_unreadable", detail=str(exc))
                self._platform = None  # fail closed: no admin identities
            self._platform_for = snapshot
        return self._platform if self._platform_source is not False else None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:  # a servicer's handlers are made once: wrap each once
            return known[1]
        wrapped = self._wrap(handler, method)
        if len(self._wrapped) < _MAX_REMEMBERED:  # methods are few; a generic handler inventing them is not cached
            self._wrapped[method] = (handler, wrapped)
        return wrapped

    # -- the decision ----------------------------------------------------------------

    def decide(self, context: grpc.aio.ServicerContext, method: str) -> Caller:
        """Prove and authorize the caller of this call. Audited either way.

        Raises IdentityRefused (no or a bad identity) or PermissionDenied (a policy said no).
        """
        peer = context.peer()
        snapshot = self.trust.snapshot
        try:
            proven = self._proofs.prove(context.auth_context() or {}, snapshot, self._platform_authority(snapshot))
        except IdentityRefused as err:
            self._audit_refused(
                method, peer, err.reason, err.detail, err.peer, vouched=err.vouched, issuer_tenant=err.issuer_tenant
            )
            if self.on_refused is not None:
                try:
                    self.on_refused(method, peer, err)
                except Exception as exc:  # the refusal stands whatever the listener does
                    log.error("on_refused_failed", method=method, detail=f"{type(exc).__name__}: {str(exc)[:200]}")
            raise
        if isinstance(proven, PlatformIdentity):
            caller = Caller(method=method, platform=proven, tenant=_named_tenant(context), peer=peer)
        else:
            caller = Caller(method=method, identity=proven, tenant=proven.tenant, peer=peer)
        access = Access(identity=caller.identity, platform=caller.platform, method=method, tenant=caller.tenant)
        try:
            decision = self.policy_for(method).evaluate(access)
        except Exception as exc:  # a policy that fails denies (fail closed)
            decision = Decision(False, Reason.POLICY_DENIED, f"policy raised {type(exc).__name__}: {str(exc)[:200]}")
        if not decision.allowed:
            reason = decision.reason or Reason.POLICY_DENIED
            self._audit_refused(method, peer, reason, decision.detail, None, caller)
            raise PermissionDenied(reason, decision.detail)
        self._audit_accepted(method, peer, caller, proven)
        return caller

    def _audit_accepted(self, method: str, peer: str, caller: Caller, proven: TenantContext | PlatformIdentity) -> None:
        self._calls.child(caller.tenant or "", "accepted" if caller.identity is not None else "accepted_admin").inc()
        if self.audit_accepted == "connection" and caller.identity is not None:
            # The decision is the same for every call of this connection and method
            # until the proof changes (a trust reload proves afresh: a new object).
            key = (peer, method)
            if self._audited.get(key) is proven:
                return
            if len(self._audited) >= _MAX_REMEMBERED:
                del self._audited[next(iter(self._audited))]  # the oldest: it is audited again, never less
            self._audited[key] = proven
        fields: dict[str, Any] = {"method": method, "peer": peer, "tenant": caller.tenant}
        if caller.identity is not None:
            fields.update(caller.identity.log_fields())
        else:
            assert caller.platform is not None
            fields.update(caller.platform.log_fields(), cross_tenant=True)
        audit_log.info("server_call_accepted", audit=True, **fields)

    def still_holds(self, context: grpc.aio.ServicerContext, caller: Caller) -> None:
        """Prove the caller of a running call again against the trust in force now
        (the same proof as at its start); IdentityRefused once it no longer holds."""
        snapshot = self.trust.snapshot
        self._proofs.prove(context.auth_context() or {}, snapshot, self._platform_authority(snapshot))

    def _audit_refused(
        self,
        method: str,
        peer: str,
        reason: Reason,
        detail: str,
        presented: Mapping[str, str] | None,
        caller: Caller | None = None,
        event: str = "server_call_refused",
        vouched: EdgeName | None = None,
        issuer_tenant: str | None = None,
    ) -> None:
        fields: dict[str, Any] = {"method": method, "peer": peer, "reason": reason.value, "detail": detail}
        if caller is not None and caller.identity is not None:
            fields.update(caller.identity.log_fields())
        elif caller is not None and caller.platform is not None:
            fields.update(caller.platform.log_fields(), tenant=caller.tenant)
        elif vouched is not None:  # signed by this tenant's CA, names agreeing: whose it is, not proven now
            fields.update(tenant=vouched.tenant, component=vouched.component_id, partition=vouched.partition_id)
        if issuer_tenant is not None:  # whose CA's key signed it: names nobody's agent, so never `tenant`
            fields["issuer_tenant"] = issuer_tenant
        if presented:
            fields.update(
                subject=presented.get("subject"), serial=presented.get("serial"), fingerprint=presented.get("fingerprint")
            )
        # The label is the tenant proven or vouched for, as before: an issuer_tenant alone does not count under it.
        self._calls.child(fields.get("tenant") or "", reason.value).inc()
        audit_log.warning(event, audit=True, **fields)

    # -- the four call shapes ----------------------------------------------------------

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if handler.request_streaming and handler.response_streaming:
            behaviour, factory = handler.stream_stream, grpc.stream_stream_rpc_method_handler
        elif handler.request_streaming:
            behaviour, factory = handler.stream_unary, grpc.stream_unary_rpc_method_handler
        elif handler.response_streaming:
            behaviour, factory = handler.unary_stream, grpc.unary_stream_rpc_method_handler
        else:
            behaviour, factory = handler.unary_unary, grpc.unary_unary_rpc_method_handler
        # A unary method served as a request stream so that its request is read after the
        # proof (poller.server.read_after_proof) is guarded as the unary call it is.
        unary = isinstance(behaviour, ReadAfterProof)
        long_lived = (handler.request_streaming or handler.response_streaming) and not unary
        wrapped = self._guard_long(behaviour, method) if long_lived else self._guard(behaviour, method)
        return factory(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    async def _enter(self, context: grpc.aio.ServicerContext, method: str) -> Caller:
        decided_under = self.trust.snapshot  # at most as new as the one decide() reads
        try:
            caller = self.decide(context, method)
        except (IdentityRefused, PermissionDenied) as refusal:
            code = grpc.StatusCode.UNAUTHENTICATED if isinstance(refusal, IdentityRefused) else grpc.StatusCode.PERMISSION_DENIED
            await abort_refused(context, code, refusal.reason)
        # The RPC runs in its own task, so these bindings end with it; tasks the
        # handler starts copy them.
        _current.set(caller.identity)
        _caller.set(caller)
        _proven.set((self, context, caller, decided_under))
        return caller

    def _guard(self, behaviour: Any, method: str) -> Any:
        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await self._enter(context, method)
            outcome = behaviour(request, context)
            return await outcome if inspect.isawaitable(outcome) else outcome

        return guarded

    def _guard_long(self, behaviour: Any, method: str) -> Any:
        """A streaming call: the handler runs in a task of its own (it sees the
        same bindings), cancelled when the caller's identity stops holding."""
        generator = inspect.isasyncgenfunction(behaviour)

        async def run(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if generator:  # written here, so that a cancellation lands in this task, never in grpc's
                async for item in behaviour(request, context):
                    await context.write(item)
                return None
            outcome = behaviour(request, context)
            return await outcome if inspect.isawaitable(outcome) else outcome

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            decided_under = self.trust.snapshot  # at most as new as the one decide() reads
            caller = await self._enter(context, method)
            handler = asyncio.ensure_future(run(request, context))
            watch = _IdentityWatch(self, context, caller, handler, decided_under)
            try:
                try:
                    return await asyncio.shield(handler)
                except asyncio.CancelledError:
                    if watch.refusal is None:  # the call itself was cancelled (client gone, server stopping)
                        raise
            finally:
                watch.close()
                if not handler.done():
                    handler.cancel()
            await abort_refused(context, grpc.StatusCode.UNAUTHENTICATED, watch.refusal.reason)

        return guarded


class _IdentityWatch:
    """Holds one long-lived call to its caller's identity: re-proves it when
    the trust source changes and at its next deadline (proof_ends(), or the
    poll interval of a source that cannot notify); on a refusal, audits it and
    cancels the call's handler task."""

    def __init__(
        self,
        interceptor: TenantServerInterceptor,
        context: grpc.aio.ServicerContext,
        caller: Caller,
        handler: asyncio.Future[Any],
        checked: TrustSnapshot,
    ) -> None:
        self._interceptor = interceptor
        self._context = context
        self._caller = caller
        self._handler = handler
        self._checked = checked  # the trust the identity last held against
        self._leaf = _leaf_of(context) if caller.identity is not None else None
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self.refusal: IdentityRefused | None = None
        source = interceptor.trust
        self._notifier = source if notifies(source) else None
        if self._notifier is not None:
            self._notifier.subscribe(self)
        if source.snapshot is not checked:  # swapped while the call was decided: no notice came
            self._loop.call_soon(self.recheck)
        self._arm()

    def trust_changed(self, snapshot: TrustSnapshot) -> None:
        """TrustListener: the source swapped its snapshot (may be called off the loop)."""
        self._loop.call_soon_threadsafe(self.recheck)

    def recheck(self) -> None:
        if self.refusal is not None or self._handler.done():
            return
        snapshot = self._interceptor.trust.snapshot
        try:
            self._check(snapshot)
        except IdentityRefused as err:
            self.refusal = err
            self._interceptor._audit_refused(
                self._caller.method,
                self._context.peer(),
                err.reason,
                err.detail,
                err.peer,
                self._caller,
                event="server_call_ended",
                issuer_tenant=err.issuer_tenant,
            )
            self._cancel_timer()
            self._handler.cancel(IdentityEnded(err.reason))
            return
        self._checked = snapshot
        self._arm()

    def _check(self, snapshot: TrustSnapshot) -> None:
        """The identity against `snapshot` and the clock. When the caller's tenant CA
        and the root are those it was proven under, only the clock and the CRL can
        have changed (a CRL reload, the common case, checks thousands of streams
        cheaply): the checks of a full proof that read them, in its order;
        otherwise it is proven again in full."""
        identity, leaf = self._caller.identity, self._leaf
        before = self._checked.tenants.get(identity.tenant) if identity is not None else None
        after = snapshot.tenants.get(identity.tenant) if identity is not None else None
        if (
            identity is None
            or leaf is None
            or before is None
            or after is None
            or after.cert != before.cert
            or snapshot.root != self._checked.root
        ):
            self._interceptor.still_holds(self._context, self._caller)
            return
        now = certinfo.utcnow()
        if now > identity.not_after:
            raise IdentityRefused(
                Reason.EXPIRED,
                f"expired at {identity.not_after:%Y-%m-%dT%H:%M:%SZ} during the call",
                peer=certinfo.summary(leaf),
                issuer_tenant=after.slug,
            )
        check_revocation(leaf, after, snapshot, now)
        check_anchor(leaf, after, snapshot, now)

    def _deadline(self) -> float:
        proven = self._caller.identity or self._caller.platform
        assert proven is not None
        snapshot = self._interceptor.trust.snapshot
        deadline = proof_ends(proven, snapshot, self._interceptor._platform_authority(snapshot))
        if self._notifier is None:
            deadline = min(deadline, time.time() + self._interceptor.recheck_interval)
        return deadline

    def _arm(self) -> None:
        self._cancel_timer()
        # Just past the deadline: a certificate is valid through its notAfter second.
        delay = max(0.0, self._deadline() - time.time()) + 0.01
        self._timer = self._loop.call_later(min(delay, 86400.0 * 30), self.recheck)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        self._cancel_timer()
        if self._notifier is not None:
            self._notifier.unsubscribe(self)
            self._notifier = None


def _leaf_of(context: grpc.aio.ServicerContext) -> x509.Certificate | None:
    pem = b"".join((context.auth_context() or {}).get("x509_pem_cert") or ())
    try:
        return x509.load_pem_x509_certificates(pem)[0] if pem else None
    except ValueError:
        return None


async def abort_refused(
    context: grpc.aio.ServicerContext, code: grpc.StatusCode, reason: Reason, text: str | None = None
) -> NoReturn:
    """End a call as the interceptor ends a refused one: `code`, details
    `<reason>: <fixed sentence>` (or `text`) and the reason as trailing metadata."""
    text = text or f"{reason.value}: {_PUBLIC.get(reason, 'refused')}"
    await context.abort(code, text, trailing_metadata=((REASON_METADATA_KEY, reason.value),))
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


def _named_tenant(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == TENANT_METADATA_KEY and isinstance(value, str) and is_label(value):
            return value
    return None
