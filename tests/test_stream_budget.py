"""The poller-wide stream reassembly budget (issue 10, noisy neighbour).

One tenant's agents streaming without ever sending is_final must not exhaust
the poller: their streams are refused once the tenant's fair share is used,
saying so, while the other tenant's agents are polled as usual. Real mTLS
mock agents on loopback; the hostile ones send the same chunk object over and
over, so the agents cost nothing and only the poller is asked to hold bytes.
"""

from __future__ import annotations

import os
import threading

import pytest

from poller.agent import AgentClient, IncompleteStream, ReassemblyBudget
from poller.config import parse_config
from poller.daemon.scheduler import Scheduler
from poller.dial.dialer import dial_agent
from poller.identity.reasons import InvalidArgument, Reason
from poller.testing.memory_sink import MemorySink
from poller.trust.store import TrustStore

ACME, XYZ = "acme-corp", "xyz-inc"
MiB = 1024 * 1024


# -- the budget on its own ---------------------------------------------------------


def test_each_announced_tenant_gets_an_equal_share() -> None:
    budget = ReassemblyBudget(40 * MiB, tenants=[ACME, XYZ])
    assert budget.share(ACME) == budget.share(XYZ) == 20 * MiB


def test_a_stream_over_its_tenants_share_is_refused_and_says_so() -> None:
    budget = ReassemblyBudget(10 * MiB, tenants=[ACME, XYZ])
    first, second = budget.lease(ACME), budget.lease(ACME)
    first.grow(3 * MiB)
    with pytest.raises(IncompleteStream) as refused:
        second.grow(3 * MiB)  # acme would hold 6 MiB of its 5 MiB share
    assert refused.value.reason is Reason.INCOMPLETE_STREAM
    assert f"reassembly budget exhausted for tenant {ACME}" in refused.value.detail
    assert budget.in_use(ACME) == 3 * MiB  # the refused growth took nothing
    other = budget.lease(XYZ)
    other.grow(5 * MiB)  # xyz's share is untouched by acme's streams
    assert budget.in_use() == 8 * MiB


def test_released_leases_give_every_byte_back() -> None:
    budget = ReassemblyBudget(4 * MiB, tenants=[ACME])
    with budget.lease(ACME) as lease:
        lease.grow(4 * MiB)
        with pytest.raises(IncompleteStream):
            budget.lease(ACME).grow(1)
    assert budget.in_use() == 0
    lease.release()  # idempotent
    assert budget.in_use() == 0
    with pytest.raises(IncompleteStream):
        lease.grow(1)  # a released lease holds nothing more


def test_a_tenant_nobody_announced_still_gets_a_share_not_the_whole_budget() -> None:
    budget = ReassemblyBudget(30 * MiB, tenants=[ACME, XYZ])
    assert budget.share("stranger") == 10 * MiB
    lease = budget.lease("stranger")
    with pytest.raises(IncompleteStream, match="stranger"):
        lease.grow(11 * MiB)
    assert budget.share(ACME) == 10 * MiB  # while it holds a stream, the shares are thirds


def test_the_sum_never_exceeds_the_total_while_shares_shrink() -> None:
    budget = ReassemblyBudget(10 * MiB)  # nobody announced: the first tenant may hold it all
    budget.lease(ACME).grow(10 * MiB)
    late = budget.lease(XYZ)  # now the shares are halves, but acme already holds everything
    with pytest.raises(IncompleteStream, match=f"tenant {XYZ}"):
        late.grow(1)
    assert budget.peak == 10 * MiB


def test_a_budget_must_be_positive() -> None:
    with pytest.raises(InvalidArgument):
        ReassemblyBudget(0)


def test_config_key_sets_the_budget_and_refuses_tiny_ones(pki) -> None:
    base = {"poller_id": "p", "certs_dir": str(pki.directory), "agents": {}}
    assert parse_config({**base, "reassembly_budget": 64 * MiB}).reassembly_budget == 64 * MiB
    with pytest.raises(Exception, match="reassembly_budget"):
        parse_config({**base, "reassembly_budget": 1000})


# -- over real streams -------------------------------------------------------------


async def test_fetch_document_is_held_to_the_budget_and_releases_it(pki, serve, trust) -> None:
    agent = await serve(pki.agent(ACME))
    agent.behaviour.endless_chunk = bytes(256 * 1024)
    budget = ReassemblyBudget(4 * MiB, tenants=[ACME])
    async with await dial_agent(agent.address, tenant=ACME, trust=trust) as conn:
        client = AgentClient(conn, budget=budget)
        with pytest.raises(IncompleteStream, match=f"reassembly budget exhausted for tenant {ACME}"):
            await client.fetch_document("s", "sweep")
        assert budget.in_use() == 0
        agent.behaviour.endless_chunk = None  # an honest document fits and is handed on whole
        doc = await client.fetch_document("s", "sweep")
    assert doc.data == agent.behaviour.stream_document
    assert budget.in_use() == 0


