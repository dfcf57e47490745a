"""MockAgent: a real grpc.aio mTLS agent on loopback, and its CLI.

Every test talks real TLS over loopback with a plain grpc.aio channel. No
sleeps are used for synchronisation; `agent.wait_for_calls` and pipes are.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from spawn import cli_argv

from poller.proto import monitoring_pb2 as pb
from poller.proto import monitoring_pb2_grpc as pb_grpc
from poller.testing.forge import ForgedCert, ForgePki
from poller.testing.mock_agent import AgentBehaviour, MockAgent, MockAgentError, split_document

AGENT_CN = "agent-001.partition-1.acme-corp.serviceradar"
XYZ_CN = "agent-001.partition-1.xyz-inc.serviceradar"
GUARD = 20  # seconds: only a guard against a hung test, never a timing assertion


# --------------------------------------------------------------------------
# Certificates: poller.testing.forge (root -> tenant CAs -> agents; the
# poller's client certificate comes from the platform CA).
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Client:
    chain_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class Pki:
    forge: ForgePki
    agent: ForgedCert  # agent-001.partition-1.acme-corp, issued by acme's CA, written to the dir
    impostor: ForgedCert  # the same CN, issued by xyz-inc's CA
    xyz_agent: ForgedCert  # agent-001.partition-1.xyz-inc, an honest xyz-inc agent
    poller: Client  # the platform client (poller-chain.pem / poller-key.pem)
    acme_client: ForgedCert  # an acme-corp agent used as a client
    stranger: ForgedCert  # a self-signed client unrelated to the root

    @property
    def root_pem(self) -> bytes:
        return self.forge.root_pem

    @property
    def certs_dir(self) -> Path:
        return self.forge.directory

    def ca(self, slug: str) -> bytes:
        return self.forge.tenant_ca_pem(slug)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    forge = ForgePki.create(tmp_path_factory.mktemp("certs"), tenants=("acme-corp", "xyz-inc"))
    chain, key = forge.client_identity()
    return Pki(
        forge=forge,
        agent=forge.agent("acme-corp", write=True),
        impostor=forge.agent("acme-corp", issuer_tenant="xyz-inc"),
        xyz_agent=forge.agent("xyz-inc"),
        poller=Client(chain_pem=chain, key_pem=key),
        acme_client=forge.agent("acme-corp", "agent-002"),
        stranger=forge.agent("acme-corp", "agent-003", signed_by="self", cn="poller-1.serviceradar"),
    )


# --------------------------------------------------------------------------
# Client helpers
# --------------------------------------------------------------------------


def channel(
    address: str,
    anchor_pem: bytes,
    client: Client | ForgedCert | None,
    target_name: str = AGENT_CN,
) -> grpc.aio.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=anchor_pem,
        private_key=client.key_pem if client else None,
        certificate_chain=client.chain_pem if client else None,
    )
    return grpc.aio.secure_channel(address, creds, options=[("grpc.ssl_target_name_override", target_name)])


@pytest.fixture
async def agent(pki: Pki):
    async with MockAgent(cert_chain_pem=pki.agent.chain_pem, key_pem=pki.agent.key_pem, client_ca_pem=pki.root_pem) as a:
        yield a


@pytest.fixture
async def stub(agent: MockAgent, pki: Pki):
    async with channel(agent.address, pki.ca("acme-corp"), pki.poller) as ch:
        yield pb_grpc.AgentServiceStub(ch)


async def collect_stream(call) -> tuple[list[pb.ResultsChunk], grpc.aio.AioRpcError | None]:
    chunks: list[pb.ResultsChunk] = []
    try:
        async for chunk in call:
            chunks.append(chunk)
    except grpc.aio.AioRpcError as exc:
        return chunks, exc
    return chunks, None


# --------------------------------------------------------------------------
# AgentService
# --------------------------------------------------------------------------


async def test_get_status_returns_configured_payload(agent: MockAgent, stub) -> None:
    agent.behaviour.message = b'{"status":"ok","load":0.5}'
    agent.behaviour.response_time_ns = 4242
    resp = await stub.GetStatus(
        pb.StatusRequest(service_name="SSH", service_type="port", poller_id="poller-1", details="127.0.0.1:22"),
        timeout=GUARD,
    )
    assert resp.available is True
    assert json.loads(resp.message) == {"status": "ok", "load": 0.5}
    assert (resp.service_name, resp.service_type, resp.poller_id) == ("SSH", "port", "poller-1")
    assert resp.response_time == 4242
    assert resp.agent_id == "agent-001"
    assert agent.count("GetStatus") == 1
    name, req = agent.requests[0]
    assert name == "GetStatus" and req.details == "127.0.0.1:22"
    assert agent.peers == ["poller-1.serviceradar"]
    assert agent.address == f"127.0.0.1:{agent.port}"


async def test_default_status_payload_and_unavailable(agent: MockAgent, stub) -> None:
    resp = await stub.GetStatus(pb.StatusRequest(service_name="ping"), timeout=GUARD)
    assert json.loads(resp.message) == {"status": "ok"}
    agent.behaviour.available = False
    resp = await stub.GetStatus(pb.StatusRequest(service_name="ping"), timeout=GUARD)
    assert resp.available is False


async def test_claim_agent_id_goes_into_every_payload(agent: MockAgent, stub, pki: Pki) -> None:
    agent.behaviour.claim_agent_id = "agent-999"
    status = await stub.GetStatus(pb.StatusRequest(), timeout=GUARD)
    results = await stub.GetResults(pb.ResultsRequest(), timeout=GUARD)
    assert status.agent_id == results.agent_id == "agent-999"
    # The claim is only in the payload: the certificate the agent presents on
    # the wire, read by the poller's own proof, still names agent-001.
    from poller.agent.client import AgentClient
    from poller.dial.dialer import dial_agent
    from poller.trust.store import TrustStore

    async with await dial_agent(agent.address, tenant="acme-corp", trust=TrustStore(pki.certs_dir)) as conn:
        reply = await AgentClient(conn).get_status("ping", "icmp")
    assert reply.response.agent_id == "agent-999"
    assert (reply.context.cn, reply.context.component_id) == (AGENT_CN, "agent-001")


async def test_get_results_has_new_data_semantics(agent: MockAgent, stub) -> None:
    agent.behaviour.results_data = b'{"hosts":[{"ip":"192.0.2.9"}]}'
    agent.behaviour.timestamp = 1_700_000_000
    first = await stub.GetResults(pb.ResultsRequest(service_name="sweep", service_type="sweep"), timeout=GUARD)
    assert first.has_new_data is True
    assert json.loads(first.data) == {"hosts": [{"ip": "192.0.2.9"}]}
    assert first.timestamp == 1_700_000_000
    assert (first.service_name, first.service_type) == ("sweep", "sweep")
    seq = first.current_sequence
    assert seq

    same = await stub.GetResults(pb.ResultsRequest(last_sequence=seq), timeout=GUARD)
    assert same.has_new_data is False and same.data == b"" and same.current_sequence == seq

    new_seq = agent.behaviour.advance_sequence(b'{"hosts":[]}')
    again = await stub.GetResults(pb.ResultsRequest(last_sequence=seq), timeout=GUARD)
    assert again.has_new_data is True and again.current_sequence == new_seq != seq
    assert json.loads(again.data) == {"hosts": []}
    assert [r.last_sequence for r in agent.requests_for("GetResults")] == ["", seq, seq]


async def test_get_results_auto_advance_and_sweep_completion(agent: MockAgent, stub) -> None:
    agent.behaviour.auto_advance = True
    agent.behaviour.sweep_completion = pb.SweepCompletionStatus(
        status=pb.SweepCompletionStatus.COMPLETED, total_targets=5, completed_targets=5
    )
    a = await stub.GetResults(pb.ResultsRequest(), timeout=GUARD)
    b = await stub.GetResults(pb.ResultsRequest(last_sequence=a.current_sequence), timeout=GUARD)
    assert b.has_new_data is True and b.current_sequence != a.current_sequence
    assert b.sweep_completion.status == pb.SweepCompletionStatus.COMPLETED
    assert b.sweep_completion.completed_targets == 5


async def test_stream_results_yields_n_chunks_final_on_last(agent: MockAgent, stub) -> None:
    doc = json.dumps({"hosts": [{"ip": f"192.0.2.{i}"} for i in range(40)]}).encode()
    agent.behaviour.stream_document = doc
    agent.behaviour.stream_chunks = 5
    chunks, err = await collect_stream(stub.StreamResults(pb.ResultsRequest(service_type="sweep"), timeout=GUARD))
    assert err is None
    assert [c.chunk_index for c in chunks] == [0, 1, 2, 3, 4]
    assert {c.total_chunks for c in chunks} == {5}
    assert [c.is_final for c in chunks] == [False, False, False, False, True]
    assert {c.current_sequence for c in chunks} == {agent.behaviour.current_sequence}
    assert b"".join(c.data for c in chunks) == doc


async def test_stream_drop_after_chunks_errors_without_final(agent: MockAgent, stub) -> None:
    agent.behaviour.stream_chunks = 4
    agent.behaviour.drop_after_chunks = 2
    chunks, err = await collect_stream(stub.StreamResults(pb.ResultsRequest(), timeout=GUARD))
    assert [c.chunk_index for c in chunks] == [0, 1]
    assert not any(c.is_final for c in chunks)
    assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE


async def test_stream_end_without_final_and_gap(agent: MockAgent, stub) -> None:
    agent.behaviour.stream_chunks = 3
    agent.behaviour.end_without_final = True
    chunks, err = await collect_stream(stub.StreamResults(pb.ResultsRequest(), timeout=GUARD))
    assert err is None and [c.chunk_index for c in chunks] == [0, 1, 2]
    assert not any(c.is_final for c in chunks)

    agent.behaviour.end_without_final = False
    agent.behaviour.skip_chunk_index = 1
    chunks, err = await collect_stream(stub.StreamResults(pb.ResultsRequest(), timeout=GUARD))
    assert err is None and [c.chunk_index for c in chunks] == [0, 2]
    assert chunks[-1].is_final


async def test_error_code_fault(agent: MockAgent, stub) -> None:
    agent.behaviour.error_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    agent.behaviour.error_message = "too busy"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetStatus(pb.StatusRequest(), timeout=GUARD)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info.value.details() == "too busy"
    # Faults can be scoped: GetResults is left alone here.
    agent.behaviour.fault_methods = frozenset({"GetStatus"})
    resp = await stub.GetResults(pb.ResultsRequest(), timeout=GUARD)
    assert resp.available


async def test_delay_still_answers(agent: MockAgent, stub) -> None:
    agent.behaviour.delay = 1.0
    # The delay is applied: a deadline below it is missed ...
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetStatus(pb.StatusRequest(), timeout=0.05)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # ... and the agent still answers a caller that waits.
    resp = await stub.GetStatus(pb.StatusRequest(), timeout=GUARD)
    assert resp.available


async def test_hang_gives_deadline_exceeded_and_stop_returns(agent: MockAgent, stub) -> None:
    agent.behaviour.hang = True
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetStatus(pb.StatusRequest(), timeout=0.3)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    # A call without a deadline hangs until the agent stops.
    call = stub.GetStatus(pb.StatusRequest())
    async with asyncio.timeout(GUARD):
        await agent.wait_for_calls("GetStatus", 2)
        await agent.stop()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    await agent.stop()  # idempotent
    assert not agent.running


async def test_stream_stall_after_chunks_then_stop(agent: MockAgent, stub) -> None:
    agent.behaviour.stream_chunks = 3
    agent.behaviour.stall_after_chunks = 1
    call = stub.StreamResults(pb.ResultsRequest())
    async with asyncio.timeout(GUARD):
        first = await call.read()
        assert first.chunk_index == 0 and not first.is_final
        await agent.stop()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read()
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


# --------------------------------------------------------------------------
# Health
# --------------------------------------------------------------------------


async def test_health_check(agent: MockAgent, pki: Pki) -> None:
    async with channel(agent.address, pki.ca("acme-corp"), pki.poller) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for service in ("AgentService", ""):
            resp = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=GUARD)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        agent.behaviour.health_status = "NOT_SERVING"
        resp = await health.Check(health_pb2.HealthCheckRequest(service="AgentService"), timeout=GUARD)
        assert resp.status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await health.Check(health_pb2.HealthCheckRequest(service="Nope"), timeout=GUARD)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert agent.count("Check") == 4
    assert agent.requests == []  # health checks are counted, not listed as agent requests


async def test_health_watch_sees_changes(agent: MockAgent, pki: Pki) -> None:
    async with channel(agent.address, pki.ca("acme-corp"), pki.poller) as ch:
        call = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service="AgentService"))
        async with asyncio.timeout(GUARD):
            assert (await call.read()).status == health_pb2.HealthCheckResponse.SERVING
            agent.behaviour.health_status = health_pb2.HealthCheckResponse.NOT_SERVING
            assert (await call.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        call.cancel()


# --------------------------------------------------------------------------
# Who may call
# --------------------------------------------------------------------------


async def test_client_without_certificate_is_refused(agent: MockAgent, pki: Pki) -> None:
    async with channel(agent.address, pki.ca("acme-corp"), None) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await pb_grpc.AgentServiceStub(ch).GetStatus(pb.StatusRequest(), timeout=GUARD)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert agent.count("GetStatus") == 0


async def test_client_from_unrelated_ca_is_refused(agent: MockAgent, pki: Pki) -> None:
    async with channel(agent.address, pki.ca("acme-corp"), pki.stranger) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await pb_grpc.AgentServiceStub(ch).GetStatus(pb.StatusRequest(), timeout=GUARD)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert agent.count("GetStatus") == 0


async def test_tenant_issued_client_allowed_by_default(agent: MockAgent, pki: Pki) -> None:
    async with channel(agent.address, pki.ca("acme-corp"), pki.acme_client) as ch:
        resp = await pb_grpc.AgentServiceStub(ch).GetStatus(pb.StatusRequest(), timeout=GUARD)
    assert resp.available
    assert agent.peers == ["agent-002.partition-1.acme-corp.serviceradar"]


async def test_platform_clients_only_refuses_tenant_issued_client(pki: Pki) -> None:
    async with MockAgent(
        cert_chain_pem=pki.agent.chain_pem,
        key_pem=pki.agent.key_pem,
        client_ca_pem=pki.root_pem,
        platform_clients_only=True,
    ) as agent:
        async with channel(agent.address, pki.ca("acme-corp"), pki.acme_client) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await pb_grpc.AgentServiceStub(ch).GetStatus(pb.StatusRequest(), timeout=GUARD)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=GUARD)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert agent.count("GetStatus") == 0 and agent.requests == []
        assert [(m, cn) for m, cn, _ in agent.refused] == [
            ("GetStatus", "agent-002.partition-1.acme-corp.serviceradar"),
            ("Check", "agent-002.partition-1.acme-corp.serviceradar"),
        ]
        assert "tenant-acme-corp.ca.serviceradar" in agent.refused[0][2]

        async with channel(agent.address, pki.ca("acme-corp"), pki.poller) as ch:
            resp = await pb_grpc.AgentServiceStub(ch).GetStatus(pb.StatusRequest(), timeout=GUARD)
        assert resp.available and agent.count("GetStatus") == 1


# --------------------------------------------------------------------------
# Lifecycle
# --------------------------------------------------------------------------


async def test_restart_with_impostor_keeps_port_and_changes_identity(agent: MockAgent, pki: Pki) -> None:
    port = agent.port
    async with channel(agent.address, pki.ca("acme-corp"), pki.poller) as ch:
        assert (await pb_grpc.AgentServiceStub(ch).GetStatus(pb.StatusRequest(), timeout=GUARD)).available

    assert await agent.restart(cert_chain_pem=pki.impostor.chain_pem, key_pem=pki.impostor.key_pem) == port
    assert agent.port == port and agent.running
    assert agent.certificate.issuer == pki.forge.tenant_ca("xyz-inc").subject

    # A new channel pinned to acme-corp's CA refuses the impostor.
    async with channel(agent.address, pki.ca("acme-corp"), pki.poller) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await pb_grpc.AgentServiceStub(ch).GetStatus(pb.StatusRequest(), timeout=GUARD)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE

    # An honest xyz-inc identity on the same port is served as such.
    assert await agent.restart(cert_chain_pem=pki.xyz_agent.chain_pem, key_pem=pki.xyz_agent.key_pem) == port
    assert agent.cn == XYZ_CN
    async with channel(agent.address, pki.ca("xyz-inc"), pki.poller, target_name=XYZ_CN) as ch:
        assert (await pb_grpc.AgentServiceStub(ch).GetStatus(pb.StatusRequest(), timeout=GUARD)).available

    # And back again.
    assert await agent.restart(cert_chain_pem=pki.agent.chain_pem, key_pem=pki.agent.key_pem) == port
    async with channel(agent.address, pki.ca("acme-corp"), pki.poller) as ch:
        assert (await pb_grpc.AgentServiceStub(ch).GetStatus(pb.StatusRequest(), timeout=GUARD)).available


async def test_existing_channel_refuses_impostor_on_reconnect(agent: MockAgent, pki: Pki) -> None:
    async with channel(agent.address, pki.ca("acme-corp"), pki.poller) as ch:
        stub = pb_grpc.AgentServiceStub(ch)
        assert (await stub.GetStatus(pb.StatusRequest(), timeout=GUARD)).available
        await agent.restart(cert_chain_pem=pki.impostor.chain_pem, key_pem=pki.impostor.key_pem)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetStatus(pb.StatusRequest(), timeout=GUARD)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert agent.count("GetStatus") == 1


async def test_start_on_taken_port_is_a_clear_error(pki: Pki) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        agent = MockAgent(cert_chain_pem=pki.agent.chain_pem, key_pem=pki.agent.key_pem, client_ca_pem=pki.root_pem, port=taken)
        with pytest.raises(MockAgentError, match=f"127.0.0.1:{taken}"):
            await agent.start()
        assert not agent.running
        await agent.stop()  # stopping a never-started agent is fine


async def test_stop_is_idempotent_and_start_after_stop(pki: Pki) -> None:
    agent = MockAgent(cert_chain_pem=pki.agent.chain_pem, key_pem=pki.agent.key_pem, client_ca_pem=pki.root_pem)
    await agent.stop()
    port = await agent.start()
    assert await agent.start() == port  # no-op while running
    await agent.stop()
    await agent.stop()
    assert await agent.start() == port
    await agent.stop()


def test_bad_pem_is_a_clear_error(pki: Pki) -> None:
    with pytest.raises(MockAgentError, match="not PEM"):
        MockAgent(cert_chain_pem=b"nope", key_pem=pki.agent.key_pem, client_ca_pem=pki.root_pem)
    with pytest.raises(MockAgentError, match="private key"):
        MockAgent(cert_chain_pem=pki.agent.chain_pem, key_pem=b"nope", client_ca_pem=pki.root_pem)
    with pytest.raises(MockAgentError, match="does not match"):
        MockAgent(cert_chain_pem=pki.agent.chain_pem, key_pem=pki.impostor.key_pem, client_ca_pem=pki.root_pem)


async def test_certificate_grpc_cannot_serve_is_a_clear_error(pki: Pki) -> None:
    # A CA-flagged leaf with keyUsage keyCertSign only: gRPC's TLS stack
    # refuses to load it, so the agent cannot start (not a port problem).
    ca_leaf = pki.forge.agent("acme-corp", "agent-005", is_ca=True, key_usage_names=("key_cert_sign", "crl_sign"))
    agent = MockAgent(cert_chain_pem=ca_leaf.chain_pem, key_pem=ca_leaf.key_pem, client_ca_pem=pki.root_pem)
    with pytest.raises(MockAgentError, match="digitalSignature"):
        await agent.start()
    assert not agent.running


async def test_from_certs_dir(pki: Pki) -> None:
    certs = pki.certs_dir
    behaviour = AgentBehaviour(message=b'{"from":"dir"}')
    async with MockAgent.from_certs_dir(certs, "acme-corp", "agent-001", "partition-1", behaviour=behaviour) as agent:
        assert agent.cn == AGENT_CN and agent.agent_id == "agent-001"
        async with channel(agent.address, pki.ca("acme-corp"), pki.poller) as ch:
            resp = await pb_grpc.AgentServiceStub(ch).GetStatus(pb.StatusRequest(), timeout=GUARD)
        assert json.loads(resp.message) == {"from": "dir"}
    with pytest.raises(MockAgentError, match="cannot read"):
        MockAgent.from_certs_dir(certs, "acme-corp", "agent-404", "partition-1")


def test_split_document() -> None:
    assert split_document(b"abcdefg", 3) == [b"abc", b"de", b"fg"]
    assert split_document(b"ab", 4) == [b"a", b"b", b"", b""]
    assert split_document(b"abc", 0) == [b"abc"]


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def _cli(*args: str) -> list[str]:
    return cli_argv("mock-agent", *args)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def test_cli_prints_port_serves_and_exits_0_on_sigterm(pki: Pki) -> None:
    certs = pki.certs_dir
    proc = await asyncio.create_subprocess_exec(
        *_cli(
            "--certs",
            str(certs),
            "--tenant",
            "acme-corp",
            "--component",
            "agent-001",
            "--partition",
            "partition-1",
            "--listen",
            "127.0.0.1:0",
            "--status-message",
            "hello from cli",
            "--stream-chunks",
            "2",
        ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
    )
    try:
        async with asyncio.timeout(GUARD):
            line = (await proc.stdout.readline()).decode().strip()
            assert line.isdigit(), line
            port = int(line)
            err_line = (await proc.stderr.readline()).decode()
            assert f"mock agent {AGENT_CN} listening on 127.0.0.1:{port}" in err_line
            async with channel(f"127.0.0.1:{port}", pki.ca("acme-corp"), pki.poller) as ch:
                stub = pb_grpc.AgentServiceStub(ch)
                resp = await stub.GetStatus(pb.StatusRequest(), timeout=GUARD)
                assert resp.message == b"hello from cli" and resp.agent_id == "agent-001"
                chunks, err = await collect_stream(stub.StreamResults(pb.ResultsRequest(), timeout=GUARD))
                assert err is None and [c.is_final for c in chunks] == [False, True]
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_cli_cert_override(tmp_path: Path, pki: Pki) -> None:
    """--cert/--key serve another certificate than the certs dir's (here xyz-inc's agent)."""
    certs = pki.certs_dir
    (tmp_path / "imp.pem").write_bytes(pki.xyz_agent.chain_pem)
    (tmp_path / "imp-key.pem").write_bytes(pki.xyz_agent.key_pem)
    proc = await asyncio.create_subprocess_exec(
        *_cli(
            "--certs",
            str(certs),
            "--tenant",
            "acme-corp",
            "--component",
            "agent-001",
            "--partition",
            "partition-1",
            "--cert",
            str(tmp_path / "imp.pem"),
            "--key",
            str(tmp_path / "imp-key.pem"),
        ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=_env(),
    )
    try:
        async with asyncio.timeout(GUARD):
            port = int((await proc.stdout.readline()).decode())
            async with channel(f"127.0.0.1:{port}", pki.ca("acme-corp"), pki.poller) as ch:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await pb_grpc.AgentServiceStub(ch).GetStatus(pb.StatusRequest(), timeout=GUARD)
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            async with channel(f"127.0.0.1:{port}", pki.ca("xyz-inc"), pki.poller, target_name=XYZ_CN) as ch:
                assert (await pb_grpc.AgentServiceStub(ch).GetStatus(pb.StatusRequest(), timeout=GUARD)).available
            proc.send_signal(signal.SIGINT)
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_cli_unreadable_certs_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        _cli(
            "--certs",
            str(tmp_path / "missing"),
            "--tenant",
            "acme-corp",
            "--component",
            "agent-001",
            "--partition",
            "partition-1",
        ),
        capture_output=True,
        text=True,
        timeout=GUARD,
        env=_env(),
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")


def test_cli_bad_tenant_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        _cli("--certs", str(tmp_path), "--tenant", "Acme Corp", "--component", "agent-001", "--partition", "partition-1"),
        capture_output=True,
        text=True,
        timeout=GUARD,
        env=_env(),
    )
    assert result.returncode == 2 and result.stderr.startswith("error: ")


def _call_by_reflection(address: str, anchor_pem: bytes, client: ForgedCert) -> tuple[list[str], dict]:
    """What grpcurl does with no .proto: list the services, fetch AgentService's descriptor
    over reflection, build the request from it and call GetStatus (sync gRPC, in a thread)."""
    from google.protobuf import descriptor_pool, json_format, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    creds = grpc.ssl_channel_credentials(anchor_pem, client.key_pem, client.chain_pem)
    with grpc.secure_channel(address, creds, options=[("grpc.ssl_target_name_override", AGENT_CN)]) as ch:
        database = ProtoReflectionDescriptorDatabase(ch)
        services = sorted(database.get_services())
        pool = descriptor_pool.DescriptorPool(database)  # a pool of its own: nothing from poller.proto
        method = pool.FindServiceByName("monitoring.AgentService").FindMethodByName("GetStatus")
        request_class = message_factory.GetMessageClass(method.input_type)
        reply_class = message_factory.GetMessageClass(method.output_type)
        call = ch.unary_unary(
            "/monitoring.AgentService/GetStatus",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=reply_class.FromString,
        )
        reply = call(request_class(service_name="nginx", service_type="process"), timeout=10)
        return services, json_format.MessageToDict(reply, preserving_proto_field_name=True)


async def test_reflection_serves_the_schema_so_grpcurl_needs_no_stubs(agent: MockAgent, pki: Pki) -> None:
    services, reply = await asyncio.to_thread(_call_by_reflection, agent.address, pki.ca("acme-corp"), pki.poller)
    assert services == ["grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection", "monitoring.AgentService"]
    assert reply["service_name"] == "nginx" and reply["available"] is True
