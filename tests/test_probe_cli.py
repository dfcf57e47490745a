"""`serviceradar-poller probe`: one JSON object on stdout and the contract's exit codes.

The CLI runs as a real subprocess against real mock agents.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from spawn import spawn_cli

ACME = "acme-corp"
PROBE_KEYS = {
    "accepted",
    "tenant",
    "component_id",
    "partition_id",
    "component_type",
    "spiffe_id",
    "serial",
    "fingerprint_sha256",
    "issuer_spki_sha256",
    "not_after",
    "available",
    "response_time_ns",
    "latency_ms",
    "status_code",
    "crl",
}


async def probe(*args: str) -> tuple[int, dict, str]:
    proc = await spawn_cli(
        "probe",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    lines = out.decode().splitlines()
    assert len(lines) <= 1, out
    return proc.returncode, (json.loads(lines[0]) if lines else {}), err.decode()


async def test_accepted(pki, serve):
    cert = pki.agent(ACME, "agent-001", "partition-1")
    agent = await serve(cert)
    code, doc, _ = await probe(agent.address, "--certs", str(pki.directory), "--tenant", ACME, "--component", "agent-001")
    assert code == 0
    assert set(doc) == PROBE_KEYS
    assert doc["accepted"] is True
    assert (doc["tenant"], doc["component_id"], doc["partition_id"], doc["component_type"]) == (
        ACME,
        "agent-001",
        "partition-1",
        "agent",
    )
    assert doc["serial"] == cert.serial_hex
    assert (
        doc["fingerprint_sha256"]
        == cert.cert.fingerprint(__import__("cryptography.hazmat.primitives.hashes", fromlist=["x"]).SHA256()).hex()
    )
    assert doc["not_after"].endswith("Z")
    assert agent.count("GetStatus") == 1  # one real call over the pinned channel
    # The GetStatus outcome is the agent's answer, not a constant.
    assert (doc["available"], doc["response_time_ns"], doc["status_code"]) == (True, 1_000_000, "OK")
    assert doc["latency_ms"] > 0


async def test_accepted_reports_an_unavailable_answer(pki, serve):
    agent = await serve(pki.agent(ACME, "agent-001"))
    agent.behaviour.available = False
    agent.behaviour.response_time_ns = 42
    code, doc, _ = await probe(agent.address, "--certs", str(pki.directory), "--tenant", ACME)
    assert (code, doc["accepted"], doc["available"], doc["response_time_ns"]) == (0, True, False, 42)


async def test_refused_impostor_exits_3(pki, serve):
    agent = await serve(pki.agent(ACME, "agent-666", issuer_tenant="xyz-inc", dns=[]))
    code, doc, _ = await probe(agent.address, "--certs", str(pki.directory), "--tenant", ACME)
    assert code == 3
    assert doc == {"accepted": False, "reason": "tenant_mismatch", "detail": doc["detail"]}
    assert agent.count("GetStatus") == 0


async def test_unreachable_exits_4(pki, unused_tcp_port):
    code, doc, _ = await probe(f"127.0.0.1:{unused_tcp_port}", "--certs", str(pki.directory), "--tenant", ACME, "--timeout", "2")
    assert code == 4
    assert (doc["accepted"], doc["reason"]) == (False, "unreachable")


async def test_hung_agent_times_out_with_4(pki, serve):
    agent = await serve(pki.agent(ACME))
    agent.behaviour.hang = True
    code, doc, _ = await probe(agent.address, "--certs", str(pki.directory), "--tenant", ACME, "--timeout", "1")
    assert code == 4
    assert doc["reason"] == "unreachable"


@pytest.mark.parametrize(
    "args",
    [
        ["127.0.0.1:1", "--certs", "/nonexistent/certs", "--tenant", ACME],
        ["not-an-address", "--certs", "CERTS", "--tenant", ACME],
        ["127.0.0.1:1", "--certs", "CERTS", "--tenant", "ACME"],
        ["127.0.0.1:1", "--certs", "CERTS", "--tenant", "no-such-tenant"],
        ["127.0.0.1:1", "--certs", "CERTS"],
    ],
    ids=["missing-certs-dir", "bad-address", "bad-slug", "unknown-tenant", "missing-tenant"],
)
async def test_bad_usage_exits_2(pki, args):
    args = [str(pki.directory) if a == "CERTS" else a for a in args]
    code, doc, err = await probe(*args)
    assert code == 2
    assert doc == {"accepted": False, "reason": "usage", "detail": doc["detail"]}
    assert doc["detail"] and doc["detail"] in err


async def test_unknown_tenant_names_the_tenants_that_have_a_ca(pki):
    code, doc, _ = await probe("127.0.0.1:1", "--certs", str(pki.directory), "--tenant", "no-such-tenant")
    assert (code, doc["reason"]) == (2, "usage")
    assert "no-such-tenant" in doc["detail"] and "acme-corp, xyz-inc" in doc["detail"]


async def test_a_peer_that_does_not_speak_tls_is_named_plainly(pki):
    import grpc

    server = grpc.aio.server()  # a plaintext gRPC server: no TLS at all
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        code, doc, _ = await probe(f"127.0.0.1:{port}", "--certs", str(pki.directory), "--tenant", ACME, "--timeout", "3")
    finally:
        await server.stop(None)
    assert (code, doc["reason"]) == (4, "unreachable")
    assert "does not speak TLS" in doc["detail"], doc


async def test_explicit_client_cert(pki, serve):
    agent = await serve(pki.agent(ACME))
    layout = pki.layout
    code, doc, _ = await probe(
        agent.address,
        "--certs",
        str(pki.directory),
        "--tenant",
        ACME,
        "--client-cert",
        str(layout.root / "poller-chain.pem"),
        "--client-key",
        str(layout.service_key("poller")),
    )
    assert (code, doc["accepted"]) == (0, True)
