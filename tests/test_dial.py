"""dial_agent against real mock agents: the adversarial matrix, and what is accepted.

Every case is a real TLS handshake on loopback with a certificate forged the
way an attacker (or a careless operator) would make it.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from poller.agent.client import AgentClient
from poller.dial.dialer import dial_agent
from poller.identity.certinfo import utcnow
from poller.identity.reasons import AgentUnreachable, IdentityRefused, Reason
from poller.testing.forge import serviceradar_style_dir
from poller.testing.mock_agent import MockAgent
from poller.trust.store import TrustStore

ACME = "acme-corp"


def _now_shift(days: int):
    return utcnow() + timedelta(days=days)


# (id, kwargs for pki.agent, kwargs for dial_agent, expected reason)
REFUSALS = [
    (
        "another-tenants-agent",
        dict(tenant="xyz-inc", component_id="agent-007", partition_id="site-b"),
        {},
        Reason.TENANT_MISMATCH,
    ),
    ("minted-by-other-tenant-ca-with-our-cn", dict(tenant=ACME, issuer_tenant="xyz-inc", dns=[]), {}, Reason.TENANT_MISMATCH),
    ("minted-by-other-tenant-ca-with-our-cn-and-san", dict(tenant=ACME, issuer_tenant="xyz-inc"), {}, Reason.TENANT_MISMATCH),
    ("signed-by-root-directly", dict(tenant=ACME, signed_by="root"), {}, Reason.UNTRUSTED_CHAIN),
    ("signed-by-platform-ca", dict(tenant=ACME, signed_by="platform"), {}, Reason.UNTRUSTED_CHAIN),
    ("self-signed", dict(tenant=ACME, signed_by="self"), {}, Reason.UNTRUSTED_CHAIN),
    ("expired", dict(tenant=ACME, not_after=_now_shift(-1)), {}, Reason.EXPIRED),
    ("not-yet-valid", dict(tenant=ACME, not_before=_now_shift(1), not_after=_now_shift(30)), {}, Reason.NOT_YET_VALID),
    ("leaf-is-a-ca", dict(tenant=ACME, is_ca=True), {}, Reason.BAD_CERTIFICATE),
    ("cn-three-labels", dict(tenant=ACME, cn="agent-001.acme-corp.serviceradar", spiffe=None), {}, Reason.INVALID_CN),
    (
        "cn-five-labels",
        dict(tenant=ACME, cn="agent-001.partition-1.x.acme-corp.serviceradar", spiffe=None),
        {},
        Reason.INVALID_CN,
    ),
    ("cn-wrong-suffix", dict(tenant=ACME, cn="agent-001.partition-1.acme-corp.example.com", spiffe=None), {}, Reason.INVALID_CN),
    ("cn-star-tenant", dict(tenant=ACME, cn="agent-001.partition-1.*.serviceradar", spiffe=None, dns=[]), {}, Reason.INVALID_CN),
    ("cn-gt-tenant", dict(tenant=ACME, cn="agent-001.partition-1.>.serviceradar", spiffe=None, dns=[]), {}, Reason.INVALID_CN),
    ("cn-upper-case", dict(tenant=ACME, cn="agent-001.partition-1.ACME-CORP.serviceradar", spiffe=None), {}, Reason.INVALID_CN),
    ("cn-empty-label", dict(tenant=ACME, cn="agent-001..acme-corp.serviceradar", spiffe=None, dns=[]), {}, Reason.INVALID_CN),
    ("no-cn", dict(tenant=ACME, cn=None), {}, Reason.INVALID_CN),
    ("cn-tenant-differs-from-issuing-ca", dict(tenant="xyz-inc", issuer_tenant=ACME, dns=[]), {}, Reason.TENANT_MISMATCH),
    (
        "spiffe-disagrees-with-cn",
        dict(tenant=ACME, spiffe="spiffe://serviceradar.local/agent/xyz-inc/partition-1/agent-001"),
        {},
        Reason.IDENTITY_MISMATCH,
    ),
    (
        "spiffe-not-serviceradar",
        dict(tenant=ACME, spiffe="spiffe://evil.example/agent/acme-corp/partition-1/agent-001"),
        {},
        Reason.IDENTITY_MISMATCH,
    ),
    ("wrong-component-expected", dict(tenant=ACME), dict(component="agent-002"), Reason.IDENTITY_MISMATCH),
    ("wrong-partition-expected", dict(tenant=ACME), dict(partition="partition-9"), Reason.IDENTITY_MISMATCH),
    (
        "san-outside-name-constraints",
        dict(tenant=ACME, dns=["agent-001.partition-1.acme-corp.serviceradar", "agent-001.partition-1.xyz-inc.serviceradar"]),
        {},
        Reason.UNTRUSTED_CHAIN,
    ),
    ("san-omits-the-cn", dict(tenant=ACME, dns=["other.partition-1.acme-corp.serviceradar"]), {}, Reason.IDENTITY_MISMATCH),
]


# The tenant whose CA's key signed each case's certificate (issuer_tenant), None when no tenant CA did.
NOT_A_TENANT_CA = {"signed-by-root-directly", "signed-by-platform-ca", "self-signed"}
BY_XYZ_CA = {"another-tenants-agent", "minted-by-other-tenant-ca-with-our-cn", "minted-by-other-tenant-ca-with-our-cn-and-san"}


def issuer_of(case: str) -> str | None:
    return None if case in NOT_A_TENANT_CA else "xyz-inc" if case in BY_XYZ_CA else ACME


@pytest.mark.parametrize(("case", "forge", "expect", "reason"), REFUSALS, ids=[c[0] for c in REFUSALS])
async def test_adversarial_matrix_is_refused_with_its_reason(pki, trust, serve, log_events, case, forge, expect, reason):
    agent = await serve(pki.agent(**forge))
    with pytest.raises(IdentityRefused) as caught:
        await dial_agent(agent.address, tenant=ACME, trust=trust, **expect)
    assert caught.value.reason is reason, caught.value.detail
    # No RPC of any kind (health included) reached it: the proof comes first.
    assert agent.requests == []
    # The audit line's tenant is the one dialed; the CA that signed it, when a tenant's did, is issuer_tenant.
    assert caught.value.issuer_tenant == issuer_of(case)
    [line] = [e for e in log_events() if e["event"] == "identity_refused"]
    assert (line["tenant"], line.get("issuer_tenant")) == (ACME, issuer_of(case))


async def test_a_san_naming_the_cn_in_capitals_is_pinned(pki, trust, serve):
    # DNS names have no case, and gRPC's own name check agrees; the pin's check refused
    # it as "the SAN DNS names do not include the CN" (outside review).
    agent = await serve(pki.agent(ACME, "agent-001", "partition-1", dns=["AGENT-001.Partition-1.ACME-CORP.serviceradar"]))
    conn = await dial_agent(agent.address, tenant=ACME, trust=trust)
    try:
        assert conn.context.cn == "agent-001.partition-1.acme-corp.serviceradar"
        await AgentClient(conn).get_status("ping", "icmp")  # over the channel pinned to it
    finally:
        await conn.close()


async def test_revoked_agent_is_refused(pki, serve):
    cert = pki.agent(ACME, write=True)
    pki.revoke(ACME, cert)
    agent = await serve(cert)
    with pytest.raises(IdentityRefused) as caught:
        await dial_agent(agent.address, tenant=ACME, trust=TrustStore(pki.directory))
    assert caught.value.reason is Reason.REVOKED


async def test_good_agent_is_accepted_with_the_proven_identity(pki, trust, serve):
    cert = pki.agent(ACME, "agent-001", "partition-1")
    agent = await serve(cert)
    conn = await dial_agent(agent.address, tenant=ACME, trust=trust, component="agent-001", partition="partition-1")
    try:
        ctx = conn.context
        assert (ctx.tenant, ctx.component_id, ctx.partition_id, ctx.component_type) == (ACME, "agent-001", "partition-1", "agent")
        assert ctx.serial == cert.serial_hex
        assert ctx.spiffe_id == "spiffe://serviceradar.local/agent/acme-corp/partition-1/agent-001"
        reply = await AgentClient(conn).get_status("ping", "icmp")
        assert reply.context is ctx and reply.response.available
        assert agent.peers[-1] == "poller-1.serviceradar"
    finally:
        await conn.close()


async def test_agent_sending_no_intermediate_is_accepted(pki, trust, serve):
    agent = await serve(pki.agent(ACME), leaf_only=True)
    conn = await dial_agent(agent.address, tenant=ACME, trust=trust)
    try:
        assert conn.context.tenant == ACME
        assert (await AgentClient(conn).get_status("ping", "icmp")).response.available
    finally:
        await conn.close()


async def test_serviceradar_style_rsa_directory_is_accepted(tmp_path):
    made = serviceradar_style_dir(tmp_path / "sr", tenants=(ACME,))
    trust = TrustStore(made.root)
    async with MockAgent.from_certs_dir(made.root, ACME, "agent-001", "default") as agent:
        conn = await dial_agent(agent.address, tenant=ACME, trust=trust)
        try:
            assert (conn.context.tenant, conn.context.component_id, conn.context.partition_id) == (ACME, "agent-001", "default")
            assert conn.context.component_type == "agent"
            assert (await AgentClient(conn).get_status("ping", "icmp")).response.available
        finally:
            await conn.close()


async def test_payload_claiming_another_agent_does_not_change_the_identity(pki, trust, serve):
    agent = await serve(pki.agent(ACME, "agent-001"))
    agent.behaviour.claim_agent_id = "agent-999"
    conn = await dial_agent(agent.address, tenant=ACME, trust=trust)
    try:
        reply = await AgentClient(conn).get_status("ping", "icmp")
        assert reply.response.agent_id == "agent-999"
        assert reply.context.component_id == "agent-001"
        assert conn.context.component_id == "agent-001"
    finally:
        await conn.close()


async def test_impostor_restarted_on_the_same_address_is_refused_by_the_existing_channel(pki, trust, serve):
    agent = await serve(pki.agent(ACME, "agent-001"))
    conn = await dial_agent(agent.address, tenant=ACME, trust=trust)
    client = AgentClient(conn)
    try:
        assert (await client.get_status("ping", "icmp")).context.tenant == ACME
        impostor = pki.agent(ACME, "agent-001", issuer_tenant="xyz-inc", dns=[])
        await agent.restart(cert_chain_pem=impostor.chain_pem, key_pem=impostor.key_pem)
        agent.reset_records()
        with pytest.raises(IdentityRefused) as caught:
            await client.get_status("ping", "icmp")
        assert caught.value.reason is Reason.TENANT_MISMATCH
        assert agent.count("GetStatus") == 0  # the impostor never saw a request
        with pytest.raises(IdentityRefused):  # and the refusal sticks
            await client.get_status("ping", "icmp")
    finally:
        await conn.close()


async def test_same_tenant_agent_swapped_in_is_refused_by_the_pinned_name(pki, trust, serve):
    agent = await serve(pki.agent(ACME, "agent-001"))
    conn = await dial_agent(agent.address, tenant=ACME, trust=trust)
    client = AgentClient(conn)
    try:
        await client.get_status("ping", "icmp")
        other = pki.agent(ACME, "agent-002")
        await agent.restart(cert_chain_pem=other.chain_pem, key_pem=other.key_pem)
        agent.reset_records()
        with pytest.raises(IdentityRefused) as caught:
            await client.get_status("ping", "icmp")
        assert caught.value.reason is Reason.IDENTITY_MISMATCH
        assert agent.count("GetStatus") == 0
    finally:
        await conn.close()


async def test_unreachable_agent(trust, unused_tcp_port):
    with pytest.raises(AgentUnreachable) as caught:
        await dial_agent(f"127.0.0.1:{unused_tcp_port}", tenant=ACME, trust=trust, timeout=2)
    assert caught.value.reason is Reason.UNREACHABLE


async def test_unknown_tenant_is_refused(pki, trust, serve):
    agent = await serve(pki.agent(ACME))
    with pytest.raises(IdentityRefused) as caught:
        await dial_agent(agent.address, tenant="nobody", trust=trust)
    assert caught.value.reason is Reason.UNTRUSTED_CHAIN


async def test_refusals_are_audited_without_key_material(pki, trust, serve, capsys, log_events, caplog):
    cert = pki.agent(ACME, issuer_tenant="xyz-inc")
    agent = await serve(cert)
    with pytest.raises(IdentityRefused):
        await dial_agent(agent.address, tenant=ACME, trust=trust)
    logs = log_events()
    audit = [entry for entry in logs if entry.get("audit")]
    assert len(audit) == 1
    line = audit[0]
    assert (line["event"], line["reason"], line["tenant"], line["serial"]) == (
        "identity_refused",
        "tenant_mismatch",
        ACME,
        cert.serial_hex,
    )
    assert (
        line["fingerprint"]
        == cert.cert.fingerprint(__import__("cryptography.hazmat.primitives.hashes", fromlist=["SHA256"]).SHA256()).hex()
    )
    text = repr(logs) + caplog.text
    assert "PRIVATE KEY" not in text and cert.key_pem.decode() not in text
    assert audit[0]["logger"] == "poller.audit" and audit[0]["level"] == "warning"
    assert capsys.readouterr().out == ""  # a library prints nothing


async def test_concurrent_failures_share_one_reproof(pki, trust, serve, log_events):
    import asyncio

    agent = await serve(pki.agent(ACME, "agent-001"))
    conn = await dial_agent(agent.address, tenant=ACME, trust=trust)
    client = AgentClient(conn)
    try:
        await client.get_status("ping", "icmp")
        impostor = pki.agent(ACME, "agent-001", issuer_tenant="xyz-inc", dns=[])
        await agent.restart(cert_chain_pem=impostor.chain_pem, key_pem=impostor.key_pem)
        before = len(log_events())
        outcomes = await asyncio.gather(*(client.get_status("ping", "icmp") for _ in range(20)), return_exceptions=True)
        assert all(isinstance(o, IdentityRefused) and o.reason is Reason.TENANT_MISMATCH for o in outcomes)
        assert sum(1 for entry in log_events()[before:] if entry.get("event") == "identity_refused") == 1
    finally:
        await conn.close()


async def test_leaf_that_borrows_the_tenant_ca_name_is_refused(pki, trust, serve, tmp_path):
    """A rogue CA named exactly like acme-corp's intermediate signs a leaf: the
    issuer name matches, the signature does not."""
    from poller.testing.forge import ForgePki

    rogue = ForgePki.create(tmp_path / "rogue", tenants=(ACME,))  # same CA names, other keys
    agent = await serve(rogue.agent(ACME))
    with pytest.raises(IdentityRefused) as caught:
        await dial_agent(agent.address, tenant=ACME, trust=trust)
    assert caught.value.reason is Reason.UNTRUSTED_CHAIN
    # Its issuer name is acme-corp's CA's, its signature is not: no issuer_tenant.
    assert caught.value.issuer_tenant is None and caught.value.vouched is None


@pytest.mark.parametrize("pinned", [False, True], ids=["name-from-certificate", "name-from-expectation"])
async def test_both_dial_paths_refuse_an_impostor_and_accept_the_agent(pki, trust, serve, pinned):
    expect = dict(component="agent-001", partition="partition-1") if pinned else {}
    impostor = await serve(pki.agent(ACME, "agent-001", issuer_tenant="xyz-inc", dns=[]))
    with pytest.raises(IdentityRefused) as caught:
        await dial_agent(impostor.address, tenant=ACME, trust=trust, **expect)
    assert caught.value.reason is Reason.TENANT_MISMATCH
    # Not even the pinned path's early gRPC connect let a request through.
    assert impostor.requests == []
    good = await serve(pki.agent(ACME, "agent-001"))
    conn = await dial_agent(good.address, tenant=ACME, trust=trust, **expect)
    try:
        assert conn.target_name == "agent-001.partition-1.acme-corp.serviceradar"
        assert (await AgentClient(conn).get_status("ping", "icmp")).context.component_id == "agent-001"
    finally:
        await conn.close()


async def test_callers_code_runs_as_the_replys_proven_tenant(pki, trust, serve):
    from poller import current_tenant

    agent = await serve(pki.agent(ACME, "agent-001"))
    seen = []

    async def store(response) -> None:  # a user's own code, unaware of connections
        seen.append((current_tenant().tenant, current_tenant().component_id, response.available))

    async with await dial_agent(agent.address, tenant=ACME, trust=trust) as conn:
        client = AgentClient(conn)
        reply = await client.get_status("ping", "icmp")
        doc = await client.fetch_document("sweep", "sweep")
    with pytest.raises(LookupError):
        current_tenant()  # nothing bound out here
    with reply.bound():
        await store(reply.response)
    with doc.bound() as ctx:
        assert current_tenant() is ctx is doc.context
    with pytest.raises(LookupError):
        current_tenant()  # and unbound again after the block
    assert seen == [(ACME, "agent-001", True)]
