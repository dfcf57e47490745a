"""Poll and dial slots are shared fairly between tenants (issue 18, item 13).

A first-come, first-served bound let one tenant's hanging agents starve the
others: `max_concurrent_polls=2` and fourteen hanging acme-corp agents left
xyz-inc one poll in fifteen seconds instead of five, and the agents queued
behind were skipped without a result. Now each tenant has its share, a
tenant may borrow only while a reserve stays free for the others, and the
wait for a slot counts against the cycle deadline (`pending`, never a skip).

The end-to-end test uses real mock agents on mTLS; the Limiter tests park
tasks on the limiter and read its state, with no sleeps.
"""

from __future__ import annotations

import asyncio
import collections

from poller.config import parse_config
from poller.daemon.dialgate import DialGate
from poller.daemon.limiter import Limiter
from poller.daemon.scheduler import Scheduler
from poller.identity.reasons import Reason
from poller.testing.memory_sink import MemorySink
from poller.trust.store import TrustStore

ACME, XYZ = "acme-corp", "xyz-inc"
STATUS = {"service_type": "process", "service_name": "nginx"}


async def park() -> None:
    """Let tasks just created run up to their first wait (one pass of the loop, not a timed sleep)."""
    await asyncio.sleep(0)


async def hold(limiter: Limiter, tenant: str | None, entered: list[str | None], release: asyncio.Event) -> None:
    async with limiter.slot(tenant):
        entered.append(tenant)
        await release.wait()


async def test_a_tenant_holding_its_share_cannot_take_the_reserve():
    limiter = Limiter(2, tenants=[ACME, XYZ])
    entered: list[str | None] = []
    release = asyncio.Event()
    hangers = [asyncio.ensure_future(hold(limiter, ACME, entered, release)) for _ in range(14)]
    await park()
    assert entered == [ACME] and limiter.held(ACME) == 1  # share 1; the other slot is the reserve
    other = asyncio.ensure_future(hold(limiter, XYZ, entered, release))
    await park()
    assert entered == [ACME, XYZ]  # xyz-inc got a slot at once, behind fourteen waiters
    release.set()
    await asyncio.gather(*hangers, other)
    assert limiter.in_use == 0 and limiter.held(ACME) == 0


async def test_a_freed_slot_goes_to_a_tenant_under_its_share_before_a_borrower():
    limiter = Limiter(4, tenants=[ACME, XYZ])  # share 2 each, reserve 1
    entered: list[str | None] = []
    gates = [asyncio.Event() for _ in range(4)]
    acme = [asyncio.ensure_future(hold(limiter, ACME, entered, gates[i])) for i in range(3)]
    await park()
    assert limiter.held(ACME) == 3  # borrowed one, leaving the reserve of 1
    late_acme = asyncio.ensure_future(hold(limiter, ACME, entered, gates[3]))
    await park()
    assert limiter.held(ACME) == 3  # a fourth would take the reserve
    xyz = asyncio.ensure_future(hold(limiter, XYZ, entered, asyncio.Event()))
    await park()
    assert limiter.held(XYZ) == 1 and limiter.in_use == 4
    gates[0].set()  # an acme-corp slot frees: acme-corp is over its share, so it waits on
    await park()
    await park()
    assert limiter.held(ACME) == 2 and not late_acme.done() and entered.count(ACME) == 3
    for task in (late_acme, xyz, *acme):
        task.cancel()
    await asyncio.gather(late_acme, xyz, *acme, return_exceptions=True)
    assert limiter.in_use == 0


async def test_one_tenant_alone_uses_the_whole_bound():
    limiter = Limiter(8, tenants=[ACME])
    entered: list[str | None] = []
    release = asyncio.Event()
    tasks = [asyncio.ensure_future(hold(limiter, ACME, entered, release)) for _ in range(10)]
    await park()
    assert limiter.held(ACME) == 8 and limiter.reserve() == 0
    release.set()
    await asyncio.gather(*tasks)


async def test_a_large_tenant_borrows_all_but_the_reserve_while_others_are_idle():
    limiter = Limiter(500, tenants=[ACME, XYZ])
    entered: list[str | None] = []
    release = asyncio.Event()
    tasks = [asyncio.ensure_future(hold(limiter, ACME, entered, release)) for _ in range(600)]
    await park()
    assert limiter.share(ACME) == 250 and limiter.reserve() == 1
    assert limiter.held(ACME) == 499  # not capped at its share: the others are idle
    release.set()
    await asyncio.gather(*tasks)


