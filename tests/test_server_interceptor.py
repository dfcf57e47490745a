"""The server-side tenant interceptor, through the example service in examples/:
real mTLS on loopback, real grpc.aio server, callers with real certificates
(honest, impostor, revoked, admin) minted by ForgePki.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from poller.dial.interceptor import TENANT_METADATA_KEY
from poller.identity.names import format_spiffe_id
from poller.identity.reasons import IdentityRefused, Reason
from poller.server import REASON_METADATA_KEY, TenantServerInterceptor, server_credentials
from poller.testing import ForgedCert, ForgePki
from poller.trust import TrustStore

ACME, XYZ = "acme-corp", "xyz-inc"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tenant_service.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("tenant_service_example", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = _load_example()


def method(name: str) -> str:
    return f"/{example.SERVICE}/{name}"


class Service:
    def __init__(self, pki: ForgePki, port: int, server: grpc.aio.Server) -> None:
        self.pki, self.port, self.server = pki, port, server
        self._channels: list[grpc.aio.Channel] = []

    def channel(self, who: ForgedCert) -> grpc.aio.Channel:
        creds = grpc.ssl_channel_credentials(
            root_certificates=self.pki.root_pem, private_key=who.key_pem, certificate_chain=who.chain_pem
        )
        channel = grpc.aio.secure_channel(
            f"127.0.0.1:{self.port}", creds, options=[("grpc.ssl_target_name_override", "poller-1.serviceradar")]
        )
        self._channels.append(channel)
        return channel

    async def call(self, who: ForgedCert, name: str, *, metadata=None) -> dict:
        answer = await self.channel(who).unary_unary(method(name))(example.encode({}), metadata=metadata, timeout=10)
        return example.decode(answer)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()


@pytest.fixture
async def trust_store(pki: ForgePki) -> TrustStore:
    return TrustStore(pki.directory, require_client=False)


@pytest.fixture
async def service(pki: ForgePki, trust_store: TrustStore) -> AsyncIterator[Service]:
    chain, key = pki.client_identity()
    server, port = await example.start_service(trust_store, chain, key)
    svc = Service(pki, port, server)
    yield svc
    await svc.close()
    await server.stop(None)


def admin_cert(pki: ForgePki, name: str = "ops-admin") -> ForgedCert:
    cn = f"{name}.platform.serviceradar"
    return pki.agent(ACME, signed_by="platform", cn=cn, spiffe=None, dns=[cn])


def gateway_cert(pki: ForgePki, tenant: str) -> ForgedCert:
    return pki.agent(tenant, "gw-1", "site-b", spiffe=format_spiffe_id("gateway", tenant, "site-b", "gw-1"))


async def refused(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def reason_of(err: grpc.aio.AioRpcError) -> str | None:
    for key, value in err.trailing_metadata() or ():
        if key == REASON_METADATA_KEY:
            return value
    return None


async def test_each_tenant_is_proven_and_bound_for_the_handler(pki, service, log_events):
    acme, xyz = pki.agent(ACME, "agent-001"), pki.agent(XYZ, "agent-007", "site-b")
    answers = await asyncio.gather(*(service.call(who, "Whoami") for who in (acme, xyz) * 10))
    logs = log_events()
    # Concurrent calls of two tenants each see their own identity (also in a task the handler started).
    assert [a["tenant"] for a in answers] == [ACME, XYZ] * 10
    assert answers[0] == {"tenant": ACME, "component": "agent-001", "partition": "partition-1", "type": "agent"}
    accepted = [e for e in logs if e["event"] == "server_call_accepted"]
    assert len(accepted) == 20 and all(e["audit"] is True and e["serial"] and e["fingerprint"] for e in accepted)


async def test_the_four_call_shapes(pki, service, log_events):
    acme = pki.agent(ACME, "agent-001")
    channel = service.channel(acme)
    streamed = [example.decode(m) async for m in channel.unary_stream(method("Watch"))(example.encode({}))]
    assert [(m["tenant"], m["i"]) for m in streamed] == [(ACME, 0), (ACME, 1), (ACME, 2)]

    async def requests():
        for text in ("a", "b"):
            yield example.encode({"text": text})

    uploaded = example.decode(await channel.stream_unary(method("Upload"))(requests()))
    assert (uploaded["tenant"], uploaded["received"]) == (ACME, 2)
    chatted = [example.decode(m) async for m in channel.stream_stream(method("Chat"))(requests())]
    assert [(m["tenant"], m["echo"]) for m in chatted] == [(ACME, "a"), (ACME, "b")]

    # The refusal comes before the handler reads a request. A client still
    # writing when the call ends may see its own write fail (grpcio reports
    # INTERNAL "Failed execute_batch"), so the refused client-streaming calls
    # here half-close at once; what the server decided is in its audit log.
    async def nothing():
        return
        yield  # an async generator that yields nothing

    impostor = service.channel(impostor_cert(pki))
    for call in (
        impostor.unary_stream(method("Watch"))(example.encode({})),
        impostor.stream_unary(method("Upload"))(nothing()),
        impostor.stream_stream(method("Chat"))(nothing()),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            if hasattr(call, "__aiter__"):
                async for _ in call:
                    pass
            else:
                await call
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, (info.value.code(), info.value.details())
    refusals = [e for e in log_events() if e["event"] == "server_call_refused"]
    assert sorted(e["method"] for e in refusals) == sorted(method(m) for m in ("Watch", "Upload", "Chat"))
    assert all(e["reason"] == "tenant_mismatch" for e in refusals)


def impostor_cert(pki: ForgePki) -> ForgedCert:
    """xyz-inc's CA minting "agent-001.partition-1.acme-corp.serviceradar".

    Without a DNS SAN the tenant CA's name constraints (a DNS subtree) do not
    stop it in TLS, and tenant CAs made by generate-certs.sh have none at all:
    the interceptor is what refuses it.
    """
    return pki.agent(ACME, "agent-001", issuer_tenant=XYZ, dns=[])


async def test_impostor_minted_by_another_tenants_ca_is_unauthenticated(pki, service, log_events):
    impostor = impostor_cert(pki)
    err = await refused(service.channel(impostor).unary_unary(method("Whoami"))(example.encode({})))
    logs = log_events()
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.details().startswith("tenant_mismatch")
    assert await reason_of(err) == "tenant_mismatch"
    audit = next(e for e in logs if e["event"] == "server_call_refused")
    assert audit["reason"] == "tenant_mismatch" and audit["serial"] == impostor.serial_hex and audit["audit"] is True
    assert "xyz-inc" not in err.details()  # the caller learns the reason, not our CA names
    # With a DNS SAN, the name-constrained CA's certificate does not even pass TLS.
    with_san = pki.agent(ACME, "agent-001", issuer_tenant=XYZ)
    err = await refused(service.channel(with_san).unary_unary(method("Whoami"))(example.encode({})))
    assert err.code() == grpc.StatusCode.UNAVAILABLE


async def test_revoked_certificate_is_unauthenticated_after_the_crl_is_loaded(pki, service, trust_store):
    acme = pki.agent(ACME, "agent-003")
    assert (await service.call(acme, "Whoami"))["component"] == "agent-003"
    pki.revoke(ACME, acme)
    trust_store.reload()  # the CRL applies to the next call, no restart
    err = await refused(service.channel(acme).unary_unary(method("Whoami"))(example.encode({})))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and await reason_of(err) == "revoked"


async def test_a_client_only_certificate_is_a_client_identity(pki, service):
    """A caller is a TLS client: clientAuth is the usage that matters here
    (an agent the poller dials must allow serverAuth instead)."""
    from cryptography.x509.oid import ExtendedKeyUsageOID

    client_only = pki.agent(ACME, "agent-009", eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    assert (await service.call(client_only, "Whoami"))["component"] == "agent-009"


async def test_method_policies_permission_denied(pki, service):
    acme_agent, xyz_gateway, acme_gateway = pki.agent(ACME), gateway_cert(pki, XYZ), gateway_cert(pki, ACME)
    assert (await service.call(xyz_gateway, "Register"))["type"] == "gateway"
    err = await refused(service.channel(acme_agent).unary_unary(method("Register"))(example.encode({})))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and await reason_of(err) == "policy_denied"
    assert (await service.call(acme_gateway, "AcmeReport"))["tenant"] == ACME
    err = await refused(service.channel(xyz_gateway).unary_unary(method("AcmeReport"))(example.encode({})))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    err = await refused(service.channel(acme_agent).unary_unary(method("Stats"))(example.encode({})))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and err.details().startswith("policy_denied")


async def test_platform_admin_is_allowed_across_tenants_only_where_a_policy_says_so_and_audited(pki, service, log_events):
    admin = admin_cert(pki)
    stats = await service.call(admin, "Stats")
    report = await service.call(admin, "AcmeReport", metadata=((TENANT_METADATA_KEY, ACME),))
    logs = log_events()
    assert stats["admin"] == "ops-admin.platform.serviceradar"
    assert report == {"admin": "ops-admin.platform.serviceradar", "tenant": ACME}
    audits = [e for e in logs if e["event"] == "server_call_accepted"]
    assert [(e["admin"], e["tenant"], e["cross_tenant"]) for e in audits] == [
        ("ops-admin.platform.serviceradar", None, True),
        ("ops-admin.platform.serviceradar", ACME, True),
    ]
    # Methods without platform_admin() in their policy refuse an admin.
    err = await refused(service.channel(admin).unary_unary(method("Whoami"))(example.encode({})))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_platform_names_only_from_the_platform_ca(pki, service):
    # A tenant CA minting a platform name (a URI SAN and no DNS SAN, so the CA's
    # DNS name constraints do not stop it in TLS): not an identity at all.
    fake_admin = pki.agent(ACME, cn="ops-admin.platform.serviceradar", dns=[])
    err = await refused(service.channel(fake_admin).unary_unary(method("Stats"))(example.encode({})))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and await reason_of(err) == "invalid_cn"
    # The platform CA issuing an edge name is not an admin either.
    edge_by_platform = pki.agent(ACME, signed_by="platform")
    err = await refused(service.channel(edge_by_platform).unary_unary(method("Stats"))(example.encode({})))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and await reason_of(err) == "invalid_cn"


async def test_no_client_certificate_is_unauthenticated(trust_store):
    """A server mis-set without TLS: the interceptor still refuses, with a reason."""
    server = grpc.aio.server(interceptors=[TenantServerInterceptor(trust_store)])
    server.add_generic_rpc_handlers((example.handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            err = await refused(channel.unary_unary(method("Whoami"))(example.encode({})))
    finally:
        await server.stop(None)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and await reason_of(err) == "bad_certificate"


async def test_example_runs_as_a_program(pki):
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        "--certs",
        str(pki.directory),
        "--listen",
        "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(30):
            line = (await proc.stdout.readline()).decode()
        assert "listening on port" in line
        port = int(line.rsplit(" ", 1)[1])
        svc = Service(pki, port, None)  # type: ignore[arg-type]
        try:
            assert (await svc.call(pki.agent(XYZ, "agent-007", "site-b"), "Whoami"))["tenant"] == XYZ
        finally:
            await svc.close()
    finally:
        proc.terminate()
        await proc.wait()


async def test_generate_certs_style_directory_impostor_with_dns_san_is_caught_by_the_interceptor(tmp_path):
    """Tenant CAs made by generate-certs.sh have no name constraints, so TLS
    accepts an impostor whose DNS SAN names acme-corp; the interceptor refuses it."""
    from poller.pki.authority import load_tenant_authority
    from poller.pki.build import CLIENT_AUTH, SERVER_AUTH, build_certificate, chain_pem, key_pem, new_key
    from poller.testing import serviceradar_style_dir

    certs = serviceradar_style_dir(tmp_path / "sr", tenants=(ACME, XYZ))
    layout = certs.layout
    trust = TrustStore(layout.root, require_client=False)
    server, port = await example.start_service(
        trust, layout.service_cert("poller").read_bytes(), layout.service_key("poller").read_bytes()
    )
    xyz = load_tenant_authority(layout, XYZ)
    cn = "agent-001.default.acme-corp.serviceradar"
    key = new_key("rsa", 2048)
    forged = build_certificate(
        subject_key=key, subject_cn=cn, issuer_cert=xyz.cert, issuer_key=xyz.key, dns=[cn], eku=[SERVER_AUTH, CLIENT_AUTH]
    )
    root_pem = layout.root_ca.read_bytes()

    async def whoami(chain: bytes, key_bytes: bytes) -> bytes:
        creds = grpc.ssl_channel_credentials(root_certificates=root_pem, private_key=key_bytes, certificate_chain=chain)
        options = [("grpc.ssl_target_name_override", "poller.serviceradar")]
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds, options=options) as channel:
            return await channel.unary_unary(method("Whoami"))(example.encode({}), timeout=10)

    try:
        honest = layout.component_files(ACME, "agent-001", "default")
        answer = example.decode(await whoami(honest.chain.read_bytes(), honest.key.read_bytes()))
        assert (answer["tenant"], answer["component"]) == (ACME, "agent-001")
        err = await refused(whoami(chain_pem([forged, xyz.cert]), key_pem(key)))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED and await reason_of(err) == "tenant_mismatch"
    finally:
        await server.stop(None)


async def test_trust_from_pem_data_with_an_explicit_platform_ca(pki):
    """A control plane keeping its CAs in a database: no certs directory at all."""
    from poller.trust.platform import PlatformAuthority

    trust = TrustStore.from_pem(tenants={ACME: pki.tenant_ca_pem(ACME), XYZ: pki.tenant_ca_pem(XYZ)}, root=pki.root_pem)
    platform = PlatformAuthority.from_certificate(pki.platform.cert)
    server = grpc.aio.server(interceptors=[TenantServerInterceptor(trust, policies=example.POLICIES, platform=platform)])
    server.add_generic_rpc_handlers((example.handlers(),))
    chain, key = pki.client_identity()
    port = server.add_secure_port("127.0.0.1:0", server_credentials(trust, chain, key, platform=platform))
    await server.start()
    svc = Service(pki, port, server)
    try:
        assert (await svc.call(pki.agent(XYZ, "agent-007", "site-b"), "Whoami"))["tenant"] == XYZ
        assert (await svc.call(admin_cert(pki), "Stats"))["admin"] == "ops-admin.platform.serviceradar"
        err = await refused(svc.channel(impostor_cert(pki)).unary_unary(method("Whoami"))(example.encode({})))
        assert await reason_of(err) == "tenant_mismatch"
    finally:
        await svc.close()
        await server.stop(None)


def test_proof_cache_holds_only_while_trust_time_and_crl_allow(pki, trust_store):
    """The calls of one connection reuse a proof, never past a trust reload,
    the certificate's notAfter or its CRL's nextUpdate."""
    from poller.server.interceptor import ProofCache

    agent = pki.agent(ACME, "agent-001", days=1)
    auth = {"x509_pem_cert": [agent.leaf_pem], "x509_pem_cert_chain": [pki.tenant_ca_pem(ACME)]}
    clock = [datetime.now(UTC).timestamp()]
    cache = ProofCache(clock=lambda: clock[0])
    snapshot = trust_store.snapshot
    assert cache.prove(auth, snapshot, None).component_id == "agent-001"
    assert cache.prove(auth, snapshot, None).tenant == ACME
    assert cache.proofs == 1  # the second call came from memory
    clock[0] = agent.cert.not_valid_after_utc.timestamp() + 1  # past notAfter: proven again
    cache.prove(auth, snapshot, None)
    assert cache.proofs == 2
    pki.revoke(ACME, agent)
    trust_store.reload()  # a new snapshot: the cached proof no longer counts
    with pytest.raises(IdentityRefused) as first:
        cache.prove(auth, trust_store.snapshot, None)
    with pytest.raises(IdentityRefused) as second:
        cache.prove(auth, trust_store.snapshot, None)
    assert first.value.reason is second.value.reason is Reason.REVOKED
    assert first.value is not second.value and cache.proofs == 3


def test_proof_cache_holds_a_proof_only_until_its_tenant_cas_not_after(pki):
    """A leaf that outlives its tenant CA: the proof of its connection is not
    reused past the CA's notAfter (the calls are proven afresh, and refused)."""
    from short_ca import tenant_ca_until

    from poller.server.interceptor import ProofCache

    ca_end = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    tenant_ca_until(pki, "short-co", ca_end)
    agent = pki.agent("short-co", "agent-001")  # a year
    auth = {"x509_pem_cert": [agent.leaf_pem], "x509_pem_cert_chain": [pki.tenant_ca_pem("short-co")]}
    clock = [ca_end.timestamp() - 1]
    cache = ProofCache(clock=lambda: clock[0])
    snapshot = TrustStore(pki.directory, require_client=False).snapshot
    cache.prove(auth, snapshot, None)
    cache.prove(auth, snapshot, None)
    assert cache.proofs == 1  # from memory while the CA is valid
    clock[0] = ca_end.timestamp() + 1  # past the CA's notAfter, the leaf's far ahead: proven again
    cache.prove(auth, snapshot, None)
    assert cache.proofs == 2


