"""The deployment form (issue 21): a CA bound to one tenant by tenants/<slug>/tenant.json,
edge CNs without a tenant label, the newer SPIFFE form, with the certificates that
upstream ServiceRadar's own generate-certs.sh writes at HEAD (tests/upstream_certs.py).

Everything that proves an identity calls poller.trust.verify, so it is checked
here directly (with a fixed clock), through the dialer (real TLS, a MockAgent
serving upstream's agent-001) and through TenantServerInterceptor (real TLS,
upstream's agent-001 as the client).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from spawn import cli_argv
from upstream_certs import (
    AGENT,
    AGENT_CN,
    AGENT_SPIFFE,
    GATEWAY,
    IN_VALIDITY,
    ROOT,
    ROOT_PEM,
    agent_001,
    bind,
    re_sign,
    spiffe_san,
)

from poller.agent.client import AgentClient
from poller.dial.dialer import dial_agent
from poller.identity.names import CnForm, parse_spiffe_id
from poller.identity.reasons import IdentityRefused, PollerError, Reason
from poller.testing import ForgePki
from poller.testing.mock_agent import MockAgent
from poller.trust import TrustStore, TrustStoreError, verify_agent_chain

ACME, XYZ = "acme-corp", "xyz-inc"


def prove(trust: TrustStore, tenant: str, chain=(AGENT, ROOT), **kw):
    return verify_agent_chain(list(chain), tenant=tenant, trust=trust.snapshot, now=IN_VALIDITY, **kw)


def refusal(trust: TrustStore, tenant: str, chain=(AGENT, ROOT)) -> IdentityRefused:
    with pytest.raises(IdentityRefused) as caught:
        prove(trust, tenant, chain)
    return caught.value


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    """A certs directory whose only tenant is acme-corp, bound to upstream's root."""
    directory = tmp_path / "certs"
    bind(directory, ACME)
    return directory


# --- upstream HEAD's certificates ------------------------------------------------


def test_upstream_agent_proves_the_tenant_its_root_is_bound_to(certs):
    ctx = prove(TrustStore(certs, require_client=False), ACME)
    assert (ctx.tenant, ctx.component_id, ctx.partition_id, ctx.component_type) == (ACME, "agent-001", "default", "agent")
    assert ctx.spiffe_id == AGENT_SPIFFE and ctx.cn == AGENT_CN and ctx.cn_form is CnForm.DEPLOYMENT


def test_the_leaf_alone_and_the_client_purpose_prove_it_too(certs):
    trust = TrustStore(certs, require_client=False)
    assert prove(trust, ACME, chain=(AGENT,), purpose="client").tenant == ACME


def test_upstream_agent_is_refused_when_the_root_is_not_bound(tmp_path):
    # Upstream's layout as it is: the root at root.pem, next to a classic acme-corp.
    pki = ForgePki.create(tmp_path / "certs", tenants=(ACME,))
    (pki.directory / "root.pem").write_bytes(ROOT_PEM)
    trust = TrustStore(pki.directory)
    assert trust.snapshot.root == ROOT
    err = refusal(trust, ACME)
    assert err.reason is Reason.UNTRUSTED_CHAIN and "platform root directly" in err.detail
    # The same directory from PEM bytes: the root given as root, acme-corp's own CA as its anchor.
    trust = TrustStore.from_pem(tenants={ACME: pki.tenant_ca_pem(ACME)}, root=ROOT_PEM)
    assert refusal(trust, ACME).reason is Reason.UNTRUSTED_CHAIN


@pytest.mark.parametrize("binding", [None, {"cn_form": "tenant"}, {}], ids=["no-tenant.json", "tenant-form", "empty"])
def test_a_root_in_a_tenant_dir_without_the_binding_makes_the_directory_unusable(tmp_path, binding):
    home = bind(tmp_path / "certs", ACME, cn_form=None)
    if binding is not None:
        (home / "tenant.json").write_text(json.dumps(binding))
    with pytest.raises(TrustStoreError) as caught:
        TrustStore(tmp_path / "certs", require_client=False)
    assert "not a tenant CA name" in str(caught.value) and "tenant.json" in str(caught.value)


