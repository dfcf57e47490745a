"""`serviceradar-poller nats-config --operator`, run as users run it, then a real nats-server on what it wrote.

For both resolvers (memory and full) the command runs in its own process; a
nats-server is started with the config it wrote (TLS, mTLS, operator mode),
and then, with nothing but the written files:

- the poller's standard `.creds` file connects (through plain nats-py and
  through the poller's own sink) and publishes into a tenant's subject, and
  the results land in that tenant's stream, read with the tenant's `.creds`;
- a tenant's `.creds` cannot read another tenant's subjects or stream
  (and the poller's cannot read any tenant's subjects);
- every secret the command wrote is mode 0600, and a `.creds` file made
  readable by the group is refused;
- each tenant account's JWT carries finite JetStream limits, and the server
  enforces exactly those (the account's own JetStream info says so).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import ssl
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from nats.js.api import DeliverPolicy
from spawn import cli_argv

from poller.nats.accounts import user_name
from poller.nats.connect import TlsFiles
from poller.nats.creds import CredentialsError, load_credentials
from poller.nats.sink import JetStreamSettings, JetStreamSink
from poller.nats.tlsfiles import NatsTls
from poller.testing.forge import ForgePki
from poller.testing.nats_server import NatsServer
from poller.testing.results import sample_result

ACME, XYZ = "acme-corp", "xyz-inc"


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def config_doc(conf: Path) -> dict[str, Any]:
    return json.loads("\n".join(line for line in conf.read_text().splitlines() if not line.startswith("#")))


def claims(jwt: str) -> dict[str, Any]:
    body = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


class Refusals:
    """The server's asynchronous -ERR lines (permissions violations) on one connection, as they come."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.changed = asyncio.Event()

    async def on_error(self, exc: Exception) -> None:
        self.errors.append(str(exc))
        self.changed.set()

    async def wait_for(self, fragment: str, timeout: float = 10.0) -> str:
        async with asyncio.timeout(timeout):
            while True:
                for text in self.errors:
                    if fragment in text.lower():
                        return text
                self.changed.clear()
                await self.changed.wait()


class Written:
    """What `nats-config --operator` wrote, and the server running its config."""

    def __init__(self, out: Path, stdout: str, server: NatsServer) -> None:
        self.out, self.stdout, self.server = out, stdout, server
        self.snippet = json.loads((out / "poller-nats.json").read_text())

    def creds(self, tenant: str | None) -> Path:
        return self.out / ("poller.creds" if tenant is None else f"tenant-{tenant}.creds")

    def tls(self, tenant: str | None) -> TlsFiles:
        tls, name = NatsTls(self.out / "tls"), user_name(tenant)
        return TlsFiles(tls.ca, tls.user_cert(name), tls.user_key(name))

    def ssl_context(self, tenant: str | None) -> ssl.SSLContext:
        """A plain ssl context from the written files (no poller code on this path)."""
        files = self.tls(tenant)
        ctx = ssl.create_default_context(cafile=str(files.ca_file))
        ctx.load_cert_chain(str(files.cert_file), str(files.key_file))
        return ctx

    async def connect(self, tenant: str | None, refusals: Refusals | None = None) -> Any:
        """Plain nats-py with the standard .creds file, as `nats --creds` or any NATS client would."""
        on_error = (refusals or Refusals()).on_error
        return await nats.connect(
            self.server.url,
            user_credentials=str(self.creds(tenant)),
            tls=self.ssl_context(tenant),
            allow_reconnect=False,
            error_cb=on_error,
            name="operator cli test",
        )