async def test_a_cancelled_waiter_leaves_no_trace():
    limiter = Limiter(2, tenants=[ACME, XYZ])
    release = asyncio.Event()
    entered: list[str | None] = []
    first = asyncio.ensure_future(hold(limiter, ACME, entered, release))
    waiting = asyncio.ensure_future(hold(limiter, ACME, entered, release))
    await park()
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    release.set()
    await first
    assert limiter.in_use == 0 and limiter.held(ACME) == 0 and entered == [ACME]


async def test_dial_slots_are_shared_between_tenants():
    gate = DialGate(initial=2, low=2, high=2, tenants=[ACME, XYZ])
    release = asyncio.Event()
    entered: list[str] = []

    async def dial(tenant: str) -> None:
        async with gate.admit(tenant):
            entered.append(tenant)
            await release.wait()

    hangers = [asyncio.ensure_future(dial(ACME)) for _ in range(5)]
    await park()
    other = asyncio.ensure_future(dial(XYZ))
    await park()
    assert entered == [ACME, XYZ] and gate.in_use == 2
    release.set()
    await asyncio.gather(*hangers, other)


async def test_hanging_agents_of_one_tenant_leave_another_tenant_its_polls(pki, serve):
    hanging = await serve(pki.agent(ACME, "agent-001"))
    hanging.behaviour.hang = True  # GetStatus never answers
    good = await serve(pki.agent(XYZ, "agent-001"))
    agents = {f"hang-{i:02}": {"address": hanging.address, "tenant": ACME, "checks": [STATUS]} for i in range(14)}
    agents["xyz"] = {"address": good.address, "tenant": XYZ, "checks": [STATUS]}  # last: FIFO queued it behind all
    settings = parse_config(
        {
            "poller_id": "poller-test",
            "poll_interval": "10s",
            "cycle_timeout": "2s",
            "call_timeout": "5s",
            "max_concurrent_polls": 2,
            "certs_dir": str(pki.directory),
            "agents": agents,
        }
    )
    sink = MemorySink()
    scheduler = Scheduler(settings, TrustStore(pki.directory), sink.publish)
    scheduler.start(loops=False)
    try:
        results = await scheduler.run_once()
    finally:
        await scheduler.stop(grace=1)

    by_agent = {r.agent: r for r in results}
    assert set(by_agent) == set(agents)  # every agent a result: none skipped while it queued
    assert by_agent["xyz"].available and by_agent["xyz"].proven, by_agent["xyz"]
    acme = collections.Counter(r.reason for r in results if r.tenant == ACME)
    assert set(acme) <= {Reason.TIMEOUT, Reason.PENDING}, acme
    assert acme[Reason.PENDING] >= 1  # queued past the deadline: said, not skipped
    assert hanging.count("GetStatus") < 14  # acme-corp polled within its share, not on every slot


async def test_thousands_of_waiters_cancelled_together_leave_a_clean_limiter():
    # The deadline of a large first wave cancels thousands of queued cycles at once;
    # each must be counted out without scanning the queue, and the rest still served.
    limiter = Limiter(2, tenants=[ACME, XYZ])
    release = asyncio.Event()
    entered: list[str | None] = []
    holders = [asyncio.ensure_future(hold(limiter, t, entered, release)) for t in (ACME, XYZ)]
    waiting = [asyncio.ensure_future(hold(limiter, ACME if i % 2 else XYZ, entered, release)) for i in range(5000)]
    await park()
    assert entered == [ACME, XYZ]
    for task in waiting[:-2]:
        task.cancel()
    await asyncio.gather(*waiting[:-2], return_exceptions=True)
    release.set()
    await asyncio.gather(*holders, *waiting[-2:])
    assert sorted(entered[2:]) == [ACME, XYZ]  # the two left were served, the cancelled never
    assert limiter.in_use == 0 and limiter.held(ACME) == 0 and limiter.held(XYZ) == 0
    async with limiter.slot(ACME), limiter.slot(XYZ):  # and it still hands out its slots
        assert limiter.in_use == 2
