"""A call in flight when the poller itself closes its channel (issue 18 item 1).

grpc.aio cancels the calls of a channel it closes, which reaches the caller
as asyncio.CancelledError. The poller closes channels on revocation, CA
removal, CRL expiry (at once) and on rotation (after a grace): such a call
must end as the connection's stored IdentityRefused, or AgentUnreachable,
never as a cancellation, while a real cancellation of the caller's task
still cancels. Real TLS, real grpc.aio agents on loopback.
"""

from __future__ import annotations

import asyncio

import pytest

from poller.agent.client import AgentClient
from poller.dial.dialer import dial_agent
from poller.identity.reasons import AgentUnreachable, IdentityRefused, Reason
from poller.testing.mock_agent import AgentBehaviour
from poller.trust.store import TrustStore

ACME = "acme-corp"


def slow_status() -> AgentBehaviour:
    """GetStatus answers only when the agent stops (health answers at once)."""
    return AgentBehaviour(hang=True, fault_methods=frozenset({"GetStatus"}))


async def _in_flight(pki, serve):
    trust = TrustStore(pki.directory)
    cert = pki.agent(ACME, "agent-001")
    agent = await serve(cert, behaviour=slow_status())
    conn = await dial_agent(agent.address, tenant=ACME, trust=trust)
    call = asyncio.ensure_future(AgentClient(conn, timeout=60).get_status("ping", "icmp"))
    async with asyncio.timeout(30):
        await agent.wait_for_calls("GetStatus")
    return trust, cert, conn, call


async def test_a_call_cut_by_revocation_raises_the_stored_refusal(pki, serve):
    trust, cert, conn, call = await _in_flight(pki, serve)
    try:
        pki.revoke(ACME, cert)
        trust.reload()  # the connection re-checks itself and closes its channel at once
        with pytest.raises(IdentityRefused) as caught:
            async with asyncio.timeout(30):
                await call
        assert caught.value.reason is Reason.REVOKED
        assert caught.value is conn.refusal
    finally:
        await conn.close()


async def test_a_call_cut_by_a_poller_certificate_rotation_is_unreachable(pki, serve):
    from test_live_identity import _issue_poller

    trust, _cert, conn, call = await _in_flight(pki, serve)
    try:
        _issue_poller(pki, "2")
        assert trust.reload().client_changed  # the old channel closes after its grace
        with pytest.raises(AgentUnreachable) as caught:
            async with asyncio.timeout(30):
                await call
        assert caught.value.code == "CANCELLED"
        assert "rotation" in caught.value.detail
        assert conn.refusal is None  # the identity still holds; the next call goes over the new channel
    finally:
        await conn.close()


async def test_cancelling_the_callers_task_still_cancels(pki, serve):
    _trust, _cert, conn, call = await _in_flight(pki, serve)
    try:
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    finally:
        await conn.close()


async def test_a_stream_cut_by_revocation_raises_the_stored_refusal(pki, serve):
    trust = TrustStore(pki.directory)
    cert = pki.agent(ACME, "agent-001")
    agent = await serve(cert, behaviour=AgentBehaviour(stall_after_chunks=1))
    conn = await dial_agent(agent.address, tenant=ACME, trust=trust)
    try:
        fetch = asyncio.ensure_future(AgentClient(conn, timeout=60).fetch_document("net", "sweep"))
        async with asyncio.timeout(30):
            await agent.wait_for_calls("StreamResults")
        pki.revoke(ACME, cert)
        trust.reload()
        with pytest.raises(IdentityRefused) as caught:
            async with asyncio.timeout(30):
                await fetch
        assert caught.value.reason is Reason.REVOKED
    finally:
        await conn.close()
