"""Policies: small composable predicates over a proven identity.

In the spirit of go-spiffe's authorizers, a policy looks only at what was
proven and answers allow or deny with a reason. The same predicates serve
two places:

- result handlers (poller.delivery): `identity` is the result's proven
  TenantContext, `platform` the platform identity the handler was registered
  with (if any), `result` the PollResult;
- server methods (poller.server): `identity` is the caller's proven
  TenantContext, or `platform` the caller's proven platform identity.

A tenant predicate is true only for a proven tenant identity: an unproven
result (agent unreachable or refused, no payload) or a platform caller never
satisfies `same_tenant` / `tenant_in` / `component_type_in`. A platform
identity is allowed only where a policy says `platform_admin()`.

>>> policy = any_of(same_tenant("acme-corp"), platform_admin())
>>> policy.evaluate(Access(identity=None, platform=None)).allowed
False
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from poller.identity.context import TenantContext
from poller.identity.names import check_label
from poller.identity.platform import PlatformIdentity
from poller.identity.reasons import InvalidArgument, Reason

__all__ = [
    "Access",
    "Decision",
    "Policy",
    "all_of",
    "any_of",
    "any_tenant",
    "component_type_in",
    "platform_admin",
    "same_tenant",
    "tenant_in",
]


@dataclass(frozen=True, slots=True)
class Access:
    """What a policy decides over: proven identities, and what is being touched.

    `tenant` is the tenant whose data is touched (for a platform caller of a
    server method, the tenant it asked for, for the audit line only).
    """

    identity: TenantContext | None
    platform: PlatformIdentity | None = None
    result: Any = None
    method: str | None = None
    tenant: str | None = None

    @property
    def tenant_touched(self) -> str | None:
        return self.identity.tenant if self.identity is not None else self.tenant


@dataclass(frozen=True, slots=True)
class Decision:
    """allowed, or not with a reason code and a detail naming the predicate that said no."""

    allowed: bool
    reason: Reason | None = None
    detail: str = ""


ALLOW = Decision(True)


def _deny(detail: str) -> Decision:
    return Decision(False, Reason.POLICY_DENIED, detail)


class Policy:
    """Base of every policy: evaluate() decides; calling it gives a bool.

    `a & b` is all_of(a, b) and `a | b` is any_of(a, b).
    """

    def evaluate(self, access: Access) -> Decision:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, access: Access) -> bool:
        return self.evaluate(access).allowed

    def __and__(self, other: Policy) -> Policy:
        return all_of(self, other)

    def __or__(self, other: Policy) -> Policy:
        return any_of(self, other)


@dataclass(frozen=True, slots=True, repr=False)
class _SameTenant(Policy):
    slug: str

    def evaluate(self, access: Access) -> Decision:
        if access.identity is None:
            return _deny(f"same_tenant({self.slug}): no proven tenant identity")
        if access.identity.tenant != self.slug:
            return _deny(f"same_tenant({self.slug}): tenant is {access.identity.tenant}")
        return ALLOW

    def __repr__(self) -> str:
        return f"same_tenant({self.slug!r})"


@dataclass(frozen=True, slots=True, repr=False)
class _TenantIn(Policy):
    slugs: frozenset[str]

    def evaluate(self, access: Access) -> Decision:
        if access.identity is None:
            return _deny(f"{self!r}: no proven tenant identity")
        if access.identity.tenant not in self.slugs:
            return _deny(f"{self!r}: tenant is {access.identity.tenant}")
        return ALLOW

    def __repr__(self) -> str:
        return f"tenant_in({sorted(self.slugs)!r})"


@dataclass(frozen=True, slots=True, repr=False)
class _ComponentTypeIn(Policy):
    types: frozenset[str]

    def evaluate(self, access: Access) -> Decision:
        if access.identity is None:
            return _deny(f"{self!r}: no proven tenant identity")
        # A certificate without a SPIFFE type has no proven type: never "in".
        if access.identity.component_type not in self.types:
            return _deny(f"{self!r}: component type is {access.identity.component_type}")
        return ALLOW

    def __repr__(self) -> str:
        return f"component_type_in({sorted(self.types)!r})"


class _AnyTenant(Policy):
    def evaluate(self, access: Access) -> Decision:
        if access.identity is None:
            return _deny("any_tenant(): no proven tenant identity")
        return ALLOW

    def __repr__(self) -> str:
        return "any_tenant()"


class _PlatformAdmin(Policy):
    def evaluate(self, access: Access) -> Decision:
        if access.platform is None:
            return _deny("platform_admin(): not a platform identity")
        return ALLOW

    def __repr__(self) -> str:
        return "platform_admin()"


@dataclass(frozen=True, slots=True, repr=False)
class _AllOf(Policy):
    parts: tuple[Policy, ...]

    def evaluate(self, access: Access) -> Decision:
        for part in self.parts:
            decision = part.evaluate(access)
            if not decision.allowed:
                return decision
        return ALLOW

    def __repr__(self) -> str:
        return f"all_of({', '.join(map(repr, self.parts))})"


@dataclass(frozen=True, slots=True, repr=False)
class _AnyOf(Policy):
    parts: tuple[Policy, ...]

    def evaluate(self, access: Access) -> Decision:
        denials = []
        for part in self.parts:
            decision = part.evaluate(access)
            if decision.allowed:
                return ALLOW
            denials.append(decision.detail)
        return _deny("; ".join(denials) or "any_of(): no policy given")

    def __repr__(self) -> str:
        return f"any_of({', '.join(map(repr, self.parts))})"


def _labels(values: Iterable[str], what: str) -> frozenset[str]:
    if isinstance(values, str):  # tenant_in("acme-corp") would be a set of letters
        raise TypeError(f"{what}: pass a collection of strings, not one string")
    found = frozenset(check_label(v, what) for v in values)
    if not found:
        raise InvalidArgument(f"{what}: an empty set allows nothing; say so with a policy that denies")
    return found


def same_tenant(slug: str) -> Policy:
    """Allow a proven identity of tenant `slug`.

    >>> same_tenant("acme-corp")
    same_tenant('acme-corp')
    """
    return _SameTenant(check_label(slug, "tenant slug"))


def tenant_in(slugs: Iterable[str]) -> Policy:
    """Allow a proven identity of any of these tenants.

    >>> tenant_in({"acme-corp", "xyz-inc"})
    tenant_in(['acme-corp', 'xyz-inc'])
    """
    return _TenantIn(_labels(slugs, "tenant slug"))


def component_type_in(types: Iterable[str]) -> Policy:
    """Allow a proven identity whose component type (from its SPIFFE ID) is one of these.

    >>> component_type_in({"gateway"})
    component_type_in(['gateway'])
    """
    return _ComponentTypeIn(_labels(types, "component type"))


def any_tenant() -> Policy:
    """Allow any proven tenant identity (the server interceptor's default).

    >>> any_tenant()
    any_tenant()
    """
    return _AnyTenant()


def platform_admin() -> Policy:
    """Allow a proven platform identity (cross-tenant; every such access is audited).

    >>> platform_admin()
    platform_admin()
    """
    return _PlatformAdmin()


def all_of(*policies: Policy) -> Policy:
    """Allow only if every policy allows (the first denial is the answer).

    >>> all_of(same_tenant("acme-corp"), component_type_in({"agent"}))
    all_of(same_tenant('acme-corp'), component_type_in(['agent']))
    """
    if not policies:
        raise InvalidArgument("all_of() needs at least one policy (an empty all_of would allow everything)")
    return _AllOf(tuple(_checked(p) for p in policies))


def any_of(*policies: Policy) -> Policy:
    """Allow if any policy allows.

    >>> any_of(same_tenant("acme-corp"), platform_admin())
    any_of(same_tenant('acme-corp'), platform_admin())
    """
    if not policies:
        raise InvalidArgument("any_of() needs at least one policy")
    return _AnyOf(tuple(_checked(p) for p in policies))


def _checked(policy: object) -> Policy:
    if not isinstance(policy, Policy):
        raise TypeError(f"{policy!r} is not a Policy")
    return policy
