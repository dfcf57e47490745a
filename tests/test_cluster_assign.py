"""Rendezvous assignment: the same answer everywhere, few moves, fair shares, tenant restrictions."""

from __future__ import annotations

import pytest

from poller.cluster.assign import Member, assign, owner, ranking, shard_counts, shard_of

AGENTS = {f"edge-{i:03d}": ("acme-corp" if i % 3 else "xyz-inc") for i in range(300)}


def _members(n: int) -> list[Member]:
    return [Member(f"poller-{i}") for i in range(n)]


def _moved(before: dict[str, str | None], after: dict[str, str | None]) -> int:
    return sum(before[name] != after[name] for name in before)


def test_every_replica_computes_the_same_map_whatever_the_member_order() -> None:
    members = _members(3)
    assert assign(AGENTS, members) == assign(AGENTS, list(reversed(members)))
    assert owner("edge-001", members) == owner("edge-001", list(reversed(members)))


def test_balanced_shares_stay_within_15_percent_of_fair() -> None:
    for n in (3, 4):
        counts: dict[str | None, int] = {}
        for member in assign(AGENTS, _members(n)).values():
            counts[member] = counts.get(member, 0) + 1
        fair = len(AGENTS) / n
        assert set(counts) == {m.name for m in _members(n)}
        assert all(abs(c - fair) <= 0.15 * fair for c in counts.values()), counts


def test_a_joining_replica_takes_about_a_quarter_and_moves_little_else() -> None:
    before, after = assign(AGENTS, _members(3)), assign(AGENTS, _members(4))
    moved = _moved(before, after)
    taken = sum(owner == "poller-3" for owner in after.values())
    assert taken >= 0.85 * len(AGENTS) / 4
    assert moved <= 0.30 * len(AGENTS)  # about 1/4 must move to the newcomer; balancing adds a few


def test_a_leaving_replica_moves_only_about_its_own_agents() -> None:
    before, after = assign(AGENTS, _members(4)), assign(AGENTS, _members(3))
    lost = {name for name, member in before.items() if member == "poller-3"}
    moved = {name for name in before if before[name] != after[name]}
    assert lost <= moved
    assert len(moved - lost) <= 0.10 * len(AGENTS)
    assert "poller-3" not in after.values()


def test_unbalanced_rendezvous_moves_only_the_leavers_agents() -> None:
    before = assign(AGENTS, _members(4), balance=None)
    after = assign(AGENTS, _members(3), balance=None)
    assert {n for n in before if before[n] != after[n]} == {n for n, m in before.items() if m == "poller-3"}


def test_weights_give_proportional_shares() -> None:
    members = [Member("big", weight=2.0), Member("small", weight=1.0)]
    owners = list(assign(AGENTS, members, balance=None).values())
    assert 1.5 < owners.count("big") / owners.count("small") < 2.7


def test_tenant_restriction_is_respected_and_unserved_tenants_are_unowned() -> None:
    members = [Member("acme-only", tenants=frozenset({"acme-corp"})), Member("general-1"), Member("general-2")]
    owners = assign(AGENTS, members)
    assert all(AGENTS[name] == "acme-corp" for name, m in owners.items() if m == "acme-only")
    assert any(m == "acme-only" for m in owners.values())
    only_acme = assign(AGENTS, [Member("acme-only", tenants=frozenset({"acme-corp"}))])
    assert {name for name, m in only_acme.items() if m is None} == {n for n, t in AGENTS.items() if t == "xyz-inc"}
    assert ranking("edge-000", members, "xyz-inc")[0] == owner("edge-000", members, "xyz-inc")
    assert "acme-only" not in ranking("edge-000", members, "xyz-inc")


def test_no_members_means_no_owner() -> None:
    assert assign(AGENTS, []) == dict.fromkeys(AGENTS)


def test_static_shards_cover_every_agent_exactly_once() -> None:
    names = list(AGENTS)
    shards = shard_of(names, 2)
    assert sorted(shards) == sorted(names)
    assert set(shards.values()) == {0, 1}
    assert sum(shard_counts(names, 2).values()) == len(names)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_member_weight_must_be_positive_and_finite(bad: float) -> None:
    with pytest.raises(ValueError, match="weight"):
        Member("p", weight=bad)


def test_balance_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="balance"):
        assign(AGENTS, _members(2), balance=0.9)