@pytest.fixture(params=["memory", "full"])
def written(request: pytest.FixtureRequest, pki: ForgePki, tmp_path: Path) -> Iterator[Written]:
    out = tmp_path / "nats"
    done = subprocess.run(
        cli_argv(
            "nats-config", "--certs", pki.directory, "--out", out, "--listen", "127.0.0.1:4222", "--operator", request.param
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    server = NatsServer(config=out / "nats-server.conf").start()  # its own free port; same TLS, same accounts
    try:
        yield Written(out, done.stdout, server)
    finally:
        server.stop()


def test_the_layout_is_operator_mode_with_the_resolver_asked_for(written: Written, request: pytest.FixtureRequest) -> None:
    doc = config_doc(written.out / "nats-server.conf")
    resolver = request.node.callspec.params["written"]
    assert (doc["resolver"] == "MEMORY") if resolver == "memory" else (doc["resolver"]["type"] == "full")
    assert "accounts" not in doc and doc["tls"]["verify"] is True
    assert written.server.scheme == "tls"
    assert written.snippet["url"] == ["tls://127.0.0.1:4222"]
    assert written.snippet["creds"] == str(written.creds(None).absolute())
    assert load_credentials(written.creds(None)).kind == "jwt"
    # Operator mode writes no bare user seeds: each user's seed is only in its .creds file.
    assert {p.name for p in written.out.glob("*.nk")} == {"operator.nk"}
    if resolver == "full":  # the full resolver keeps the accounts' JWTs in its directory
        assert any(Path(doc["resolver"]["dir"]).iterdir())


async def test_the_pollers_creds_publish_into_a_tenants_stream(written: Written) -> None:
    # The poller's own sink, configured from the snippet nats-config wrote (it creates the stream).
    tls = written.snippet["tls"]
    sink = JetStreamSink(
        JetStreamSettings(
            url=written.server.url,
            creds=Path(written.snippet["creds"]),
            tls=TlsFiles(Path(tls["ca_file"]), Path(tls["cert_file"]), Path(tls["key_file"])),
            outbox=None,
            heartbeat_interval=None,
        )
    )
    try:
        await sink.publish(sample_result(ACME, agent="edge-1"))
        await sink.publish(sample_result(XYZ, agent="edge-2"))
    finally:
        await sink.close()
    assert sink.acked >= 2  # the two results (and the agents' health events)

    # The same .creds file through plain nats-py: a JetStream publish acknowledged by the tenant's stream.
    nc = await written.connect(None)
    try:
        ack = await nc.jetstream(timeout=10).publish(
            f"{ACME}.agents.status", b'{"tenant": "acme-corp", "plain": true}', headers={"Nats-Msg-Id": "plain-nats-py-1"}
        )
    finally:
        await nc.close()
    assert ack.stream == f"tenant-{ACME}" and not ack.duplicate

    # Read back with the tenant's own .creds: both results, in acme-corp's stream, under its prefix.
    subject = f"{ACME}.agents.status"
    nc = await written.connect(ACME)
    try:
        js = nc.jetstream(timeout=10)
        info = await js.stream_info(f"tenant-{ACME}", subjects_filter=f"{ACME}.>")
        assert info.state.subjects is not None and info.state.subjects[subject] == 2
        assert set(info.state.subjects) <= {subject, f"{ACME}.events.poller.health"}
        sub = await js.subscribe(subject, stream=f"tenant-{ACME}", ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
        msgs = [await sub.next_msg(timeout=10) for _ in range(2)]
    finally:
        await nc.close()
    ids = [m.headers["Nats-Msg-Id"] for m in msgs]
    assert ids[0].startswith("poller-1/edge-1/status/") and ids[1] == "plain-nats-py-1"
    assert json.loads(msgs[0].data)["tenant"] == ACME and json.loads(msgs[0].data)["agent"] == "edge-1"


async def test_a_tenants_creds_cannot_read_another_tenants_subjects(written: Written) -> None:
    # Both streams exist and hold a result, so a refusal cannot be a missing stream.
    sink = JetStreamSink(
        JetStreamSettings(
            url=written.server.url, creds=written.creds(None), tls=written.tls(None), outbox=None, heartbeat_interval=None
        )
    )
    try:
        for tenant in (ACME, XYZ):
            await sink.publish(sample_result(tenant))
    finally:
        await sink.close()

    for reader, other in ((ACME, XYZ), (XYZ, ACME)):
        refusals = Refusals()
        nc = await written.connect(reader, refusals)
        try:
            own = nc.jetstream(timeout=10)
            assert (await own.stream_info(f"tenant-{reader}")).state.messages >= 1  # the control: its own is readable

            await nc.subscribe(f"{other}.>")
            await nc.flush()
            text = await refusals.wait_for("permissions violation for subscription")
            assert f"{other}.>" in text

            js = nc.jetstream(timeout=2)
            with pytest.raises(nats.errors.TimeoutError):  # the request never reaches JetStream
                await js.stream_info(f"tenant-{other}")
            with pytest.raises(nats.errors.TimeoutError):
                await js.subscribe(f"{other}.>", stream=f"tenant-{other}", ordered_consumer=True)
            await refusals.wait_for(f'permissions violation for publish to "$js.api.consumer.create.tenant-{other}')
        finally:
            await nc.close()

    # The poller publishes results; it reads none.
    refusals = Refusals()
    nc = await written.connect(None, refusals)
    try:
        await nc.subscribe(f"{ACME}.>")
        await nc.flush()
        assert f"{ACME}.>" in await refusals.wait_for("permissions violation for subscription")
    finally:
        await nc.close()


def test_every_secret_is_mode_0600_and_an_open_creds_file_is_refused(written: Written, tmp_path: Path) -> None:
    out = written.out
    users = [written.creds(t) for t in (None, ACME, XYZ)]
    seeds = [out / "operator.nk", *sorted((out / "accounts").glob("*.nk"))]
    assert {p.name for p in seeds[1:]} == {"SYS.nk", "platform.nk", f"tenant-{ACME}.nk", f"tenant-{XYZ}.nk"}
    keys = sorted((out / "tls").glob("*-key.pem"))
    assert len(keys) == 3 + 1  # the three users' and the server's
    secrets = [*users, *seeds, *keys, out / "nats-server.conf"]
    assert {p: oct(mode(p)) for p in secrets} == {p: oct(0o600) for p in secrets}
    # No secret is printed, and the server's config names public keys only.
    conf = (out / "nats-server.conf").read_text()
    user_seeds = [load_credentials(p).seed for p in users]
    key_seeds = [m for p in seeds for m in re.findall(r"\bS[OA][A-Z2-7]{56}\b", p.read_text())]
    assert len(key_seeds) == len(seeds)  # one operator or account seed in each
    for seed in [*user_seeds, *key_seeds]:
        assert seed and seed not in conf and seed not in written.stdout

    # A copy readable by the group is refused, by the loader and by the sink.
    opened = tmp_path / "open.creds"
    shutil.copyfile(written.creds(ACME), opened)
    opened.chmod(0o640)
    with pytest.raises(CredentialsError, match="readable by others"):
        load_credentials(opened)
    with pytest.raises(CredentialsError):
        JetStreamSink(JetStreamSettings(url=written.server.url, creds=opened, tls=written.tls(ACME), outbox=None))


async def test_tenant_accounts_have_finite_jetstream_limits_the_server_enforces(written: Written) -> None:
    doc = config_doc(written.out / "nats-server.conf")
    accounts = {c["name"]: c for c in map(claims, doc["resolver_preload"].values())}
    assert set(accounts) == {"SYS", "platform", f"tenant-{ACME}", f"tenant-{XYZ}"}
    for tenant in (ACME, XYZ):
        account = accounts[f"tenant-{tenant}"]
        assert account["nats"]["type"] == "account"
        limits = account["nats"]["limits"]
        wanted = {k: limits[k] for k in ("mem_storage", "disk_storage", "streams", "consumer")}
        assert all(isinstance(v, int) and v > 0 for v in wanted.values()), wanted  # finite: -1 would be unlimited
        # The account the tenant's user lands in is that one (its JWT is issued by it) ...
        user = claims(written.creds(tenant).read_text().split("-----BEGIN NATS USER JWT-----")[1].split()[0])
        assert user["iss"] == account["sub"]
        # ... and the server applies exactly those limits to it.
        nc = await written.connect(tenant)
        try:
            info = await nc.jetstream(timeout=10).account_info()
        finally:
            await nc.close()
        applied = info.limits
        assert (applied.max_memory, applied.max_storage, applied.max_streams, applied.max_consumers) == (
            wanted["mem_storage"],
            wanted["disk_storage"],
            wanted["streams"],
            wanted["consumer"],
        )
