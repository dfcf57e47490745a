"""The one call path (issues 10 and 17): the tenant check and stamp are on
every call without grpc.aio's interceptor machinery, for AgentClient and for
the channel handed to library users alike, over one pinned connection, and
both refuse a call once the identity is refused.

Real TLS on loopback against real grpc.aio mock agents; the identity is
refused the way production refuses it (a CRL naming the agent, a tenant CA
removed), never by poking at the connection.
"""

from __future__ import annotations

import shutil

import pytest

from poller.agent.client import AgentClient
from poller.dial.dialer import dial_agent
from poller.dial.interceptor import AGENT_METADATA_KEY, TENANT_METADATA_KEY
from poller.identity.reasons import IdentityRefused, Reason
from poller.proto import monitoring_pb2 as pb
from poller.proto import monitoring_pb2_grpc as pb_grpc
from poller.trust.store import TrustStore

ACME, XYZ = "acme-corp", "xyz-inc"


def stamps(agent) -> list[dict[str, str]]:
    return [
        {k: v for k, v in md if k in (TENANT_METADATA_KEY, AGENT_METADATA_KEY)}
        for method, md in agent.metadata
        if method == "GetStatus"
    ]


async def test_both_paths_stamp_the_proven_identity_over_one_connection(pki, serve):
    agent = await serve(pki.agent(ACME, "agent-001"))
    trust = TrustStore(pki.directory)
    async with await dial_agent(agent.address, tenant=ACME, trust=trust) as conn:
        client = AgentClient(conn, timeout=5)
        raw = pb_grpc.AgentServiceStub(conn.channel)  # what a library user gets
        assert (await client.get_status("ping", "icmp")).response.available
        assert (await raw.GetStatus(pb.StatusRequest(service_name="ping"), timeout=5)).available
        await client.get_status("ping", "icmp", timeout=5)
    want = {TENANT_METADATA_KEY: ACME, AGENT_METADATA_KEY: agent.cn}
    assert stamps(agent) == [want, want, want]
    assert len(set(agent.connections)) == 1  # the direct path opened no second connection


async def test_every_caller_takes_the_one_checked_path(pki, serve):
    """One pin-enforcement path (issue 17): the channel underneath has no
    interceptors, so the stamp every call carries is the PinnedChannel's."""
    agent = await serve(pki.agent(ACME))
    async with await dial_agent(agent.address, tenant=ACME, trust=TrustStore(pki.directory)) as conn:
        assert conn.client_channel is conn.channel  # AgentClient's path is the library user's
        request = pb.StatusRequest(service_name="ping")
        await pb_grpc.AgentServiceStub(conn.unchecked_channel).GetStatus(request, timeout=5)
        await pb_grpc.AgentServiceStub(conn.current_channel).GetStatus(request, timeout=5)
    assert stamps(agent) == [{}, {TENANT_METADATA_KEY: ACME, AGENT_METADATA_KEY: agent.cn}]


@pytest.mark.parametrize("path", ["client", "library-channel"])
async def test_both_paths_refuse_once_the_identity_is_revoked(pki, serve, path):
    agent = await serve(pki.agent(ACME, "agent-001"))
    trust = TrustStore(pki.directory)
    async with await dial_agent(agent.address, tenant=ACME, trust=trust) as conn:
        client = AgentClient(conn, timeout=5)
        raw = pb_grpc.AgentServiceStub(conn.channel)
        await client.get_status("ping", "icmp")
        pki.revoke(ACME, agent.certificate)
        trust.reload()
        agent.reset_records()
        with pytest.raises(IdentityRefused) as caught:
            if path == "client":
                await client.get_status("ping", "icmp")
            else:
                await raw.GetStatus(pb.StatusRequest(service_name="ping"), timeout=5)
        assert caught.value.reason is Reason.REVOKED
        assert agent.count("GetStatus") == 0  # refused before anything was sent


@pytest.mark.parametrize("path", ["client", "library-channel", "client-stream"])
async def test_both_paths_refuse_once_the_tenant_ca_is_removed(pki, serve, path):
    """Unary and streaming calls alike, on either path."""
    agent = await serve(pki.agent(XYZ, "agent-007", "site-b"))
    trust = TrustStore(pki.directory)
    async with await dial_agent(agent.address, tenant=XYZ, trust=trust) as conn:
        client = AgentClient(conn, timeout=5)
        raw = pb_grpc.AgentServiceStub(conn.channel)
        shutil.rmtree(pki.layout.tenant_dir(XYZ))
        trust.reload()
        with pytest.raises(IdentityRefused) as caught:
            if path == "client":
                await client.get_status("ping", "icmp")
            elif path == "client-stream":
                await client.fetch_document("s", "sweep")
            else:
                await raw.GetStatus(pb.StatusRequest(service_name="ping"), timeout=5)
        assert caught.value.reason is Reason.UNTRUSTED_CHAIN
        assert agent.count("GetStatus") == agent.count("StreamResults") == 0