def test_root_bound_to_xyz_inc_proves_xyz_inc_never_acme_corp(tmp_path):
    pki = ForgePki.create(tmp_path / "certs", tenants=(ACME,))
    bind(pki.directory, XYZ)
    trust = TrustStore(pki.directory)
    assert prove(trust, XYZ).tenant == XYZ
    err = refusal(trust, ACME)
    assert err.reason is Reason.TENANT_MISMATCH and "ServiceRadar Root CA" in err.detail


def test_platform_certificates_of_the_same_root_are_no_edge_identity(certs):
    # generate-certs.sh signs its platform services with the same root: `agent-gateway.serviceradar`.
    assert refusal(TrustStore(certs, require_client=False), ACME, chain=(GATEWAY,)).reason is Reason.INVALID_CN


def test_a_platform_name_is_never_a_deployment_cn(certs):
    cert = re_sign(AGENT, subject_cn="ops-admin.platform.serviceradar", san=spiffe_san(dns="ops-admin.platform.serviceradar"))
    err = refusal(TrustStore(certs, require_client=False), ACME, chain=(cert,))
    assert err.reason is Reason.INVALID_CN and "platform" in err.detail


# --- 4-label CNs from a deployment CA ------------------------------------------------


def test_a_four_label_cn_naming_the_bound_tenant_is_accepted(certs):
    cn = "agent-002.default.acme-corp.serviceradar"
    cert = re_sign(AGENT, subject_cn=cn, san=spiffe_san("spiffe://serviceradar.local/agent/acme-corp/default/agent-002", dns=cn))
    ctx = prove(TrustStore(certs, require_client=False), ACME, chain=(cert,))
    assert (ctx.tenant, ctx.component_id, ctx.cn, ctx.cn_form) == (ACME, "agent-002", cn, CnForm.TENANT)


def test_a_four_label_cn_naming_another_tenant_is_tenant_mismatch(certs):
    cn = "agent-002.default.xyz-inc.serviceradar"
    cert = re_sign(AGENT, subject_cn=cn, san=spiffe_san(dns=cn))
    assert refusal(TrustStore(certs, require_client=False), ACME, chain=(cert,)).reason is Reason.TENANT_MISMATCH


@pytest.mark.parametrize(
    "cn", ["agent-001.serviceradar", "a.b.c.d.serviceradar", "agent-001.default.example", "tenant-acme-corp.ca.serviceradar"]
)
def test_other_shapes_are_invalid_cn(certs, cn):
    cert = re_sign(AGENT, subject_cn=cn, san=spiffe_san(dns="x.serviceradar"))
    assert refusal(TrustStore(certs, require_client=False), ACME, chain=(cert,)).reason is Reason.INVALID_CN


# --- SPIFFE: the newer form, and its collision with the 3-segment tenant form -------


@pytest.mark.parametrize(
    "uris, component_type",
    [
        ((), None),
        (("spiffe://serviceradar.local/checker/default/agent-001",), "checker"),
        (("spiffe://serviceradar.local/agent/acme-corp/default/agent-001",), "agent"),
    ],
    ids=["no-spiffe", "deployment-form", "four-segment-form-naming-the-tenant"],
)
def test_deployment_cn_with_agreeing_or_no_spiffe_is_accepted(certs, uris, component_type):
    cert = re_sign(AGENT, san=spiffe_san(*uris))
    ctx = prove(TrustStore(certs, require_client=False), ACME, chain=(cert,))
    assert (ctx.tenant, ctx.component_type, ctx.spiffe_id) == (ACME, component_type, uris[0] if uris else None)


