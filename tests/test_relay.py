"""The relay attack of issue 6, played for real: an on-path TCP relay sends the
proving connection to the honest agent and gRPC's connection to an impostor
holding a revoked certificate with the same CN from the same tenant CA.

Pinning gRPC to the proven leaf makes gRPC's handshake with the impostor fail,
so the impostor never receives an RPC, and nobody reports the agent accepted.
Decided and documented (README): a relayed probe exits 3 (refused for
identity), never 4. Routed by SNI, every proof meets the honest agent while
gRPC meets another certificate: `identity_mismatch`. Routed by order, the
fresh proof after the failed pinned handshake meets the impostor: `revoked`.
"""

from __future__ import annotations

import asyncio

import pytest
from relay import TcpRelay
from spawn import spawn_cli

from poller.config import parse_config
from poller.daemon.scheduler import Scheduler
from poller.dial.dialer import dial_agent
from poller.identity.reasons import AgentUnreachable, IdentityRefused, Reason
from poller.testing.memory_sink import MemorySink
from poller.trust.store import TrustStore

ACME = "acme-corp"
ROUTES = ["sni", "order"]
EXPECTED = {"sni": Reason.IDENTITY_MISMATCH, "order": Reason.REVOKED}


@pytest.fixture
async def agents(pki, serve):
    """(honest, impostor): same CN, same tenant CA; the impostor's certificate is revoked."""
    honest = await serve(pki.agent(ACME, "agent-001", "partition-1"))
    stolen = pki.agent(ACME, "agent-001", "partition-1")
    pki.revoke(ACME, stolen)
    impostor = await serve(stolen)
    return honest, impostor


def rpcs(agent) -> int:
    return sum(agent.counts.values())


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("named", [False, True], ids=["any-component", "component-configured"])
async def test_dial_agent_through_the_relay_is_refused_and_the_impostor_gets_no_rpc(pki, agents, route, named):
    honest, impostor = agents
    expect = {"component": "agent-001", "partition": "partition-1"} if named else {}
    async with TcpRelay(honest.address, impostor.address, route=route) as relay:
        with pytest.raises(IdentityRefused) as caught:
            await dial_agent(relay.address, tenant=ACME, trust=TrustStore(pki.directory), timeout=3, **expect)
        assert caught.value.reason is EXPECTED[route], caught.value.detail
        assert relay.routed["impostor"] >= 1  # the relay did send gRPC's connection there
    assert rpcs(impostor) == 0


async def probe(*args: str) -> tuple[int, str]:
    proc = await spawn_cli("probe", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


@pytest.mark.parametrize("route", ROUTES)
async def test_probe_through_the_relay_is_never_accepted_and_exits_3(pki, agents, route):
    import json

    honest, impostor = agents
    async with TcpRelay(honest.address, impostor.address, route=route) as relay:
        code, out = await probe(relay.address, "--certs", str(pki.directory), "--tenant", ACME, "--timeout", "3")
    doc = json.loads(out)
    assert (code, doc["accepted"], doc["reason"]) == (3, False, EXPECTED[route].value), doc
    assert rpcs(impostor) == 0


@pytest.mark.parametrize("route", ROUTES)
async def test_the_daemon_through_the_relay_publishes_a_refusal(pki, agents, route):
    honest, impostor = agents
    async with TcpRelay(honest.address, impostor.address, route=route) as relay:
        settings = parse_config(
            {
                "poller_id": "p",
                "call_timeout": "3s",
                "certs_dir": str(pki.directory),
                "agents": {
                    "edge": {
                        "address": relay.address,
                        "tenant": ACME,
                        "checks": [{"service_type": "icmp", "service_name": "ping"}],
                    }
                },
            }
        )
        sink = MemorySink()
        scheduler = Scheduler(settings, TrustStore(pki.directory), sink.publish)
        scheduler.start(loops=False)
        try:
            [result] = await scheduler.run_once()
        finally:
            await scheduler.stop(grace=1)
    assert (result.available, result.proven, result.reason) == (False, False, EXPECTED[route].value)
    assert rpcs(impostor) == 0


async def test_without_a_relay_the_same_agent_is_accepted(pki, agents):
    """The control: the honest agent alone proves and answers over the pinned channel."""
    honest, _ = agents
    conn = await dial_agent(honest.address, tenant=ACME, trust=TrustStore(pki.directory))
    try:
        assert conn.serial == format(honest.certificate.serial_number, "x")
    finally:
        await conn.close()


@pytest.mark.parametrize("route", ROUTES)
async def test_a_relay_that_turns_hostile_after_the_dial_is_refused_at_the_next_call(pki, agents, route):
    """The dial went straight through; later gRPC's reconnect is routed to the
    impostor. The pinned handshake fails, the fresh proof decides the reason."""
    from poller.agent.client import AgentClient

    honest, impostor = agents
    async with TcpRelay(honest.address, impostor.address, route="honest") as relay:
        conn = await dial_agent(relay.address, tenant=ACME, trust=TrustStore(pki.directory), timeout=3)
        client = AgentClient(conn, timeout=3)
        try:
            assert (await client.get_status("ping", "icmp")).response.available
            relay.route = route  # "order": the connections so far were the first ones
            await honest.restart()  # drops gRPC's connection: the next call reconnects through the relay
            refusal = None
            for _ in range(3):  # a call may first meet the dying connection (unreachable)
                try:
                    await client.get_status("ping", "icmp")
                except AgentUnreachable:
                    continue
                except IdentityRefused as err:
                    refusal = err
                    break
            assert refusal is not None and refusal.reason is EXPECTED[route], refusal
            assert relay.routed["impostor"] >= 1
        finally:
            await conn.close()
    assert rpcs(impostor) == 0