# -- issuer_tenant: whose CA signed a refused certificate, never whose agent it is --------------


class _Context:
    """What decide() reads of a grpc ServicerContext, for chains TLS would stop first."""

    def __init__(self, leaf_pem: bytes, chain_pem: bytes = b"") -> None:
        self._auth = {"x509_pem_cert": [leaf_pem], **({"x509_pem_cert_chain": [chain_pem]} if chain_pem else {})}

    def peer(self) -> str:
        return "ipv4:127.0.0.1:40000"

    def auth_context(self) -> dict:
        return self._auth

    def invocation_metadata(self) -> tuple:
        return ()


def _server_calls(metrics, tenant: str, outcome: str) -> float:
    return metrics.registry.get_sample_value("poller_server_calls_total", {"tenant": tenant, "outcome": outcome}) or 0.0


# (id, kwargs for pki.agent, reason, issuer_tenant): each over real mTLS (a tenant CA's
# certificate without a DNS SAN passes the handshake; the interceptor refuses it).
ISSUED_REFUSALS = [
    ("cn-not-an-identity", dict(tenant=ACME, cn="agent-001.acme-corp.serviceradar", dns=[]), "invalid_cn", ACME),
    ("cn-names-a-platform-service", dict(tenant=ACME, cn="ops-admin.platform.serviceradar", dns=[]), "invalid_cn", ACME),
    ("cn-names-another-tenant", dict(tenant=XYZ, issuer_tenant=ACME, dns=[]), "tenant_mismatch", ACME),
    ("minted-by-another-tenants-ca", dict(tenant=ACME, issuer_tenant=XYZ, dns=[]), "tenant_mismatch", XYZ),
    (
        "spiffe-disagrees-with-cn",
        dict(tenant=ACME, spiffe=format_spiffe_id("agent", ACME, "partition-1", "agent-999"), dns=[]),
        "identity_mismatch",
        ACME,
    ),
]