@pytest.mark.parametrize(
    "uri",
    [
        "spiffe://serviceradar.local/agent/default/agent-002",  # another component
        "spiffe://serviceradar.local/agent/site-b/agent-001",  # another partition
        "spiffe://serviceradar.local/agent-001/default/agent",  # not a type first
        "spiffe://serviceradar.local/agent/xyz-inc/default/agent-001",  # another tenant
    ],
)
def test_deployment_cn_with_a_disagreeing_spiffe_is_identity_mismatch(certs, uri):
    cert = re_sign(AGENT, san=spiffe_san(uri))
    assert refusal(TrustStore(certs, require_client=False), ACME, chain=(cert,)).reason is Reason.IDENTITY_MISMATCH


def test_the_newer_spiffe_form_next_to_a_classic_cn_is_never_read_as_tenant_default(tmp_path):
    # `agent/default/agent-001` read as <component>/<tenant>/<partition> would say tenant "default".
    pki = ForgePki.create(tmp_path / "certs", tenants=(ACME, "default"))
    trust = TrustStore(pki.directory)
    cert = pki.agent(ACME, "agent-001", "default", spiffe=AGENT_SPIFFE)
    with pytest.raises(IdentityRefused) as caught:
        verify_agent_chain([cert.cert], tenant=ACME, trust=trust.snapshot)
    assert caught.value.reason is Reason.IDENTITY_MISMATCH
    with pytest.raises(IdentityRefused) as caught:  # and it does not prove tenant "default" either
        verify_agent_chain([cert.cert], tenant="default", trust=trust.snapshot)
    assert caught.value.reason is Reason.TENANT_MISMATCH


def test_a_four_label_cn_under_a_deployment_ca_reads_three_segments_the_classic_way(certs):
    cn = "agent-001.default.acme-corp.serviceradar"
    cert = re_sign(AGENT, subject_cn=cn, san=spiffe_san(AGENT_SPIFFE, dns=cn))
    assert refusal(TrustStore(certs, require_client=False), ACME, chain=(cert,)).reason is Reason.IDENTITY_MISMATCH


def test_the_cn_form_decides_how_three_segments_are_read():
    classic = parse_spiffe_id(AGENT_SPIFFE)
    deployment = parse_spiffe_id(AGENT_SPIFFE, cn_form=CnForm.DEPLOYMENT)
    assert (classic.tenant, classic.component_id, classic.partition_id) == ("default", "agent", "agent-001")
    assert (deployment.tenant, deployment.component_type, deployment.partition_id, deployment.component_id) == (
        None,
        "agent",
        "default",
        "agent-001",
    )
    assert deployment.uri == AGENT_SPIFFE


# --- the binding itself -----------------------------------------------------------------


def test_one_ca_bound_to_two_tenants_is_refused_naming_both(certs):
    bind(certs, XYZ)
    with pytest.raises(TrustStoreError) as caught:
        TrustStore(certs, require_client=False)
    assert "bound to two tenants" in str(caught.value) and ACME in str(caught.value) and XYZ in str(caught.value)
    with pytest.raises(TrustStoreError, match="bound to two tenants"):
        TrustStore.from_pem(tenants={ACME: ROOT_PEM, XYZ: ROOT_PEM}, cn_forms={ACME: "deployment", XYZ: "deployment"})


def test_a_second_binding_of_the_same_ca_on_reload_is_refused_and_the_first_stays(certs):
    trust = TrustStore(certs, require_client=False)
    bind(certs, XYZ)
    report = trust.reload()
    assert any("bound to two tenants" in p and XYZ in p for p in report.problems)
    assert set(trust.tenants) == {ACME} and prove(trust, ACME).tenant == ACME


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"cn_form": "deployment", "tenant": "xyz-inc"}', "unknown key"),
        ('{"cn_form": "Deployment"}', "is not one of"),
        ('{"cn_form": 1}', "is not one of"),
        ('["deployment"]', "JSON object"),
        ("cn_form=deployment", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        ("{" + " " * 5000 + "}", "more than"),
    ],
    ids=["unknown-key", "bad-value", "not-a-string", "not-an-object", "not-json", "not-utf8", "too-big"],
)
def test_a_bad_tenant_json_makes_the_directory_unusable(certs, content, message):
    path = certs / "tenants" / ACME / "tenant.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(TrustStoreError) as caught:
        TrustStore(certs, require_client=False)
    assert message in str(caught.value) and str(path) in str(caught.value)


