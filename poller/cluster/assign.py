"""Rendezvous (highest-random-weight) assignment of agents to poller replicas.

Every replica computes the same owner for an agent from the same inputs, with
no coordination: the member with the highest score for that agent wins. When a
member leaves, only its own agents move (each to its next-best member); when one
joins, it takes about 1/N of the agents and no other agent moves. Weights use
the logarithmic method (score = -weight / ln(u), u a uniform hash in (0, 1)), so
a member of weight 2 gets about twice the agents of a member of weight 1.

>>> members = [Member("poller-a"), Member("poller-b"), Member("poller-c")]
>>> owner("edge-1", members) in {"poller-a", "poller-b", "poller-c"}
True
>>> owner("edge-1", members) == owner("edge-1", list(reversed(members)))
True
>>> shard_of(["edge-1", "edge-2"], 1)
{'edge-1': 0, 'edge-2': 0}
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "DEFAULT_BALANCE",
    "MAX_CAPACITY",
    "Member",
    "assign",
    "owner",
    "ranking",
    "shard_counts",
    "shard_members",
    "shard_of",
]

#: The largest weight a member may have (a config key `cluster.capacity`; a record claiming more is capped).
MAX_CAPACITY = 100.0

_SCALE = float(1 << 64)

# No replica takes more than this multiple of its fair share (bounded loads).
DEFAULT_BALANCE = 1.02


@dataclass(frozen=True, slots=True)
class Member:
    """A replica that can own agents.

    `tenants`, when set, restricts the member to agents of those tenants (a
    replica dedicated to one large tenant); None means any tenant.
    """

    name: str
    weight: float = 1.0
    tenants: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a member needs a name")
        if not (self.weight > 0 and math.isfinite(self.weight)):
            raise ValueError(f"member {self.name!r}: weight must be a positive number, got {self.weight!r}")

    def serves(self, tenant: str | None) -> bool:
        return self.tenants is None or tenant is None or tenant in self.tenants


_MASK = (1 << 64) - 1


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _mix(value: int) -> int:
    """splitmix64's finaliser: a cheap, well-mixed 64-bit permutation."""
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK
    return value ^ (value >> 31)


_Seeded = Sequence[tuple[Member, int]]


def _seeded(members: Sequence[Member]) -> list[tuple[Member, int]]:
    return [(member, _hash64(member.name)) for member in members]


def _scores(key: str, seeded: _Seeded, tenant: str | None) -> list[tuple[float, str]]:
    """(score, name) of every member that serves `tenant`, for `key`.

    The key is hashed once and mixed with each member's own hash, so ranking R
    members costs one blake2b and R integer mixes (the same on every replica
    and Python build: no use of hash()).
    """
    key_hash = _hash64(key)
    return [
        (-member.weight / math.log((_mix(key_hash ^ seed) + 0.5) / _SCALE), member.name)  # uniform in (0, 1)
        for member, seed in seeded
        if member.serves(tenant)
    ]


def owner(key: str, members: Sequence[Member], tenant: str | None = None) -> str | None:
    """The member that owns `key` (an agent name), or None when no member serves its tenant.

    Ties cannot depend on the order of `members`: the name breaks them.
    """
    scored = _scores(key, _seeded(members), tenant)
    return max(scored)[1] if scored else None


def _best(scored: list[tuple[float, str]]) -> str | None:
    return max(scored)[1] if scored else None


def ranking(key: str, members: Sequence[Member], tenant: str | None = None) -> list[str]:
    """The members that serve `tenant`, best first for `key` (owner() is the first)."""
    return [name for _, name in sorted(_scores(key, _seeded(members), tenant), reverse=True)]


def assign(
    agents: Mapping[str, str | None] | Iterable[str],
    members: Sequence[Member],
    *,
    balance: float | None = DEFAULT_BALANCE,
) -> dict[str, str | None]:
    """Owner of every agent: `agents` maps agent name to its tenant (or is just names).

    Plain rendezvous hashing spreads agents binomially: at 300 agents on 4
    replicas one of them can easily get 20% more than its share. With
    `balance` (the bounded-loads variant), no member takes more than
    `balance` times its weighted share: agents are placed in name order, each
    on the best-ranked member that still has room, so every replica computes
    the same map and a join or leave still moves few agents. Agents whose
    tenant no member serves map to None (reported as unowned); an agent whose
    every eligible member is full goes to its best one anyway.
    """
    tenants: Mapping[str, str | None] = agents if isinstance(agents, Mapping) else dict.fromkeys(agents)
    seeded = _seeded(members)
    if balance is None:
        return {name: _best(_scores(name, seeded, tenant)) for name, tenant in tenants.items()}
    if balance < 1.0:
        raise ValueError(f"balance must be at least 1.0, got {balance}")
    total_weight = sum(m.weight for m in members)
    cap = {m.name: math.ceil(balance * len(tenants) * m.weight / total_weight) for m in members} if members else {}
    load: Counter[str] = Counter()
    result: dict[str, str | None] = {}
    for name in sorted(tenants):
        scored = _scores(name, seeded, tenants[name])
        chosen = _best(scored)
        if chosen is not None and load[chosen] >= cap[chosen]:  # full: the best one with room, else stay
            chosen = next((m for _, m in sorted(scored, reverse=True) if load[m] < cap[m]), chosen)
        if chosen is not None:
            load[chosen] += 1
        result[name] = chosen
    return result


def shard_members(count: int) -> list[Member]:
    """The members of static sharding: shards 0..count-1, equally weighted."""
    if count < 1:
        raise ValueError(f"shard count must be at least 1, got {count}")
    return [Member(f"shard-{i}") for i in range(count)]


def shard_of(agents: Iterable[str], count: int) -> dict[str, int]:
    """The static shard (0..count-1) that polls each agent, by balanced rendezvous hashing.

    Every replica has the same agent list, so every replica computes the same
    split; unlike hash-mod, growing count from n to n+1 moves about 1/(n+1) of the agents.
    """
    owners = assign(agents, shard_members(count))
    return {agent: int(str(shard).removeprefix("shard-")) for agent, shard in owners.items()}


def shard_counts(agents: Iterable[str], count: int) -> Counter[int]:
    """How many of `agents` each shard gets (for `config check`)."""
    return Counter(shard_of(agents, count).values())