@pytest.mark.parametrize(("forge", "reason", "issuer"), [c[1:] for c in ISSUED_REFUSALS], ids=[c[0] for c in ISSUED_REFUSALS])
async def test_a_refusal_of_a_certificate_a_tenant_ca_signed_names_that_ca_as_issuer_tenant_only(
    pki, trust_store, log_events, forge, reason, issuer
):
    """The CA that signed it is a fact the audit line can state (issuer_tenant); the
    names in it prove nothing, so there is no tenant, component or partition, and the
    call counts under tenant="" as before (the label is the proven or vouched tenant)."""
    from poller.metrics import PollerMetrics

    metrics = PollerMetrics()
    seen: list[IdentityRefused] = []
    interceptor = TenantServerInterceptor(
        trust_store, policies=example.POLICIES, metrics=metrics, on_refused=lambda m, p, r: seen.append(r)
    )
    server = grpc.aio.server(interceptors=[interceptor])
    server.add_generic_rpc_handlers((example.handlers(),))
    chain, key = pki.client_identity()
    port = server.add_secure_port("127.0.0.1:0", server_credentials(trust_store, chain, key))
    await server.start()
    svc = Service(pki, port, server)
    cert = pki.agent(**forge)
    try:
        err = await refused(svc.channel(cert).unary_unary(method("Whoami"))(example.encode({}), timeout=10))
    finally:
        await svc.close()
        await server.stop(None)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and await reason_of(err) == reason
    assert issuer not in err.details()  # the caller learns the reason, not our CA names
    [line] = [e for e in log_events() if e["event"] == "server_call_refused"]
    assert (line["reason"], line["issuer_tenant"], line["serial"]) == (reason, issuer, cert.serial_hex)
    assert not {"tenant", "component", "partition"} & line.keys()
    [refusal] = seen
    assert (refusal.issuer_tenant, refusal.vouched) == (issuer, None)
    assert _server_calls(metrics, "", reason) == 1 and _server_calls(metrics, issuer, reason) == 0


