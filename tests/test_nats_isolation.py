"""Tenant isolation on a real nats-server with the `nats-config` layout.

The poller publishes real agents' results; acme-corp's land only on
acme-corp.* and xyz-inc's only on xyz-inc.*; the server itself refuses a
tenant's credentials anything outside its prefix, and any publish of a result.
Every case runs three times: over plaintext (the --plaintext-dev layout), over
TLS with client certificates and NKey users (the default layout), and over TLS
in operator mode (--operator: account and user JWTs, standard .creds files).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import DeliverPolicy

from poller.config import parse_config
from poller.daemon.scheduler import Scheduler
from poller.nats.accounts import client_target, creds_path, plan_layout, write_layout
from poller.nats.connect import connect
from poller.nats.keys import new_seed
from poller.nats.operator import write_operator_layout
from poller.nats.sink import JetStreamSettings, JetStreamSink
from poller.testing.nats_server import NatsServer
from poller.trust.store import TrustStore

ACME, XYZ = "acme-corp", "xyz-inc"


class Refusals:
    """Collects the server's asynchronous -ERR lines (permissions violations) for one connection."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.changed = asyncio.Event()

    async def on_error(self, err: Exception) -> None:
        self.errors.append(str(err))
        self.changed.set()

    async def wait_for(self, fragment: str, timeout: float = 10.0) -> str:
        async with asyncio.timeout(timeout):
            while True:
                for text in self.errors:
                    if fragment in text:
                        return text
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture(params=["plaintext", "tls", "operator"])
def nats_layout(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """OUTDIR of `nats-config` for tenants acme-corp and xyz-inc: plaintext, TLS from the test PKI
    with NKey users, or TLS in operator mode (account and user JWTs, standard .creds files)."""
    from poller.nats.tlsfiles import issue_tls

    out = tmp_path / "nats"
    tls = None
    if request.param in ("tls", "operator"):
        pki = request.getfixturevalue("pki")
        users = ["poller", f"tenant-{ACME}", f"tenant-{XYZ}"]
        tls = issue_tls(pki.directory, out, servers={"nats-1": ["127.0.0.1"]}, users=users)
    layout = plan_layout([ACME, XYZ], listen=("127.0.0.1", 0), store_dir=tmp_path / "js", tls=tls)
    if request.param == "operator":
        write_operator_layout(out, layout)
    else:
        write_layout(out, layout)
    return out


def tls_args(layout: Path, tenant: str | None) -> list[str]:
    """tail's --tls-* arguments for a user of the layout (none for a plaintext one)."""
    tls = client_target(layout, tenant, "tls://127.0.0.1:1").tls if (layout / "tls").is_dir() else None
    if tls is None:
        return []
    return ["--tls-ca", str(tls.ca_file), "--tls-cert", str(tls.cert_file), "--tls-key", str(tls.key_file)]


async def connect_as(server: NatsServer, layout: Path, tenant: str | None, refusals: Refusals | None = None) -> Any:
    return await connect(
        client_target(layout, tenant, server.url),
        name="isolation test",
        on_error=(refusals or Refusals()).on_error,
        allow_reconnect=False,
    )


async def read_stream(nc: Any, tenant: str, expected: int) -> list[Any]:
    js = nc.jetstream()
    info = await js.stream_info(f"tenant-{tenant}")
    assert info.state.messages == expected, f"tenant-{tenant} holds {info.state.messages}, expected {expected}"
    sub = await js.subscribe(f"{tenant}.>", stream=f"tenant-{tenant}", ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    return [await sub.next_msg(timeout=10) for _ in range(expected)]


async def test_results_of_each_tenant_land_only_under_its_prefix(pki, serve, accounts_nats, nats_layout, tmp_path) -> None:
    acme = await serve(pki.agent(ACME, "agent-001"))
    xyz = await serve(pki.agent(XYZ, "agent-007", "site-b"))
    impostor = await serve(pki.agent(ACME, "agent-666", issuer_tenant=XYZ, dns=[]))  # xyz-inc's CA, says acme-corp
    checks = [{"service_type": "icmp", "service_name": "ping", "details": "127.0.0.1"}]
    settings = parse_config(
        {
            "poller_id": "poller-test",
            "certs_dir": str(pki.directory),
            "agents": {
                "acme-1": {"address": acme.address, "tenant": ACME, "checks": checks},
                "xyz-1": {"address": xyz.address, "tenant": XYZ, "checks": checks},
                "impostor": {"address": impostor.address, "tenant": ACME, "checks": checks},
            },
        }
    )
    poller = client_target(nats_layout, None, accounts_nats.url)
    sink = JetStreamSink(
        JetStreamSettings(
            url=accounts_nats.url,
            creds=poller.creds,
            tls=poller.tls,
            outbox=tmp_path / "outbox.db",
            heartbeat_interval=None,
            poller_id="poller-test",
        )
    )
    scheduler = Scheduler(settings, TrustStore(pki.directory), sink.publish)
    scheduler.start(loops=False)
    try:
        results = await scheduler.run_once()
        assert await sink.wait_drained(30), "the outbox did not drain"
    finally:
        await scheduler.stop(grace=1)
        await sink.close()
    assert len(results) == 3

    for tenant, agents in ((ACME, {"acme-1", "impostor"}), (XYZ, {"xyz-1"})):
        nc = await connect_as(accounts_nats, nats_layout, tenant)
        try:
            # one status result per agent, and one health event (accepted / refused) per agent
            msgs = await read_stream(nc, tenant, 2 * len(agents))
        finally:
            await nc.close()
        assert all(m.subject.startswith(tenant + ".") for m in msgs)
        docs = [json.loads(m.data) for m in msgs]
        assert {d["tenant"] for d in docs} == {tenant}
        status = {d["agent"]: (m.subject, d) for m, d in zip(msgs, docs, strict=True) if d["kind"] == "status"}
        assert set(status) == agents
        for subject, _doc in status.values():
            assert subject == f"{tenant}.agents.status"
        events = {d["agent"]: d for d in docs if d["kind"] == "health"}
        assert {a: e["event"] for a, e in events.items()} == {a: ("refused" if a == "impostor" else "accepted") for a in agents}
        if tenant == ACME:
            assert status["impostor"][1]["reason"] == "tenant_mismatch" and not status["impostor"][1]["proven"]
            assert events["impostor"]["reason"] == "tenant_mismatch"
            assert status["acme-1"][1]["identity"]["tenant"] == ACME
        # every message carries a distinct deterministic Msg-Id
        ids = [m.headers["Nats-Msg-Id"] for m in msgs]
        assert len(set(ids)) == len(ids) and all(i.startswith("poller-test/") for i in ids)
    # the payload is exactly the file sink's line
    by_agent = {r.agent: r for r in results}
    nc = await connect_as(accounts_nats, nats_layout, XYZ)
    try:
        (first,) = [m for m in await read_stream(nc, XYZ, 2) if m.subject.endswith("agents.status")]
    finally:
        await nc.close()
    assert json.loads(first.data) == by_agent["xyz-1"].to_json()


@pytest.fixture
async def poller_published(accounts_nats: NatsServer, nats_layout: Path, tmp_path: Path) -> NatsServer:
    """Both tenants' streams exist and hold one result each (published by the poller's sink)."""
    from poller.delivery.result import PollResult

    poller = client_target(nats_layout, None, accounts_nats.url)
    sink = JetStreamSink(
        JetStreamSettings(url=accounts_nats.url, creds=poller.creds, tls=poller.tls, outbox=None, heartbeat_interval=None)
    )
    try:
        for tenant in (ACME, XYZ):
            await sink.publish(
                PollResult(
                    tenant=tenant,
                    agent="a",
                    address="h:1",
                    poller_id="p",
                    partition="d",
                    kind="status",
                    service_name="ping",
                    service_type="icmp",
                    available=True,
                )
            )
    finally:
        await sink.close()
    return accounts_nats


@pytest.mark.parametrize("subject", ["xyz-inc.>", ">", "xyz-inc.agents.status", "*.agents.status"])
async def test_a_tenant_cannot_subscribe_outside_its_prefix(poller_published, nats_layout, subject) -> None:
    refusals = Refusals()
    nc = await connect_as(poller_published, nats_layout, ACME, refusals)
    try:
        await nc.subscribe(subject)
        await nc.flush()
        text = await refusals.wait_for("permissions violation for subscription")
        assert subject in text
    finally:
        await nc.close()


async def test_a_tenant_cannot_consume_another_tenants_stream(poller_published, nats_layout) -> None:
    refusals = Refusals()
    nc = await connect_as(poller_published, nats_layout, ACME, refusals)
    try:
        js = nc.jetstream(timeout=1)
        with pytest.raises(nats.errors.TimeoutError):  # the request never reaches JetStream
            await js.subscribe("xyz-inc.>", stream="tenant-xyz-inc", ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
        await refusals.wait_for('permissions violation for publish to "$js.api.consumer.create.tenant-xyz-inc')
        with pytest.raises(nats.errors.TimeoutError):
            await js.stream_info("tenant-xyz-inc")
    finally:
        await nc.close()


async def test_a_tenant_cannot_publish_results_or_change_its_stream(poller_published, nats_layout) -> None:
    refusals = Refusals()
    nc = await connect_as(poller_published, nats_layout, ACME, refusals)
    try:
        await nc.publish("acme-corp.agents.status", b'{"forged": true}')
        await refusals.wait_for('permissions violation for publish to "acme-corp.agents.status"')
        js = nc.jetstream(timeout=1)
        for attempt in (js.delete_stream("tenant-acme-corp"), js.purge_stream("tenant-acme-corp")):
            with pytest.raises(nats.errors.TimeoutError):
                await attempt
        info = await js.stream_info("tenant-acme-corp")  # reading its own stream is allowed
        assert info.state.messages == 1  # the forged message was not stored, nothing was purged
    finally:
        await nc.close()


def tail(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "poller", "tail", *args], capture_output=True, text=True, timeout=60, check=False
    )


async def test_tail_reads_its_tenant_and_is_refused_elsewhere(poller_published, nats_layout) -> None:
    url, acme = poller_published.url, str(creds_path(nats_layout, ACME))
    as_acme = tls_args(nats_layout, ACME)
    ok = await asyncio.to_thread(
        tail, "--nats", url, "--creds", acme, *as_acme, "--tenant", ACME, "--from-start", "--count", "1", "--timeout", "20"
    )
    assert ok.returncode == 0, ok.stderr
    (line,) = ok.stdout.splitlines()
    doc = json.loads(line)
    assert doc["subject"] == "acme-corp.agents.status" and doc["payload"]["tenant"] == ACME
    assert doc["msg_id"].startswith("p/a/status/icmp/ping/")

    refused = await asyncio.to_thread(
        tail, "--nats", url, "--creds", acme, *as_acme, "--tenant", XYZ, "--from-start", "--timeout", "20"
    )
    assert refused.returncode == 3, refused.stderr
    assert refused.stdout == ""

    poller_creds = str(creds_path(nats_layout, None))
    as_poller = await asyncio.to_thread(
        tail, "--nats", url, "--creds", poller_creds, *tls_args(nats_layout, None), "--tenant", ACME, "--timeout", "20"
    )
    assert as_poller.returncode == 3, as_poller.stderr


async def test_tail_times_out_with_zero_and_reports_an_unreachable_server(poller_published, nats_layout, unused_tcp_port) -> None:
    acme, as_acme = str(creds_path(nats_layout, ACME)), tls_args(nats_layout, ACME)
    quiet = await asyncio.to_thread(
        tail, "--nats", poller_published.url, "--creds", acme, *as_acme, "--tenant", ACME, "--timeout", "1"
    )
    assert quiet.returncode == 0 and quiet.stdout == "", quiet.stderr
    scheme = poller_published.url.split(":")[0]
    down = await asyncio.to_thread(
        tail, "--nats", f"{scheme}://127.0.0.1:{unused_tcp_port}", "--creds", acme, *as_acme, "--tenant", ACME, "--timeout", "5"
    )
    assert down.returncode == 4, down.stderr


async def test_tail_with_an_unknown_nkey_is_refused(poller_published, nats_layout, tmp_path) -> None:
    seed = new_seed("user")  # a valid NKey the server does not know
    forged = tmp_path / "forged.nk"
    forged.write_text(seed + "\n")
    forged.chmod(0o600)
    result = await asyncio.to_thread(
        tail,
        "--nats",
        poller_published.url,
        "--creds",
        str(forged),
        *tls_args(nats_layout, ACME),
        "--tenant",
        ACME,
        "--timeout",
        "5",
    )
    assert result.returncode == 3, result.stderr
    assert seed not in result.stderr
