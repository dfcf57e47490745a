"""dial_agent: a gRPC channel pinned to the certificate that proved the agent's tenant.

Dialing is three steps, each with one job:
1. collect the chain the agent presents (poller.dial.peer);
2. decide whether it proves the expected tenant (poller.trust.verify);
3. open a grpc.aio channel whose only trust anchor is that very leaf (the
   same DER bytes that were verified) and whose target name is its CN, so
   every connection the channel makes, reconnects included, is held by
   gRPC's own handshake to exactly the proven certificate (invariant 8 of
   docs/design.md).

After the dial the identity lives on:
- it is re-checked locally, with no network, whenever the trust material
  changes (tenant CA removed or re-keyed -> untrusted_chain, serial on a new
  CRL -> revoked, CRL past nextUpdate -> crl_expired) and when the leaf's
  notAfter is reached (-> expired); a failed re-check closes the channel and
  every later call raises IdentityRefused(reason);
- a pinned handshake that fails (the agent rotated its certificate) starts
  a fresh proof; a passing proof of the same identity re-pins the channel
  (audit line `identity_rotated` with both serials), a failing one refuses.

>>> conn = await dial_agent("10.0.0.5:50051", tenant="acme-corp", trust=store)  # doctest: +SKIP
>>> conn.context.tenant  # doctest: +SKIP
'acme-corp'
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
from cryptography import x509

from poller import audit
from poller.dial.channel import PinnedChannel
from poller.dial.interceptor import tenant_metadata
from poller.dial.peer import collector_context, fetch_peer_chain
from poller.identity import certinfo
from poller.identity.context import TenantContext
from poller.identity.reasons import AgentFailure, AgentUnreachable, IdentityRefused, Reason
from poller.logs import get_logger
from poller.metrics import PollerMetrics, default_metrics
from poller.timers import Cancellable, Clock, WallClock, task_cancelling
from poller.trust.snapshot import ClientIdentity, TrustSnapshot
from poller.trust.source import NotifyingTrustSource, TrustSource, notifies
from poller.trust.store import TrustStoreError
from poller.trust.verify import (
    anchor_expired,
    anchor_not_after,
    check_revocation,
    parse_chain,
    proof_deadline,
    verify_agent_chain,
)

log = get_logger("poller.dial")

DEFAULT_TIMEOUT = 5.0

# Keepalives notice a dead agent between polls; the reconnect backoff stays
# gRPC's own (jittered, capped) so a flapping agent is not hammered.
_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    # grpc core waits for a ping's answer this long, whatever keepalive_timeout_ms says
    # (default 1 minute; docs/design.md, facts about grpcio).
    ("grpc.http2.ping_timeout_ms", 20_000),
    ("grpc.max_reconnect_backoff_ms", 30_000),
    ("grpc.initial_reconnect_backoff_ms", 1_000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    # One subchannel per channel object: two channels to one agent must not
    # share a connection proven for another expectation.
    ("grpc.use_local_subchannel_pool", 1),
    # No channelz nodes and traces per channel (nothing here serves channelz):
    # ~3 KiB less per agent of the ~114 KiB a bare grpcio TLS channel holds.
    ("grpc.enable_channelz", 0),
)

# BoringSSL's name for a peer certificate that does not chain to the pinned
# leaf; in a failed call's details it means gRPC met another certificate.
_PIN_MISMATCH = "CERTIFICATE_VERIFY_FAILED"


@dataclass(frozen=True, slots=True)
class Proof:
    """A verified chain: the context it proves, the chain as presented (its
    exact DER bytes, leaf first: the leaf is what is pinned), and the trust
    snapshot it was verified against.

    The chain is kept as bytes, not as parsed certificates: a connection lives
    for days and is re-checked rarely, and parsed certificates (with the
    extensions verification read) are ~20 objects per agent that every full
    collection of the garbage collector walks. A re-check parses again."""

    context: TenantContext
    chain_der: tuple[bytes, ...]
    snapshot: TrustSnapshot

    @property
    def leaf_der(self) -> bytes:
        return self.chain_der[0]

    @property
    def chain(self) -> list[x509.Certificate]:
        """The chain parsed afresh (it parsed when it was proven: same bytes)."""
        return parse_chain(self.chain_der)

    @property
    def leaf(self) -> x509.Certificate:
        return certinfo.load_der(self.chain_der[0])

    @property
    def leaf_pem(self) -> bytes:
        return ssl.DER_cert_to_PEM_cert(self.leaf_der).encode("ascii")


_WALL_CLOCK = WallClock()  # stateless: one for every connection that is given none


class AgentConnection:
    """A channel pinned to one agent's proven certificate, and that identity.

    Made by dial_agent(). `channel` stays the same object for the
    connection's life (stubs made on it keep working across a rotation); it
    stamps every call with `context` and refuses calls once the identity was
    refused (poller.dial.channel). `metrics` is where its identity decisions
    and calls are counted.
    """

    def __init__(
        self,
        *,
        address: str,
        tenant: str,
        component: str | None,
        partition: str | None,
        trust: TrustSource,
        proof: Proof,
        timeout: float,
        options: Sequence[tuple[str, Any]] = (),
        metrics: PollerMetrics | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.address = address
        self._clock = clock if clock is not None else _WALL_CLOCK  # notAfter / nextUpdate are judged by it
        self.metrics = metrics if metrics is not None else default_metrics()
        self.tenant = tenant
        self.component = component
        self.partition = partition
        self.target_name = proof.context.cn
        self.refusal: IdentityRefused | None = None
        self._trust = trust
        self._timeout = timeout
        self._options = tuple(options)
        self._proof = proof
        self._checked = proof.snapshot  # the snapshot the identity last held against
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        # Made when first needed (a connection that is never re-proven, closed
        # with calls in flight or waited on carries none of them).
        self._reprove_lock: asyncio.Lock | None = None
        self._proofs = 0  # fresh proofs done; concurrent failures share one
        self._closing: set[asyncio.Task[None]] | None = None
        self._closed_why: str | None = None  # why the poller last closed a channel of this connection
        self._ended: asyncio.Event | None = None
        self._timer: Cancellable | None = None
        self._deadline = 0.0
        self._stamp: tuple[TenantContext, grpc.aio.Metadata] | None = None
        self._client = _client_of(proof.snapshot)
        self._channel = self._open(proof, self._client)
        self._current: PinnedChannel | None = None
        self.channel: grpc.aio.Channel = PinnedChannel(self)
        self.client_channel: grpc.aio.Channel = self.channel  # AgentClient's name for the one path
        self._arm_deadline(proof.snapshot)
        # The source to unsubscribe from at close, if it tells listeners about changes.
        self._notifier: NotifyingTrustSource | None = trust if notifies(trust) else None
        if self._notifier is not None:
            self._notifier.subscribe(self)

    # -- what calls read -------------------------------------------------------

    @property
    def context(self) -> TenantContext:
        """The proven identity; raises IdentityRefused once it no longer holds.

        Cheap enough for every call: a refusal check, a clock comparison
        (notAfter, CRL nextUpdate) and an identity check of the trust snapshot
        (a source that cannot notify is re-checked here when it changed)."""
        if self.refusal is None and (self._clock.time() >= self._deadline or self._trust.snapshot is not self._checked):
            self.recheck()
        if self.refusal is not None:
            raise self.refusal
        return self._proof.context

    def stamp(self) -> tuple[TenantContext, grpc.aio.Metadata]:
        """`context` (the same check, raising the same refusal) and the metadata
        every call made with it carries: built once per proven context and
        shared by the calls (grpc.aio copies it per call, never changes it)."""
        ctx = self.context
        stamp = self._stamp
        if stamp is None or stamp[0] is not ctx:
            stamp = self._stamp = (ctx, tenant_metadata(ctx))
        return stamp

    @property
    def serial(self) -> str:
        """Serial of the certificate the channel is pinned to."""
        return self._proof.context.serial

    @property
    def current_channel(self) -> grpc.aio.Channel:
        """The channel of the moment, checked and stamped like `channel`; a new
        object after a rotation (`channel` is the same object throughout)."""
        current = self._current
        if current is None:
            current = self._current = PinnedChannel(self, self._channel)
        return current

    @property
    def unchecked_channel(self) -> grpc.aio.Channel:
        """The grpc.aio channel underneath, pinned but NOT checked or stamped:
        the PinnedChannels call through it. Make calls on `channel`."""
        return self._channel

    async def wait_refused(self) -> IdentityRefused:
        """Wait until the identity ends (re-check, expiry, failed proof); its refusal."""
        if self.refusal is None:
            if self._ended is None:
                self._ended = asyncio.Event()
            await self._ended.wait()
        assert self.refusal is not None
        return self.refusal

    def raise_if_refused(self) -> None:
        self.context  # noqa: B018 - raises the refusal, re-checking first when due

    def cut(self, call: str) -> AgentFailure:
        """What a call on this connection that grpc.aio ended with CancelledError
        (its task not cancelled) failed with: the poller closed the call's channel.

        The stored refusal when the identity ended (revocation, CA removed, CRL
        expired), else AgentUnreachable (code CANCELLED) saying which close cut it.
        The caller re-raises a real cancellation of its task instead
        (poller.timers.task_cancelling).

        >>> raise conn.cut("GetStatus") from None  # doctest: +SKIP
        """
        if self.refusal is not None:
            return self.refusal
        why = self._closed_why or "gRPC cancelled it"
        return AgentUnreachable(f"{call}: cut while in flight: {why}", code="CANCELLED")

    @property
    def log(self) -> Any:
        return log.bind(address=self.address, tenant=self.tenant, agent=self.target_name)

    # -- live re-checks ----------------------------------------------------------

    def trust_changed(self, snapshot: TrustSnapshot) -> None:
        """TrustListener: the source swapped its snapshot (may run off the loop)."""
        self._on_loop(lambda: self.recheck(snapshot))

    def recheck(self, snapshot: TrustSnapshot | None = None) -> None:
        """Re-check the pinned identity locally against the trust material in
        force and the clock; on failure the identity ends (refusal stored,
        channel closed, audit line). No network."""
        if self.refusal is not None:
            return
        snapshot = snapshot or self._trust.snapshot
        try:
            self._check_locally(snapshot)
        except IdentityRefused as err:
            audit.refused(err, address=self.address, tenant=self.tenant, metrics=self.metrics, phase="recheck")
            self._end(err)
            return
        self._checked = snapshot
        client = snapshot.client or self._client
        if client != self._client:  # a rotated poller certificate: new connections use it
            self._client = client
            self._replace_channel(self._open(self._proof, client))
        self._arm_deadline(snapshot)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.time(), UTC)

    def _check_locally(self, snapshot: TrustSnapshot) -> None:
        now = self._now()
        before = self._checked.tenants.get(self.tenant)
        after = snapshot.tenants.get(self.tenant)
        same_anchor = after is not None and after.same_anchor(before) and snapshot.root == self._checked.root
        if not same_anchor:
            verify_agent_chain(
                self._proof.chain,
                tenant=self.tenant,
                trust=snapshot,
                component=self.component,
                partition=self.partition,
                now=now,
            )
            return
        assert after is not None
        # Same anchor: only the clock and the CRL can have changed (the checks of
        # a full proof that read them, in its order).
        if now >= self._proof.context.not_after:
            raise IdentityRefused(
                Reason.EXPIRED,
                f"expired at {self._proof.context.not_after:%Y-%m-%dT%H:%M:%SZ} while connected",
                peer=certinfo.summary(self._proof.leaf),
                issuer_tenant=after.slug,
            )
        check_revocation(self._proof.leaf, after, snapshot, now)
        # The pinned channel trusts the leaf alone, so its handshakes never see the CA's notAfter.
        anchor_end = anchor_not_after(after, snapshot)
        if now >= anchor_end:
            raise anchor_expired(self._proof.leaf, after, anchor_end, " while connected")

    def _arm_deadline(self, snapshot: TrustSnapshot) -> None:
        """Re-check when the leaf, its tenant CA or the root above it expires, or
        the tenant's CRL goes stale."""
        deadline = proof_deadline(self._proof.context.not_after, snapshot.tenants.get(self.tenant), snapshot).timestamp()
        if deadline == self._deadline and self._timer is not None:
            return
        self._deadline = deadline
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._clock.call_at(min(deadline, self._clock.time() + 86400.0 * 30), self._deadline_reached)

    def _deadline_reached(self) -> None:
        self._timer = None
        self.recheck()
        if self.refusal is None and self._timer is None:
            self._arm_deadline(self._checked)

    # -- fresh proofs (rotation) -------------------------------------------------

    async def reprove(self, failure: str | None = None) -> TenantContext:
        """Prove the agent afresh after a failed call or connection.

        failure: the failed call's details. A new certificate for the same
        identity that proves re-pins the channel (rotation); one that does not
        ends the identity with its reason. The same certificate while the
        pinned handshake failed verification means gRPC's connection reached
        another peer (an on-path relay, a split path): identity_mismatch.
        """
        generation = self._proofs
        if self._reprove_lock is None:
            self._reprove_lock = asyncio.Lock()
        async with self._reprove_lock:
            if self._proofs != generation or self.refusal is not None:
                return self.context  # another caller proved while we waited (raises its refusal)
            self._proofs += 1
            try:
                proof = await _prove(
                    self.address,
                    tenant=self.tenant,
                    trust=self._trust,
                    component=self.component,
                    partition=self.partition,
                    timeout=self._timeout,
                    metrics=self.metrics,
                    now=self._now(),
                )
                self._accept(proof, failure)
            except IdentityRefused as err:
                self._end(err)
                raise
            return proof.context

    def _accept(self, proof: Proof, failure: str | None) -> None:
        old = self._proof
        if proof.leaf_der == old.leaf_der:
            if failure is not None and _PIN_MISMATCH in failure:
                err = IdentityRefused(
                    Reason.IDENTITY_MISMATCH,
                    f"the agent at {self.address} presents the proven certificate (serial {old.context.serial}) to "
                    "the proof, but gRPC's connection met another certificate: an on-path relay or a split path",
                    peer=certinfo.summary(proof.leaf),
                    issuer_tenant=proof.context.tenant,
                )
                audit.refused(err, address=self.address, tenant=self.tenant, metrics=self.metrics, phase="recheck")
                raise err
            self._proof, self._checked = proof, proof.snapshot
            self._arm_deadline(proof.snapshot)
            return
        if proof.context.cn != self.target_name:
            err = IdentityRefused(
                Reason.IDENTITY_MISMATCH,
                f"agent at {self.address} now presents {proof.context.cn}, the channel is pinned to {self.target_name}",
                peer=certinfo.summary(proof.leaf),
                issuer_tenant=proof.context.tenant,
            )
            audit.refused(err, address=self.address, tenant=self.tenant, metrics=self.metrics, phase="recheck")
            raise err
        self._proof, self._checked = proof, proof.snapshot
        self._client = _client_of(proof.snapshot)
        self._replace_channel(self._open(proof, self._client))
        audit.rotated(old.context, proof.context, address=self.address, metrics=self.metrics)
        self._arm_deadline(proof.snapshot)

    # -- the pinned channel ------------------------------------------------------

    def _open(self, proof: Proof, client: ClientIdentity) -> grpc.aio.Channel:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=proof.leaf_pem,  # the proven leaf is the only trust anchor
            private_key=client.key_pem,
            certificate_chain=client.chain_pem,
        )
        return grpc.aio.secure_channel(
            self.address,
            credentials,
            options=[*_CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", proof.context.cn), *self._options],
        )  # no interceptors: the PinnedChannels check and stamp every call (poller.dial.channel)

    def _replace_channel(self, new: grpc.aio.Channel) -> None:
        old, self._channel = self._channel, new
        self._current = None  # current_channel makes the new one's
        self._closed_why = "a certificate rotation replaced its channel; the next call uses the new one"
        self._close_later(old, grace=1.0)  # in-flight calls may finish on the old one

    async def connect(self) -> str | None:
        """Open the pinned connection now: None when READY, else what failed.

        In TRANSIENT_FAILURE a fail-fast call reads gRPC's reason (the channel
        has no other way to tell it); nothing reaches an unpinned peer."""
        channel = self._channel
        async with asyncio.timeout(self._timeout):
            state = channel.get_state(try_to_connect=True)
            while state is not grpc.ChannelConnectivity.READY:
                if state is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                    return await _failure_detail(channel)
                if state is grpc.ChannelConnectivity.SHUTDOWN:
                    return "channel closed"
                await channel.wait_for_state_change(state)
                state = channel.get_state(try_to_connect=True)
        return None

    def _end(self, err: IdentityRefused) -> None:
        """The identity no longer holds: refuse every later call, close the channel."""
        if self.refusal is None:
            self.refusal = err
            self.log.warning("identity_ended", reason=err.reason.value, detail=err.detail)
            self._on_loop(self._wake_waiters)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._notifier is not None:
            self._notifier.unsubscribe(self)
        self._close_later(self._channel, grace=None)

    def _wake_waiters(self) -> None:
        if self._ended is not None:  # else wait_refused() finds the refusal set
            self._ended.set()

    def _close_later(self, channel: grpc.aio.Channel, *, grace: float | None) -> None:
        def start() -> None:
            task = self._loop.create_task(channel.close(grace))
            if self._closing is None:
                self._closing = set()
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

        self._on_loop(start)

    def _on_loop(self, fn: Callable[[], None]) -> None:
        if threading.get_ident() == self._loop_thread:
            fn()
        else:
            self._loop.call_soon_threadsafe(fn)

    async def close(self, grace: float | None = None) -> None:
        self._closed_why = "the connection was closed"
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._notifier is not None:
            self._notifier.unsubscribe(self)
        await self._channel.close(grace)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def __aenter__(self) -> AgentConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def dial_agent(
    address: str,
    *,
    tenant: str,
    trust: TrustSource,
    component: str | None = None,
    partition: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    options: Sequence[tuple[str, Any]] = (),
    metrics: PollerMetrics | None = None,
    clock: Clock | None = None,
) -> AgentConnection:
    """Prove the agent at address belongs to tenant and return a connection
    pinned to the certificate that proved it.

    trust: any TrustSource (a TrustStore over a certs directory, one made by
    TrustStore.from_pem(), or a TrustSnapshot). Raises IdentityRefused(reason,
    detail) when the agent does not prove the expected identity (also when
    gRPC's own connection meets another certificate than the proof did), and
    AgentUnreachable when no decision could be made. Decisions and calls are
    counted in `metrics` (a private registry if None). `clock` judges validity
    dates, now and while connected (poller.timers.WallClock if None; tests pass
    a poller.testing.ManualClock to move time instead of waiting for it).

    >>> async with await dial_agent("127.0.0.1:50051", tenant="acme-corp", trust=store) as conn:  # doctest: +SKIP
    ...     print(conn.context.component_id)
    """
    metrics = metrics if metrics is not None else default_metrics()
    clock = clock if clock is not None else WallClock()
    proof = await _prove(
        address,
        tenant=tenant,
        trust=trust,
        component=component,
        partition=partition,
        timeout=timeout,
        metrics=metrics,
        now=datetime.fromtimestamp(clock.time(), UTC),
    )
    conn = AgentConnection(
        address=address,
        tenant=tenant,
        component=component,
        partition=partition,
        trust=trust,
        proof=proof,
        timeout=timeout,
        options=options,
        metrics=metrics,
        clock=clock,
    )
    try:
        # gRPC's pinned handshake happens here, so a relay that routes it
        # elsewhere is refused by dial_agent itself, before any call.
        for _ in range(2):  # a second round only after a rotation in between
            channel = conn.current_channel
            try:
                failure = await conn.connect()
            except TimeoutError:
                raise AgentUnreachable(
                    f"gRPC connection to {address} timed out after {timeout:g}s", code="DEADLINE_EXCEEDED"
                ) from None
            if failure is None:
                return conn
            if conn.refusal is None and conn.current_channel is not channel:
                continue  # the poller's certificate rotated meanwhile: connect over the new channel
            serial = conn.serial
            await conn.reprove(failure)
            if conn.serial == serial:
                raise AgentUnreachable(f"gRPC connection to {address} failed: {failure}", code="UNAVAILABLE")
        raise AgentUnreachable(f"gRPC connection to {address} failed after the agent rotated its certificate twice")
    except BaseException:
        await conn.close()
        raise


async def _prove(
    address: str,
    *,
    tenant: str,
    trust: TrustSource,
    component: str | None,
    partition: str | None,
    timeout: float,
    metrics: PollerMetrics,
    now: datetime | None = None,
) -> Proof:
    """Collect the chain, verify it, check it can be pinned, audit the decision."""
    snapshot = trust.snapshot  # one snapshot for the credentials and the decision
    client = _client_of(snapshot)
    try:
        chain = await fetch_peer_chain(address, collector_context(client), timeout=timeout)
        certs = parse_chain(chain)  # once, for both checks
        ctx = verify_agent_chain(certs, tenant=tenant, trust=snapshot, component=component, partition=partition, now=now)
        _check_pinnable(certs[0], ctx)
    except IdentityRefused as err:
        audit.refused(err, address=address, tenant=tenant, metrics=metrics)
        raise
    audit.accepted(ctx, address=address, metrics=metrics)
    return Proof(context=ctx, chain_der=tuple(chain), snapshot=snapshot)


def _client_of(snapshot: TrustSnapshot) -> ClientIdentity:
    if snapshot.client is None:
        raise TrustStoreError(["no client identity loaded: the poller cannot present a certificate"])
    return snapshot.client


async def _failure_detail(channel: grpc.aio.Channel) -> str | None:
    """gRPC's reason for a channel in TRANSIENT_FAILURE, read from a call that
    fails fast (wait_for_ready off); None if it was answered after all (only
    a pinned connection could carry it)."""
    call = channel.unary_unary("/grpc.health.v1.Health/Check", lambda m: b"", lambda b: b)
    try:
        await call(b"", timeout=1.0, wait_for_ready=False)
    except grpc.aio.AioRpcError as err:
        if err.code() is grpc.StatusCode.UNAVAILABLE:
            return err.details() or "UNAVAILABLE"
        return None  # an answer from the pinned peer: the channel did connect
    except asyncio.CancelledError:
        if task_cancelling():
            raise
        return "channel closed"  # the poller closed it meanwhile (refusal, rotation): the caller decides
    return None


def _check_pinnable(leaf: x509.Certificate, ctx: TenantContext) -> None:
    """gRPC's handshake checks the target name against the SAN DNS names (the
    CN only when there are none). A certificate whose SAN omits its CN cannot
    be pinned to its identity, so it is refused rather than pinned to less.
    DNS names compare without case, as gRPC's check compares them (the CN is
    lower case by its grammar)."""
    names = certinfo.dns_names(leaf)
    if names and ctx.cn not in {name.lower() for name in names}:
        raise IdentityRefused(
            Reason.IDENTITY_MISMATCH,
            f"the SAN DNS names do not include the CN {ctx.cn}; the channel could not be pinned to it",
            peer=certinfo.summary(leaf),
            issuer_tenant=ctx.tenant,
        )