def test_a_bad_tenant_json_on_reload_keeps_the_binding_in_force(certs):
    trust = TrustStore(certs, require_client=False)
    (certs / "tenants" / ACME / "tenant.json").write_text('{"cn_form": "deployment", "x": 1}')
    report = trust.reload()
    assert report.problems and "unknown key" in report.problems[0]
    assert prove(trust, ACME).tenant == ACME


def test_the_platform_services_ca_cannot_be_bound(tmp_path):
    pki = ForgePki.create(tmp_path / "certs", tenants=())
    bind(pki.directory, ACME, ca_pem=pki.platform_ca_pem)
    with pytest.raises(TrustStoreError, match="platform services CA"):
        TrustStore(pki.directory)


def test_another_tenants_intermediate_cannot_be_bound(tmp_path):
    pki = ForgePki.create(tmp_path / "certs", tenants=(XYZ,))
    bind(pki.directory, ACME, ca_pem=pki.tenant_ca_pem(XYZ))
    with pytest.raises(TrustStoreError) as caught:  # the same key twice, or another tenant's CA name
        TrustStore(pki.directory)
    assert XYZ in str(caught.value) and ACME in str(caught.value)
    with pytest.raises(TrustStoreError, match="CA is for tenant 'xyz-inc'"):
        TrustStore.from_pem(tenants={ACME: pki.tenant_ca_pem(XYZ)}, cn_forms={ACME: "deployment"})


def test_a_classic_tenant_is_unchanged_next_to_a_bound_one(tmp_path):
    pki = ForgePki.create(tmp_path / "certs", tenants=(XYZ,))
    bind(pki.directory, ACME)
    trust = TrustStore(pki.directory)
    xyz = pki.agent(XYZ, "agent-007", "site-b")
    assert verify_agent_chain([xyz.cert], tenant=XYZ, trust=trust.snapshot).cn_form is CnForm.TENANT
    # A 3-label CN from a classic tenant's CA is what it always was: no identity.
    bare = pki.agent(XYZ, cn="agent-007.site-b.serviceradar", spiffe=None)
    with pytest.raises(IdentityRefused) as caught:
        verify_agent_chain([bare.cert], tenant=XYZ, trust=trust.snapshot)
    assert caught.value.reason is Reason.INVALID_CN
    with pytest.raises(IdentityRefused) as caught:  # xyz-inc's agent for acme-corp: issued by another tenant's CA
        verify_agent_chain([xyz.cert], tenant=ACME, trust=trust.snapshot)
    assert caught.value.reason is Reason.TENANT_MISMATCH


# --- through the dialer: real TLS, a MockAgent serving upstream's agent-001 ------------


@pytest.fixture
async def upstream_agent(tmp_path):
    """(ForgePki with a classic xyz-inc, a MockAgent serving upstream's agent-001)."""
    pki = ForgePki.create(tmp_path / "certs", tenants=(XYZ,))
    chain, key = agent_001()
    agent = MockAgent(cert_chain_pem=chain, key_pem=key, client_ca_pem=pki.root_pem, agent_id="agent-001")
    await agent.start()
    yield pki, agent
    await agent.stop()


async def test_dialer_proves_upstreams_agent_for_the_bound_tenant(upstream_agent):
    pki, agent = upstream_agent
    bind(pki.directory, ACME)
    conn = await dial_agent(agent.address, tenant=ACME, trust=TrustStore(pki.directory), component="agent-001")
    try:
        reply = await AgentClient(conn).get_status("ping", "icmp")  # over the channel pinned to the 3-label CN
    finally:
        await conn.close()
    assert (reply.context.tenant, reply.context.component_id, reply.context.partition_id) == (ACME, "agent-001", "default")
    assert reply.context.cn == AGENT_CN and reply.response.available