class _RssSampler:
    """The process's peak resident set while running, sampled from /proc by a
    thread (the event loop is busy with the streams)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.rss())

    def __enter__(self) -> _RssSampler:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="RSS read from /proc")
async def test_one_tenants_endless_streams_cannot_take_the_other_tenant_down(pki, serve, log_events) -> None:
    """20 acme agents each offer 200 MB without is_final (scaled: 256 KiB chunks,
    a 16 MiB budget); xyz's agents are polled in the same cycle."""
    chunk = bytes(256 * 1024)
    hostile = []
    for i in range(20):
        agent = await serve(pki.agent(ACME, f"edge-{i}"))
        agent.behaviour.endless_chunk = chunk
        agent.behaviour.endless_limit = 200 * MiB // len(chunk)
        hostile.append(agent)
    honest = [await serve(pki.agent(XYZ, f"edge-{i}")) for i in range(2)]
    stream_check = [{"service_type": "sweep", "service_name": "s", "results_interval": "1m"}]
    checks = [{"service_type": "process", "service_name": "nginx"}, *stream_check]
    agents = {f"acme-{i}": {"address": a.address, "tenant": ACME, "checks": stream_check} for i, a in enumerate(hostile)}
    agents |= {f"xyz-{i}": {"address": a.address, "tenant": XYZ, "checks": checks} for i, a in enumerate(honest)}
    settings = parse_config(
        {
            "poller_id": "p",
            "poll_interval": "60s",
            "call_timeout": "20s",
            "certs_dir": str(pki.directory),
            "reassembly_budget": 16 * MiB,
            "agents": agents,
        }
    )
    sink = MemorySink()
    scheduler = Scheduler(settings, TrustStore(pki.directory), sink.publish)
    scheduler.start(loops=False)
    try:
        with _RssSampler() as rss:
            before = rss.peak
            results = await scheduler.run_once()
    finally:
        await scheduler.stop(grace=1)

    acme = [r for r in results if r.tenant == ACME]
    assert len(acme) == 20
    assert {(r.available, r.reason) for r in acme} == {(False, Reason.INCOMPLETE_STREAM)}
    refusals = [e for e in log_events() if e["event"] == "stream_incomplete"]
    assert len(refusals) == 20
    assert all(f"reassembly budget exhausted for tenant {ACME}" in e["detail"] and e["tenant"] == ACME for e in refusals)

    xyz = sorted((r.agent, r.kind, r.available, r.payload) for r in results if r.tenant == XYZ)
    document = honest[0].behaviour.stream_document
    assert xyz == [
        ("xyz-0", "status", True, b'{"status":"ok"}'),
        ("xyz-0", "stream", True, document),
        ("xyz-1", "status", True, b'{"status":"ok"}'),
        ("xyz-1", "stream", True, document),
    ]
    assert scheduler.budget.peak <= 16 * MiB
    assert scheduler.budget.in_use() == 0
    # 20 x 200 MB offered; what the poller held stays near its budget (gRPC's
    # buffers and the test's own agents included), nowhere near 4 GB.
    assert rss.peak - before < 256 * MiB


def test_the_budgets_running_totals_agree_with_its_leases_whatever_the_order():
    # The totals (bytes held, tenants without an announced share) are kept as leases
    # come and go, so a lease costs the same whatever the number of tenants; a random
    # walk of leases, grows, releases and reloads checks them against a recount.
    import random

    rng = random.Random(7)
    names = [f"t{i}" for i in range(6)]
    budget = ReassemblyBudget(10_000, tenants=names[:3])
    leases = []
    announced = set(names[:3])
    for _ in range(3000):
        step = rng.random()
        if step < 0.3 or not leases:
            leases.append(budget.lease(rng.choice(names)))
        elif step < 0.7:
            try:
                rng.choice(leases).grow(rng.randint(0, 900))
            except IncompleteStream:
                pass
        elif step < 0.95:
            leases.pop(rng.randrange(len(leases))).release()
        else:
            announced = set(rng.sample(names, rng.randint(0, 6)))
            budget.set_tenants(announced)
        holding = {lease.tenant for lease in leases}
        assert budget.in_use() == sum(lease.size for lease in leases)
        for tenant in names:
            assert budget.in_use(tenant) == sum(lease.size for lease in leases if lease.tenant == tenant)
            count = (len(announced | holding) or 1) + (0 if tenant in announced | holding else 1)
            assert budget.share(tenant) == 10_000 // count
