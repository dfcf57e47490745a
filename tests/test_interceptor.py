"""The tenant interceptors: no proven context, no call; with one, every call is
stamped and runs with current_tenant() bound."""

from __future__ import annotations

import grpc
import pytest

from poller.dial.interceptor import AGENT_METADATA_KEY, TENANT_METADATA_KEY, tenant_interceptors
from poller.identity.context import current_tenant
from poller.identity.reasons import IdentityRefused, Reason
from poller.proto import monitoring_pb2 as pb
from poller.proto import monitoring_pb2_grpc as pb_grpc
from poller.testing.identity import unverified_tenant_context

ACME = "acme-corp"


class Recorder(grpc.aio.UnaryUnaryClientInterceptor):
    """Runs after the tenant interceptor and notes what the call carries."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []

    async def intercept_unary_unary(self, continuation, details, request):
        self.seen.append((current_tenant().tenant, dict(details.metadata or ())))
        return await continuation(details, request)


class Source:
    def __init__(self, ctx) -> None:
        self._ctx = ctx

    @property
    def context(self):
        return self._ctx


def pinned_channel(pki, agent, interceptors):
    chain, key = pki.client_identity()
    creds = grpc.ssl_channel_credentials(root_certificates=pki.tenant_ca_pem(ACME), private_key=key, certificate_chain=chain)
    return grpc.aio.secure_channel(
        agent.address, creds, options=[("grpc.ssl_target_name_override", agent.cn)], interceptors=interceptors
    )


async def test_a_channel_without_a_proven_context_refuses_every_call(pki, serve):
    agent = await serve(pki.agent(ACME))
    async with pinned_channel(pki, agent, tenant_interceptors(None)) as channel:
        with pytest.raises(IdentityRefused) as caught:
            await pb_grpc.AgentServiceStub(channel).GetStatus(pb.StatusRequest(), timeout=5)
    assert caught.value.reason is Reason.UNTRUSTED_CHAIN
    assert agent.count("GetStatus") == 0  # refused before anything was sent


async def test_calls_are_stamped_and_run_with_current_tenant(pki, serve):
    agent = await serve(pki.agent(ACME))
    ctx = unverified_tenant_context(ACME, "agent-001", "partition-1")
    recorder = Recorder()
    async with pinned_channel(pki, agent, [*tenant_interceptors(Source(ctx)), recorder]) as channel:
        await pb_grpc.AgentServiceStub(channel).GetStatus(pb.StatusRequest(), timeout=5)
    [(tenant, metadata)] = recorder.seen
    assert tenant == ACME
    assert metadata[TENANT_METADATA_KEY] == ACME and metadata[AGENT_METADATA_KEY] == ctx.cn
    [(_, sent)] = agent.metadata
    assert dict(sent)[TENANT_METADATA_KEY] == ACME
    with pytest.raises(LookupError):
        current_tenant()  # and nothing leaks out of the call
