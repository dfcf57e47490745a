"""Who may push: the registry of push entries, and its policy for the interceptor.

A push entry names one agent by its proven identity: tenant, component and,
optionally, partition. A caller proven for an identity that no entry names is
refused `unknown_agent` before any handler runs, unless the registry accepts
unlisted agents (any identity proven for a tenant with a CA; no checks). An
unlisted agent is named `unlisted:<tenant>/<component>.<partition>`: a form no
listed entry may take (nor any agent of a config), so an unlisted certificate
never feeds a listed agent's liveness or results.

>>> pushes = PushRegistry([PushEntry("edge-1", tenant="acme-corp", component="agent-001", interval=30.0)])
>>> pushes.lookup("acme-corp", "agent-001", "partition-1").name
'edge-1'
>>> pushes.lookup("acme-corp", "agent-002", "partition-1") is None
True
>>> unlisted_name("acme-corp", "agent-002", "partition-1")
'unlisted:acme-corp/agent-002.partition-1'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from poller.config.model import UNLISTED_AGENT_PREFIX
from poller.gateway.checks import CheckSpec, agent_checks, config_version
from poller.identity.context import TenantContext
from poller.identity.names import check_label
from poller.identity.reasons import InvalidArgument, Reason
from poller.policy import ALLOW, Access, Decision, Policy
from poller.proto import monitoring_pb2 as pb

__all__ = ["PushEntry", "PushPolicy", "PushRegistry", "unlisted_name"]


def unlisted_name(tenant: str, component: str, partition: str) -> str:
    """The name of an agent no entry lists (accept_unlisted): its whole identity, tenant first."""
    return f"{UNLISTED_AGENT_PREFIX}{tenant}/{component}.{partition}"


@dataclass(frozen=True)
class PushEntry:
    """One agent allowed to push: `name` (the config's entry name, the agent's
    name in results and on the status board), its proven identity, its checks
    and its push interval in seconds. `listed` is False for an agent admitted
    by accept_unlisted (it has no checks)."""

    name: str
    tenant: str
    component: str
    partition: str | None = None
    checks: Sequence[CheckSpec] = ()
    interval: float = 30.0
    listed: bool = True
    config_timestamp: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        for what, value in (("tenant", self.tenant), ("component", self.component), ("partition", self.partition)):
            if value is not None:
                check_label(value, what)
        if self.interval <= 0:
            raise InvalidArgument(f"push entry {self.name!r}: interval must be positive")
        if self.listed and self.name.startswith(UNLISTED_AGENT_PREFIX):
            raise InvalidArgument(f"push entry {self.name!r}: names starting {UNLISTED_AGENT_PREFIX!r} are unlisted agents'")

    @cached_property
    def agent_checks(self) -> tuple[pb.AgentCheckConfig, ...]:
        """The checks as GetConfig answers them (poller.gateway.checks)."""
        return tuple(agent_checks(self.checks, interval=self.interval))

    @cached_property
    def config_version(self) -> str:
        return config_version(self.agent_checks)

    def admits(self, ctx: TenantContext) -> bool:
        return (
            ctx.tenant == self.tenant
            and ctx.component_id == self.component
            and (self.partition is None or ctx.partition_id == self.partition)
        )


class PushRegistry:
    """The push entries in force (replace them with set_entries on a reload).

    `accept_unlisted`: admit any identity proven for a tenant with a CA, with
    no checks and `default_interval`.
    """

    def __init__(
        self, entries: Iterable[PushEntry] = (), *, accept_unlisted: bool = False, default_interval: float = 30.0
    ) -> None:
        self.accept_unlisted = accept_unlisted
        self.default_interval = default_interval
        self._by_identity: dict[tuple[str, str], list[PushEntry]] = {}
        self._listeners: list[Callable[[], None]] = []
        self.set_entries(entries)

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call `listener()` after each set_entries (the gateway ends the open calls a reload no longer admits)."""
        self._listeners.append(listener)

    def set_entries(self, entries: Iterable[PushEntry]) -> None:
        listed = tuple(entries)
        by_identity: dict[tuple[str, str], list[PushEntry]] = {}
        for entry in listed:
            by_identity.setdefault((entry.tenant, entry.component), []).append(entry)
        for group in by_identity.values():  # sorted once, so that lookup (twice per push) scans only
            group.sort(key=lambda e: e.partition is None)
        self._by_identity = by_identity
        self._entries = listed
        self._tenants = frozenset(entry.tenant for entry in listed)
        for listener in self._listeners:
            listener()

    @property
    def entries(self) -> tuple[PushEntry, ...]:
        return self._entries

    @property
    def tenants(self) -> frozenset[str]:
        """The tenants the entries name (kept with them: a push asks on every lie about its tenant)."""
        return self._tenants

    def lookup(self, tenant: str, component: str, partition: str) -> PushEntry | None:
        """The entry listing this identity (an entry with a partition is preferred), or None."""
        for entry in self._by_identity.get((tenant, component), ()):
            if entry.partition is None or entry.partition == partition:
                return entry
        return None

    def entry_for(self, ctx: TenantContext) -> PushEntry | None:
        """The entry for a proven caller: listed, or (accept_unlisted) a synthetic one."""
        entry = self.lookup(ctx.tenant, ctx.component_id, ctx.partition_id)
        if entry is None and self.accept_unlisted:
            entry = PushEntry(
                name=unlisted_name(ctx.tenant, ctx.component_id, ctx.partition_id),
                tenant=ctx.tenant,
                component=ctx.component_id,
                partition=ctx.partition_id,
                interval=self.default_interval,
                listed=False,
            )
        return entry

    def policy(self, on_unknown: Callable[[str, str | None], None] | None = None) -> PushPolicy:
        """The interceptor policy: a proven tenant identity that an entry admits."""
        return PushPolicy(self, on_unknown)


class PushPolicy(Policy):
    """Allows a proven tenant identity the registry admits; else `unknown_agent`.
    `on_unknown(tenant, method)` is told of each such refusal (the gateway counts it)."""

    def __init__(self, registry: PushRegistry, on_unknown: Callable[[str, str | None], None] | None = None) -> None:
        self.registry = registry
        self.on_unknown = on_unknown

    def evaluate(self, access: Access) -> Decision:
        ctx = access.identity
        if ctx is None:
            return Decision(False, Reason.POLICY_DENIED, "push agents are tenant identities")
        if self.registry.entry_for(ctx) is None:
            if self.on_unknown is not None:
                self.on_unknown(ctx.tenant, access.method)
            return Decision(
                False,
                Reason.UNKNOWN_AGENT,
                f"no push agent {ctx.component_id} (partition {ctx.partition_id}) is listed for tenant {ctx.tenant}",
            )
        return ALLOW

    def __repr__(self) -> str:
        return "push_registry()"