async def test_dialer_refuses_upstreams_agent_for_another_or_an_unbound_tenant(upstream_agent):
    pki, agent = upstream_agent
    bind(pki.directory, ACME)
    with pytest.raises(IdentityRefused) as caught:
        await dial_agent(agent.address, tenant=XYZ, trust=TrustStore(pki.directory))
    assert caught.value.reason is Reason.TENANT_MISMATCH
    shutil.rmtree(pki.directory / "tenants" / ACME)
    pki.add_tenant(ACME)  # a classic acme-corp, and upstream's root unbound, as the platform root
    (pki.directory / "root.pem").write_bytes(ROOT_PEM)
    with pytest.raises(IdentityRefused) as caught:
        await dial_agent(agent.address, tenant=ACME, trust=TrustStore(pki.directory))
    assert caught.value.reason is Reason.UNTRUSTED_CHAIN


async def test_dialer_with_the_root_bound_to_xyz_inc_proves_xyz_inc(upstream_agent):
    pki, agent = upstream_agent
    pki.add_tenant(ACME)
    bind(pki.directory, XYZ)
    trust = TrustStore(pki.directory)
    conn = await dial_agent(agent.address, tenant=XYZ, trust=trust)
    assert conn.context.tenant == XYZ
    await conn.close()
    with pytest.raises(IdentityRefused) as caught:
        await dial_agent(agent.address, tenant=ACME, trust=trust)
    assert caught.value.reason is Reason.TENANT_MISMATCH


async def test_unbinding_ends_a_live_connection(upstream_agent):
    pki, agent = upstream_agent
    home = bind(pki.directory, ACME)
    trust = TrustStore(pki.directory)
    conn = await dial_agent(agent.address, tenant=ACME, trust=trust)
    try:
        (home / "tenant.json").unlink()
        (home / "ca.pem").unlink()
        trust.reload()
        assert conn.refusal is not None and conn.refusal.reason is Reason.UNTRUSTED_CHAIN
    finally:
        await conn.close()


def test_the_re_dated_copy_the_suite_falls_back_to_is_the_same_form(certs):
    # agent_001() serves this once the stored certificate nears its notAfter.
    now = AGENT.not_valid_after_utc + timedelta(days=400)
    copy = re_sign(AGENT, not_before=now - timedelta(days=1))
    assert [e.value for e in copy.extensions] == [e.value for e in AGENT.extensions] and copy.subject == AGENT.subject
    ctx = verify_agent_chain([copy], tenant=ACME, trust=TrustStore(certs, require_client=False).snapshot, now=now)
    assert (ctx.tenant, ctx.spiffe_id) == (ACME, AGENT_SPIFFE)


# --- through TenantServerInterceptor: upstream's agent-001 as the caller ---------------


@pytest.fixture
async def tenant_service(tmp_path):
    """start(certs_dir) -> Service: the example service behind TenantServerInterceptor."""
    from test_server_interceptor import Service, example

    started: list[Service] = []
    pki = ForgePki.create(tmp_path / "certs", tenants=(XYZ,))

    async def start() -> Service:
        chain, key = pki.client_identity()
        server, port = await example.start_service(TrustStore(pki.directory, require_client=False), chain, key)
        started.append(Service(pki, port, server))
        return started[-1]

    yield pki, start
    for svc in started:
        await svc.close()
        await svc.server.stop(None)


def upstream_caller() -> SimpleNamespace:
    chain, key = agent_001()
    return SimpleNamespace(chain_pem=chain, key_pem=key)


async def test_server_interceptor_proves_upstreams_agent_for_the_bound_tenant(tenant_service):
    pki, start = tenant_service
    bind(pki.directory, ACME)
    svc = await start()
    assert await svc.call(upstream_caller(), "Whoami") == {
        "tenant": ACME,
        "component": "agent-001",
        "partition": "default",
        "type": "agent",
    }
    assert (await svc.call(upstream_caller(), "AcmeReport"))["tenant"] == ACME  # same_tenant("acme-corp") allows it


