"""TLS, mTLS and NKeys on the link to NATS, on a real nats-server with nats-config's layouts.

A recording relay sits between the poller and the server, as an attacker on
the path would: over TLS it sees neither the CONNECT nor any result; over the
plaintext layout (the control) it sees both. Also: the scheme is a contract
(nats:// against a TLS-only server and tls:// against a plaintext one are
refused with a clear error), mTLS refuses a client without a certificate of
the platform's CA, and a list of URLs reaches a live server when the first is
down, the log naming the server reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from pathlib import Path

import nats.errors
import pytest

from poller.delivery import PollResult
from poller.nats.accounts import client_target, creds_path, plan_layout, write_layout
from poller.nats.connect import NatsTarget, NatsTlsError, NatsUrlError, TlsFiles, connect, parse_servers
from poller.nats.sink import JetStreamSettings, JetStreamSink
from poller.nats.tlsfiles import issue_tls
from poller.testing.forge import ForgePki
from poller.testing.nats_server import NatsServer
from poller.testing.results import sample_result

ACME = "acme-corp"
MARKER = "secret-result-marker-7f3a"


class RecordingRelay:
    """Forwards TCP to one backend and keeps every byte it saw, both ways."""

    def __init__(self, backend_port: int) -> None:
        self.backend_port = backend_port
        self.seen = bytearray()
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> RecordingRelay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.backend_port)
        pipes = [asyncio.ensure_future(self._pipe(reader, up_writer)), asyncio.ensure_future(self._pipe(up_reader, writer))]
        self._tasks.update(pipes)
        await asyncio.gather(*pipes, return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                self.seen += data
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()


def layout(pki: ForgePki, tmp_path: Path, *, tls: bool) -> Path:
    out = tmp_path / ("nats-tls" if tls else "nats-plain")
    files = None
    if tls:
        files = issue_tls(
            pki.directory, out, servers={"nats-1": ["127.0.0.1"]}, users=["poller", f"tenant-{ACME}", "tenant-xyz-inc"]
        )
    write_layout(out, plan_layout([ACME, "xyz-inc"], listen=("127.0.0.1", 0), store_dir=tmp_path / f"js-{tls}", tls=files))
    return out


def result() -> PollResult:
    return sample_result(ACME, payload=b'{"note": "' + MARKER.encode() + b'"}')


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plaintext-control"])
async def test_a_relay_on_the_path_sees_nothing_in_clear_over_tls(pki: ForgePki, tmp_path: Path, tls: bool) -> None:
    out = layout(pki, tmp_path, tls=tls)
    server = NatsServer(config=out / "nats-server.conf").start()
    try:
        assert server.port is not None
        async with RecordingRelay(server.port) as relay:
            poller = client_target(out, None, f"{server.scheme}://127.0.0.1:{relay.port}")
            sink = JetStreamSink(
                JetStreamSettings(url=poller.servers, creds=poller.creds, tls=poller.tls, outbox=None, heartbeat_interval=None)
            )
            try:
                await sink.publish(result())  # returns once JetStream acknowledged it
            finally:
                await sink.close()
        assert sink.acked >= 1  # acknowledged by JetStream through the relay
        seen = bytes(relay.seen)
        assert seen.startswith(b"INFO ")  # the greeting is in clear in both cases
        if tls:
            assert MARKER.encode() not in seen and b"CONNECT" not in seen and b"PUB" not in seen
        else:  # the control: the same relay does see a plaintext link
            assert MARKER.encode() in seen and b"CONNECT" in seen
    finally:
        server.stop()


@pytest.fixture
def tls_server(pki: ForgePki, tmp_path: Path):
    out = layout(pki, tmp_path, tls=True)
    server = NatsServer(config=out / "nats-server.conf").start()
    try:
        yield server, out
    finally:
        server.stop()


async def test_mtls_refuses_a_client_without_a_platform_certificate(tls_server, tmp_path: Path) -> None:
    server, out = tls_server
    poller = client_target(out, None, server.url)
    assert poller.tls is not None
    nc = await connect(poller, name="t", allow_reconnect=False)  # the layout's own certificate: in
    await nc.close()
    no_cert = NatsTarget.of(server.url, poller.creds, TlsFiles(ca_file=poller.tls.ca_file))
    with pytest.raises((OSError, nats.errors.Error)):
        await connect(no_cert, name="t", allow_reconnect=False, max_reconnect_attempts=1, connect_timeout=5)
    # A certificate of another PKI (an attacker's own CA) is refused too.
    other = ForgePki.create(tmp_path / "other")
    foreign = TlsFiles(poller.tls.ca_file, other.directory / "poller-chain.pem", other.directory / "poller-key.pem")
    with pytest.raises((OSError, nats.errors.Error)):
        await connect(NatsTarget.of(server.url, poller.creds, foreign), name="t", allow_reconnect=False, max_reconnect_attempts=1)


async def test_the_server_is_verified_against_the_platform_ca(tls_server, tmp_path: Path) -> None:
    server, out = tls_server
    poller = client_target(out, None, server.url)
    assert poller.tls is not None
    other = ForgePki.create(tmp_path / "other")
    wrong_ca = TlsFiles(other.directory / "root.pem", poller.tls.cert_file, poller.tls.key_file)
    with pytest.raises((OSError, nats.errors.Error)) as caught:
        await connect(
            NatsTarget.of(server.url, poller.creds, wrong_ca), name="t", allow_reconnect=False, max_reconnect_attempts=1
        )
    assert "certificate verify failed" in str(caught.value) or isinstance(caught.value, OSError)


async def test_the_scheme_is_a_contract(pki: ForgePki, tls_server, tmp_path: Path) -> None:
    server, out = tls_server
    with pytest.raises(NatsTlsError, match="requires TLS: use tls://"):
        await connect(NatsTarget.of(server.url.replace("tls://", "nats://"), creds_path(out, None)), name="t")
    plain_out = layout(pki, tmp_path, tls=False)
    plain = NatsServer(config=plain_out / "nats-server.conf").start()
    try:
        target = client_target(out, None, plain.url.replace("nats://", "tls://"))
        with pytest.raises(NatsTlsError, match="does not offer TLS"):
            await connect(target, name="t")
    finally:
        plain.stop()
    with pytest.raises(NatsTlsError, match="write them as tls://"):
        NatsTarget.of("nats://127.0.0.1:4222", None, TlsFiles(ca_file=out / "tls" / "ca.pem"))


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "poller", *args], capture_output=True, text=True, timeout=60, check=False)


async def test_tail_says_a_nats_url_meets_a_tls_only_server(tls_server) -> None:
    server, out = tls_server
    url = server.url.replace("tls://", "nats://")
    done = await asyncio.to_thread(
        cli, "tail", "--nats", url, "--creds", str(creds_path(out, ACME)), "--tenant", ACME, "--timeout", "3"
    )
    assert done.returncode == 2 and "requires TLS" in done.stderr, done.stderr


@pytest.mark.parametrize(
    "urls", ["nats://a:4222,,nats://b:4222", "http://a:4222", "nats://a:99999", "nats://a:4222,tls://b:4222"]
)
def test_a_url_list_that_does_not_parse_exits_2(urls: str, nats_layout: Path) -> None:
    with pytest.raises(NatsUrlError):
        parse_servers(urls)
    creds = str(creds_path(nats_layout, ACME))
    tail = cli("tail", "--nats", urls, "--creds", creds, "--tenant", ACME, "--timeout", "1")
    status = cli("cluster", "status", "--nats", urls, "--creds", creds, "--timeout", "1")
    assert (tail.returncode, status.returncode) == (2, 2), (tail.stderr, status.stderr)


async def test_a_url_list_reaches_a_live_server_and_logs_which(tls_server, unused_tcp_port: int, log_events) -> None:
    server, out = tls_server
    dead = f"tls://127.0.0.1:{unused_tcp_port}"
    target = client_target(out, None, [dead, server.url])
    nc = await connect(target, name="t", dont_randomize=True, connect_timeout=2, reconnect_time_wait=0)
    with contextlib.suppress(Exception):
        await nc.close()
    (connected,) = [e for e in log_events() if e["event"] == "nats_connected"]
    assert connected["server"] == f"127.0.0.1:{server.port}" and connected["tls"] is True