def test_an_untrusted_chain_from_a_tenant_cas_key_has_its_issuer_tenant_and_a_forged_issuer_none(
    pki, trust_store, log_events, tmp_path
):
    """untrusted_chain where the issuing CA was found by key (its signature verified,
    path validation failed: a DNS SAN outside its name constraints, which TLS would
    stop first) names it; a leaf that only names that CA as its issuer (a rogue CA of
    the same name signed it, the real CA presented after it so that its key is found)
    gets no issuer_tenant, nor does one the root signed."""
    from poller.metrics import PollerMetrics

    metrics = PollerMetrics()
    interceptor = TenantServerInterceptor(trust_store, policies=example.POLICIES, metrics=metrics)
    outside = pki.agent(ACME, dns=["agent-001.partition-1.acme-corp.serviceradar", "agent-001.partition-1.xyz-inc.serviceradar"])
    rogue = ForgePki.create(tmp_path / "rogue", tenants=(ACME,))  # the same CA names, other keys
    forged = rogue.agent(ACME, dns=[])
    assert forged.cert.issuer == pki.tenant_ca(ACME).subject
    by_root = pki.agent(ACME, signed_by="root", dns=[])
    cases = [
        (outside.leaf_pem, pki.tenant_ca_pem(ACME), ACME),
        (forged.leaf_pem, pki.tenant_ca_pem(ACME), None),
        (forged.leaf_pem, b"", None),
        (by_root.leaf_pem, b"", None),
    ]
    for leaf_pem, chain_pem, issuer in cases:
        with pytest.raises(IdentityRefused) as caught:
            interceptor.decide(_Context(leaf_pem, chain_pem), method("Whoami"))
        assert (caught.value.reason, caught.value.issuer_tenant) == (Reason.UNTRUSTED_CHAIN, issuer)
    lines = [e for e in log_events() if e["event"] == "server_call_refused"]
    assert [line.get("issuer_tenant") for line in lines] == [ACME, None, None, None]
    # A signed leaf with agreeing names is vouched for: its tenant is the CA's, as before.
    assert (lines[0]["tenant"], lines[0]["component"]) == (ACME, "agent-001")
    assert all("tenant" not in line and "issuer_tenant" not in line for line in lines[1:])
    assert _server_calls(metrics, ACME, "untrusted_chain") == 1 and _server_calls(metrics, "", "untrusted_chain") == 3


def test_the_proof_cache_keeps_a_refusals_issuer_tenant(pki, trust_store):
    from poller.server.interceptor import ProofCache

    impostor = impostor_cert(pki)
    auth = {"x509_pem_cert": [impostor.leaf_pem], "x509_pem_cert_chain": [pki.tenant_ca_pem(XYZ)]}
    cache = ProofCache()
    for _ in range(2):  # proven, then from memory
        with pytest.raises(IdentityRefused) as caught:
            cache.prove(auth, trust_store.snapshot, None)
        assert (caught.value.reason, caught.value.issuer_tenant, caught.value.vouched) == (Reason.TENANT_MISMATCH, XYZ, None)
    assert cache.proofs == 1