async def test_server_interceptor_with_the_root_bound_to_xyz_inc_never_says_acme_corp(tenant_service):
    from test_server_interceptor import reason_of, refused

    pki, start = tenant_service
    shutil.rmtree(pki.directory / "tenants" / XYZ)
    pki.add_tenant(ACME)
    bind(pki.directory, XYZ)
    svc = await start()
    assert (await svc.call(upstream_caller(), "Whoami"))["tenant"] == XYZ
    err = await refused(svc.call(upstream_caller(), "AcmeReport"))
    assert err.code() is grpc.StatusCode.PERMISSION_DENIED and await reason_of(err) == "policy_denied"


async def test_server_interceptor_refuses_upstreams_agent_when_the_root_is_not_bound(tenant_service):
    from test_server_interceptor import reason_of, refused

    pki, start = tenant_service
    (pki.directory / "root.pem").write_bytes(ROOT_PEM)  # trusted for the handshake, never as an anchor
    svc = await start()
    err = await refused(svc.call(upstream_caller(), "Whoami"))
    assert err.code() is grpc.StatusCode.UNAUTHENTICATED and await reason_of(err) == "untrusted_chain"


# --- pki tenant --deployment, pki issue, onboard ---------------------------------------


def test_pki_tenant_deployment_makes_a_bound_self_signed_ca(tmp_path):
    from poller.pki import create_tenant_ca, issue_component

    certs = tmp_path / "certs"
    code, out, err = run_cli("pki", "tenant", certs, ACME, "--deployment")
    assert code == 0, err
    home = certs / "tenants" / ACME
    assert json.loads((home / "tenant.json").read_text()) == {"cn_form": "deployment"} and "tenant.json" in out
    ca = x509.load_pem_x509_certificate((home / "ca.pem").read_bytes())
    assert ca.issuer == ca.subject and ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (home / "ca-key.pem").stat().st_mode & 0o777 == 0o600
    again = create_tenant_ca(certs, ACME, deployment=True)  # idempotent: kept
    assert not again.created and (home / "ca.pem").read_bytes() == ca.public_bytes(serialization.Encoding.PEM)

    issued = issue_component(certs, tenant=ACME, component_id="agent-001", partition_id="default")
    assert (issued.cn, issued.spiffe_id) == (AGENT_CN, AGENT_SPIFFE)
    leaf = x509.load_pem_x509_certificate(issued.chain_path.read_bytes())
    ctx = verify_agent_chain([leaf], tenant=ACME, trust=TrustStore(certs, require_client=False).snapshot)
    assert (ctx.tenant, ctx.cn, ctx.spiffe_id) == (ACME, AGENT_CN, AGENT_SPIFFE)


def test_pki_tenant_does_not_silently_switch_a_tenants_form(tmp_path):
    from poller.pki import AuthorityExists, create_tenant_ca, init_pki

    certs = tmp_path / "certs"
    init_pki(certs)
    create_tenant_ca(certs, XYZ)
    with pytest.raises(AuthorityExists, match="tenant intermediate"):
        create_tenant_ca(certs, XYZ, deployment=True)
    create_tenant_ca(certs, ACME, deployment=True)
    with pytest.raises(AuthorityExists, match="deployment CA"):
        create_tenant_ca(certs, ACME)
    code, _, err = run_cli("pki", "tenant", certs, ACME)
    assert code == 2 and "--force" in err
    create_tenant_ca(certs, ACME, force=True)  # a forced intermediate ends the binding
    assert not (certs / "tenants" / ACME / "tenant.json").exists()
    assert TrustStore(certs).tenant(ACME).cn_form is CnForm.TENANT


