"""StatusBoard against a real scheduler and real mock agents: how each kind of
cycle maps to an agent's state, and that reloads keep the board true."""

from __future__ import annotations

from dataclasses import replace

from poller.config import parse_config
from poller.daemon.scheduler import Scheduler
from poller.daemon.status import to_json
from poller.testing.memory_sink import MemorySink
from poller.trust.store import TrustStore

ACME, XYZ = "acme-corp", "xyz-inc"
CHECK = [{"service_type": "process", "service_name": "nginx"}]


def make_scheduler(pki, agents: dict, **top) -> Scheduler:
    settings = parse_config(
        {
            "poller_id": "p",
            "poll_interval": "10s",
            "call_timeout": "1s",
            "cycle_timeout": "2s",
            "certs_dir": str(pki.directory),
            "agents": agents,
            **top,
        }
    )
    scheduler = Scheduler(settings, TrustStore(pki.directory), MemorySink().publish)
    scheduler.start(loops=False)
    return scheduler


def states(scheduler: Scheduler, tenant: str | None = None) -> dict[str, dict]:
    return {a["name"]: a for a in to_json(scheduler.status.snapshot(scheduler.settings.agents, tenant))}


async def test_configured_agents_are_pending_until_their_first_cycle(pki, serve):
    agent = await serve(pki.agent(ACME))
    scheduler = make_scheduler(pki, {"a": {"address": agent.address, "tenant": ACME, "checks": CHECK}})
    try:
        [pending] = states(scheduler).values()
        assert (pending["state"], pending["last_poll"], pending["identity"], pending["checks"]) == ("pending", None, None, [])
        await scheduler.run_once()
        assert states(scheduler)["a"]["state"] == "proven"
    finally:
        await scheduler.stop(grace=1)


async def test_a_proven_agent_that_stops_answering_is_unreachable_with_the_reason(pki, serve):
    agent = await serve(pki.agent(ACME))
    scheduler = make_scheduler(pki, {"a": {"address": agent.address, "tenant": ACME, "checks": CHECK}})
    worker = scheduler.worker("a")
    try:
        await scheduler.run_cycle(worker)
        proven = states(scheduler)["a"]
        assert proven["state"] == "proven" and proven["consecutive_failures"] == 0

        agent.behaviour.hang = True
        await scheduler.run_cycle(worker)
        hung = states(scheduler)["a"]
        assert (hung["state"], hung["reason"], hung["consecutive_failures"]) == ("unreachable", "timeout", 1)
        assert hung["identity"] == proven["identity"]  # the channel is still pinned to it
        assert hung["checks"][0]["outcome"] == "timeout"

        agent.behaviour.hang = False
        await scheduler.run_cycle(worker)
        assert (states(scheduler)["a"]["state"], states(scheduler)["a"]["consecutive_failures"]) == ("proven", 0)
    finally:
        await scheduler.stop(grace=1)


async def test_not_serving_is_proven_with_failing_checks(pki, serve):
    agent = await serve(pki.agent(ACME))
    agent.behaviour.health_status = "NOT_SERVING"
    scheduler = make_scheduler(pki, {"a": {"address": agent.address, "tenant": ACME, "checks": CHECK}})
    try:
        await scheduler.run_once()
        await scheduler.run_once()
        a = states(scheduler)["a"]
        assert (a["state"], a["reason"], a["consecutive_failures"]) == ("proven", None, 2)
        assert a["checks"][0]["outcome"] == "not_serving"
    finally:
        await scheduler.stop(grace=1)


async def test_an_agent_restarted_as_an_impostor_turns_refused(pki, serve):
    agent = await serve(pki.agent(ACME, "agent-001"))
    scheduler = make_scheduler(pki, {"a": {"address": agent.address, "tenant": ACME, "checks": CHECK}})
    worker = scheduler.worker("a")
    try:
        await scheduler.run_cycle(worker)
        assert states(scheduler)["a"]["state"] == "proven"
        impostor = pki.agent(ACME, "agent-001", issuer_tenant=XYZ, dns=[])
        await agent.restart(cert_chain_pem=impostor.chain_pem, key_pem=impostor.key_pem)
        await scheduler.run_cycle(worker)
        a = states(scheduler)["a"]
        assert (a["state"], a["reason"], a["identity"]) == ("refused", "tenant_mismatch", None)
        assert a["peer"]["serial"] == impostor.serial_hex and "tenant-xyz-inc" in a["detail"]
    finally:
        await scheduler.stop(grace=1)


async def test_reload_drops_removed_agents_and_resets_changed_ones(pki, serve):
    a = await serve(pki.agent(ACME, "agent-001"))
    b = await serve(pki.agent(ACME, "agent-002"))
    x = await serve(pki.agent(XYZ, "agent-007", "site-b"))
    entry = {"tenant": ACME, "checks": CHECK}
    scheduler = make_scheduler(
        pki,
        {
            "a": {"address": a.address, **entry},
            "b": {"address": b.address, **entry},
            "x": {"address": x.address, "tenant": XYZ, "checks": CHECK},
        },
    )
    try:
        await scheduler.run_once()
        assert {n: s["state"] for n, s in states(scheduler).items()} == {"a": "proven", "b": "proven", "x": "proven"}
        assert list(states(scheduler, XYZ)) == ["x"]
        moved = replace(scheduler.settings.agents_by_name["a"], checks=())
        new = replace(scheduler.settings, agents=(moved, scheduler.settings.agents_by_name["x"]))
        await scheduler.apply(new)
        assert {n: s["state"] for n, s in states(scheduler).items()} == {"a": "pending", "x": "proven"}
    finally:
        await scheduler.stop(grace=1)


async def test_a_service_reported_down_is_an_answer_not_a_failure(pki, serve):
    agent = await serve(pki.agent(ACME))
    agent.behaviour.available = False  # the agent answers: the checked service is down
    scheduler = make_scheduler(pki, {"a": {"address": agent.address, "tenant": ACME, "checks": CHECK}})
    try:
        await scheduler.run_once()
        a = states(scheduler)["a"]
        assert (a["state"], a["consecutive_failures"], a["checks"][0]["outcome"]) == ("proven", 0, "unavailable")
    finally:
        await scheduler.stop(grace=1)
