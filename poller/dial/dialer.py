"""dial_agent: a gRPC channel pinned to a proven tenant identity.

Dialing is three steps, each with one job:
1. collect the chain the agent presents (poller.dial.peer);
2. decide whether it proves the expected tenant (poller.trust.verify);
3. open a grpc.aio channel whose trust anchor is that tenant's intermediate
   only and whose target name is the agent's verified CN, so every
   connection the channel ever makes, reconnects included, is held by gRPC's
   own handshake to the same tenant and name.

On top of that, the connection re-proves the identity (steps 1 and 2) after
every reconnect and whenever a call fails as unavailable, so a revoked or
replaced certificate is noticed with its reason instead of being retried
blindly.

>>> conn = await dial_agent("10.0.0.5:50051", tenant="acme-corp", trust=store)  # doctest: +SKIP
>>> conn.context.tenant
'acme-corp'
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import grpc
from cryptography import x509

from poller import audit
from poller.dial.interceptor import tenant_interceptors
from poller.dial.peer import collector_context, fetch_peer_chain
from poller.identity import certinfo
from poller.identity.context import TenantContext
from poller.identity.names import format_edge_cn
from poller.identity.reasons import IdentityRefused, Reason
from poller.logs import get_logger
from poller.metrics import PollerMetrics, default_metrics
from poller.trust.store import TrustStore
from poller.trust.verify import parse_chain, verify_agent_chain

log = get_logger("poller.dial")

DEFAULT_TIMEOUT = 5.0

# Keepalives notice a dead agent between polls; the reconnect backoff stays
# gRPC's own (jittered, capped) so a flapping agent is not hammered.
_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.max_reconnect_backoff_ms", 30_000),
    ("grpc.initial_reconnect_backoff_ms", 1_000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    # One subchannel per channel object: two channels to one agent must not
    # share a connection proven for another expectation.
    ("grpc.use_local_subchannel_pool", 1),
)


class AgentConnection:
    """A pinned channel to one agent and the identity proven for it.

    Made by dial_agent(); `channel` carries an interceptor that stamps every
    call with `context` and refuses calls once the identity is refused.
    `metrics` is where its identity decisions and calls are counted.
    """

    def __init__(
        self,
        *,
        address: str,
        tenant: str,
        component: str | None,
        partition: str | None,
        trust: TrustStore,
        context: TenantContext | None,
        target_name: str,
        timeout: float,
        options: Sequence[tuple[str, Any]] = (),
        metrics: PollerMetrics | None = None,
    ) -> None:
        self.address = address
        self.metrics = metrics if metrics is not None else default_metrics()
        self.tenant = tenant
        self.component = component
        self.partition = partition
        self.target_name = target_name
        self._trust = trust
        self._timeout = timeout
        self._context: TenantContext | None = context
        self.refusal: IdentityRefused | None = None
        self._reprove_lock = asyncio.Lock()
        self._proofs = 0  # re-proofs done; concurrent failures share one
        client = trust.client
        credentials = grpc.ssl_channel_credentials(
            root_certificates=trust.tenant(tenant).pem,  # the tenant intermediate only
            private_key=client.key_pem,
            certificate_chain=client.chain_pem,
        )
        self.channel: grpc.aio.Channel = grpc.aio.secure_channel(
            address,
            credentials,
            options=[*_CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", target_name), *options],
            interceptors=tenant_interceptors(self),
        )
        self._watcher = asyncio.get_running_loop().create_task(self._watch_reconnects(), name=f"watch {address}")

    @property
    def context(self) -> TenantContext:
        """The proven identity; raises IdentityRefused once it was refused."""
        if self.refusal is not None:
            raise self.refusal
        if self._context is None:  # only while dial_agent is still proving it
            raise IdentityRefused(Reason.UNTRUSTED_CHAIN, f"identity of {self.address} is not proven yet")
        return self._context

    @property
    def log(self) -> Any:
        return log.bind(address=self.address, tenant=self.tenant, agent=self.target_name)

    async def reprove(self) -> TenantContext:
        """Collect and verify the agent's chain again (after a reconnect or an
        unavailable call). A refusal sticks: the connection refuses all calls."""
        generation = self._proofs
        async with self._reprove_lock:
            if self._proofs != generation or self.refusal is not None:
                return self.context  # another caller re-proved while we waited (raises its refusal)
            self._proofs += 1
            try:
                ctx = await _prove(
                    self.address,
                    tenant=self.tenant,
                    trust=self._trust,
                    component=self.component,
                    partition=self.partition,
                    timeout=self._timeout,
                    metrics=self.metrics,
                )
            except IdentityRefused as err:
                self._refuse(err)
                raise
            if ctx.cn != self.target_name:
                mismatch = IdentityRefused(
                    Reason.IDENTITY_MISMATCH,
                    f"agent at {self.address} now presents {ctx.cn}, the channel is pinned to {self.target_name}",
                )
                self._refuse(mismatch)
                raise mismatch
            self._context = ctx
            return ctx

    def _refuse(self, err: IdentityRefused) -> None:
        self.refusal = err

    async def _watch_reconnects(self) -> None:
        """Re-prove the identity each time the channel becomes READY again."""
        seen_ready = False
        state = self.channel.get_state(try_to_connect=False)
        try:
            while True:
                await self.channel.wait_for_state_change(state)
                state = self.channel.get_state(try_to_connect=False)
                if state is grpc.ChannelConnectivity.READY:
                    if seen_ready:
                        try:
                            await self.reprove()
                        except IdentityRefused:
                            pass  # stored by reprove(); every later call raises it
                        except Exception as exc:
                            self.log.debug("reprove after reconnect failed", error=str(exc))
                    seen_ready = True
                elif state is grpc.ChannelConnectivity.SHUTDOWN:
                    return
        except asyncio.CancelledError:
            return
        except RuntimeError:  # the channel was closed under us
            return

    async def close(self, grace: float | None = None) -> None:
        self._watcher.cancel()
        await self.channel.close(grace)

    async def __aenter__(self) -> AgentConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def dial_agent(
    address: str,
    *,
    tenant: str,
    trust: TrustStore,
    component: str | None = None,
    partition: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    options: Sequence[tuple[str, Any]] = (),
    metrics: PollerMetrics | None = None,
) -> AgentConnection:
    """Prove the agent at address belongs to tenant and return a pinned connection.

    Raises IdentityRefused(reason, detail) when the agent's certificate does not
    prove the expected identity, AgentUnreachable when no decision could be made.
    Decisions and calls are counted in `metrics` (a private registry if None).

    >>> async with await dial_agent("127.0.0.1:50051", tenant="acme-corp", trust=store) as conn:  # doctest: +SKIP
    ...     print(conn.context.component_id)
    """

    def connection(ctx: TenantContext | None, target_name: str) -> AgentConnection:
        return AgentConnection(
            address=address,
            tenant=tenant,
            component=component,
            partition=partition,
            trust=trust,
            context=ctx,
            target_name=target_name,
            timeout=timeout,
            options=options,
            metrics=metrics,
        )

    # Without an expected name, or without a CA to pin the channel to (the
    # proof then refuses it, audited), there is nothing to start early.
    if component is None or partition is None or tenant not in trust.tenants:
        ctx = await _prove(
            address, tenant=tenant, trust=trust, component=component, partition=partition, timeout=timeout, metrics=metrics
        )
        return connection(ctx, ctx.cn)

    # The expected name is known: gRPC's own (pinned) handshake starts while
    # the identity is proven, and no call can use the channel before it is.
    conn = connection(None, format_edge_cn(component, partition, tenant))
    conn.channel.get_state(try_to_connect=True)
    try:
        conn._context = await _prove(
            address, tenant=tenant, trust=trust, component=component, partition=partition, timeout=timeout, metrics=metrics
        )
    except BaseException:
        await conn.close()
        raise
    return conn


async def _prove(
    address: str,
    *,
    tenant: str,
    trust: TrustStore,
    component: str | None,
    partition: str | None,
    timeout: float,
    metrics: PollerMetrics | None,
) -> TenantContext:
    """Collect the chain, verify it, check it can be pinned, audit the decision."""
    metrics = metrics if metrics is not None else default_metrics()
    chain = await fetch_peer_chain(address, collector_context(trust.client), timeout=timeout)
    try:
        certs = parse_chain(chain)  # once, for both checks
        ctx = verify_agent_chain(certs, tenant=tenant, trust=trust.snapshot, component=component, partition=partition)
        _check_pinnable(certs[0], ctx)
    except IdentityRefused as err:
        audit.refused(err, address=address, tenant=tenant, metrics=metrics)
        raise
    audit.accepted(ctx, address=address, metrics=metrics)
    return ctx


def _check_pinnable(leaf: x509.Certificate, ctx: TenantContext) -> None:
    """gRPC's handshake checks the target name against the SAN DNS names (the
    CN only when there are none). A certificate whose SAN omits its CN cannot
    be pinned to its identity, so it is refused rather than pinned to less."""
    names = certinfo.dns_names(leaf)
    if names and ctx.cn not in names:
        raise IdentityRefused(
            Reason.IDENTITY_MISMATCH,
            f"the SAN DNS names do not include the CN {ctx.cn}; the channel could not be pinned to it",
            peer=certinfo.summary(leaf),
        )