def test_onboard_and_onboard_verify_honour_the_binding(tmp_path):
    from poller.onboard import verify_package
    from poller.pki import create_tenant_ca

    pki = ForgePki.create(tmp_path / "certs", tenants=(XYZ,))
    create_tenant_ca(pki.directory, ACME, deployment=True)
    out = tmp_path / "agent-001.tar.gz"
    code, doc, err = run_cli_json(
        "onboard", "--certs", pki.directory, "--tenant", ACME, "--component", "agent-001", "--partition", "default",
        "--type", "agent", "--out", out,
    )  # fmt: skip
    assert code == 0, err
    assert (doc["tenant"], doc["spiffe_id"]) == (ACME, AGENT_SPIFFE)
    code, doc, err = run_cli_json("onboard", "verify", out, "--certs", pki.directory)
    assert code == 0, err
    assert (doc["tenant"], doc["component_id"], doc["partition_id"]) == (ACME, "agent-001", "default")
    verified = verify_package(out)  # without a certs directory: the package's own CA, bound by its identity.json
    assert verified.identity["cn"] == AGENT_CN and verified.identity["cn_form"] == "deployment"
    assert verified.config["security"]["server_name"] == AGENT_CN
    assert verified.context.tenant == ACME
    # The same package against a directory where that CA is not bound to acme-corp but to xyz-inc.
    other = ForgePki.create(tmp_path / "other", tenants=(ACME,))
    bind(other.directory, XYZ, ca_pem=(pki.directory / "tenants" / ACME / "ca.pem").read_bytes())
    code, doc, _ = run_cli_json("onboard", "verify", out, "--certs", other.directory)
    assert code == 3 and doc["reason"] == "tenant_mismatch"


@pytest.mark.parametrize("content", ['{"cn_form": "deployment", "extra": true}', '{"cn_form": "root"}'])
def test_the_cli_refuses_a_certs_dir_with_a_bad_tenant_json_with_exit_2(certs, content):
    (certs / "tenants" / ACME / "tenant.json").write_text(content)
    code, doc, _ = run_cli_json("probe", "127.0.0.1:1", "--certs", certs, "--tenant", ACME)
    assert (code, doc["reason"]) == (2, "usage") and "tenant.json" in doc["detail"]


def test_the_cli_refuses_one_ca_bound_to_two_tenants_with_exit_2_naming_both(certs):
    bind(certs, XYZ)
    code, doc, _ = run_cli_json("probe", "127.0.0.1:1", "--certs", certs, "--tenant", ACME)
    assert (code, doc["reason"]) == (2, "usage")
    assert "bound to two tenants" in doc["detail"] and ACME in doc["detail"] and XYZ in doc["detail"]


def run_cli(*args: object) -> tuple[int, str, str]:
    done = subprocess.run(cli_argv(*map(str, args)), capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout, done.stderr


def run_cli_json(*args: object) -> tuple[int, dict, str]:
    code, out, err = run_cli(*args)
    return code, json.loads(out.splitlines()[-1]) if out.strip() else {}, err


def test_pki_show_describes_a_deployment_form_certificate_without_a_tenant():
    from upstream_certs import FIXTURES

    from poller.pki import describe_certificate

    identity = describe_certificate(FIXTURES / "components" / "agent-001-default.pem")["identity"]
    assert identity == {
        "kind": "edge_deployment",
        "tenant": None,
        "component_id": "agent-001",
        "partition_id": "default",
        "spiffe_agrees": True,
    }


def test_the_certs_watcher_sees_tenant_json(certs):
    from poller.daemon.watch import watched_files
    from poller.trust import CertsLayout

    assert certs / "tenants" / ACME / "tenant.json" in set(watched_files(CertsLayout(certs)))


def test_from_pem_refuses_a_binding_for_a_tenant_without_a_ca():
    with pytest.raises(TrustStoreError, match="cn_form given for tenant 'xyz-inc'"):
        TrustStore.from_pem(tenants={ACME: ROOT_PEM}, cn_forms={ACME: "deployment", XYZ: "deployment"})


async def test_a_live_connection_is_re_proven_when_only_the_binding_changes(pki, trust, serve):
    # An intermediate named for acme-corp (no name constraint), bound as its deployment CA, issues a 3-label CN.
    ca = pki.agent(ACME, cn="tenant-acme-corp.ca.serviceradar", signed_by="root", is_ca=True, spiffe=None, dns=[])
    home = pki.directory / "tenants" / ACME
    (home / "ca.pem").write_bytes(ca.cert_pem)
    (home / "tenant.json").write_text('{"cn_form": "deployment"}')
    trust.reload()
    bare = pki.agent(ACME, signed_by=ca, cn="agent-001.partition-1.serviceradar", spiffe=None)
    agent = await serve(bare)
    conn = await dial_agent(agent.address, tenant=ACME, trust=trust)
    try:
        assert conn.context.cn_form is CnForm.DEPLOYMENT
        (home / "tenant.json").unlink()  # same CA, classic again: a 3-label CN proves nothing now
        trust.reload()  # tells the connection at once (a listener), no waiting needed
        assert conn.refusal is not None and conn.refusal.reason is Reason.INVALID_CN
    finally:
        await conn.close()


def test_the_root_may_also_sit_at_root_pem_when_it_is_bound(certs):
    # Upstream's directory with its root copied into tenants/acme-corp/ next to tenant.json.
    (certs / "root.pem").write_bytes(ROOT_PEM)
    trust = TrustStore(certs, require_client=False)
    assert prove(trust, ACME).tenant == ACME


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"cn_form": "tenant"}, "tenant_mismatch"),  # then its tenant_ca is not the classic name
        ({"cn_form": "tenant", "tenant_ca": "tenant-acme-corp.ca.serviceradar"}, "identity_mismatch"),
        ({"cn_form": "bogus"}, "bad_package"),
        ({"tenant_ca": "ServiceRadar Root CA"}, "tenant_mismatch"),
        ({"tenant": XYZ, "nats_subject_prefix": XYZ}, "tenant_mismatch"),
    ],
    ids=["form-dropped", "form-and-ca-name-dropped", "bad-form", "other-ca-name", "other-tenant"],
)
def test_a_deployment_package_with_edited_identity_is_refused(tmp_path, changes, reason):
    from test_onboard import with_identity

    from poller.onboard import create_package, verify_package_bytes
    from poller.pki import create_tenant_ca

    pki = ForgePki.create(tmp_path / "certs", tenants=(XYZ,))
    create_tenant_ca(pki.directory, ACME, deployment=True)
    made = create_package(pki.directory, tenant=ACME, component_id="agent-001", partition_id="default")
    trust = TrustStore(pki.directory).snapshot
    assert verify_package_bytes(made.data, trust=trust).context.cn_form is CnForm.DEPLOYMENT
    with pytest.raises(PollerError) as caught:
        verify_package_bytes(with_identity(made.data, **changes), trust=trust)
    assert caught.value.reason.value == reason, caught.value


# --- through the gateway: upstream's agent-001 pushing -----------------------------------


@pytest.mark.parametrize("bound_to", [ACME, XYZ])
async def test_gateway_files_upstreams_push_agent_only_under_the_bound_tenant(tmp_path, bound_to):
    from test_gateway import SERVER_NAME, started

    from poller.gateway import PushEntry
    from poller.testing.push_agent import PushAgent, refusal_of

    pki = ForgePki.create(tmp_path / "certs", tenants=(XYZ,) if bound_to == ACME else (ACME,))
    bind(pki.directory, bound_to)
    entries = [PushEntry("edge-acme", tenant=ACME, component="agent-001", partition="default")]
    async with started(pki, tmp_path, entries=entries) as gw:
        chain, key = agent_001()
        agent = PushAgent(
            gw.address, cert_chain_pem=chain, key_pem=key, ca_pem=pki.root_pem, server_name=SERVER_NAME, agent_id="agent-001"
        )
        gw.agents.append(agent)
        if bound_to == ACME:
            assert (await agent.hello()).accepted
            assert (await agent.push([agent.status("ssh", message=b'{"open":true}')])).received
            [row] = gw.rows(ACME)
            assert (row["identity"]["tenant"], row["identity"]["component_id"], row["partition"]) == (
                ACME,
                "agent-001",
                "default",
            )
        else:  # proven as xyz-inc's agent-001, which is not listed: never filed under acme-corp
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await agent.hello()
            assert refusal_of(caught.value) == (grpc.StatusCode.PERMISSION_DENIED, "unknown_agent")
        assert gw.rows(ACME if bound_to == XYZ else XYZ) == []
