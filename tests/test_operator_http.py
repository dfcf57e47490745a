"""The daemon's HTTP server as a client that misbehaves sees it: oversized or
malformed requests get a named 4xx, a client that sends nothing holds no one
else up, and content negotiation works as Prometheus expects.

The server runs over an empty StatusBoard (the daemon's own type): these tests
are about HTTP, the agent states are covered in test_operator_view.py.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator

import pytest

from poller.daemon.http import MAX_CONNECTIONS, MAX_CONNECTIONS_PER_CLIENT, MAX_REQUEST_BYTES, OperatorServer
from poller.daemon.status import StatusBoard
from poller.metrics import PollerMetrics


@pytest.fixture
async def server() -> AsyncIterator[OperatorServer]:
    board = StatusBoard()
    metrics = PollerMetrics()
    for i in range(30):  # enough samples that the exposition is worth compressing
        metrics.polls.labels(tenant="acme-corp" if i == 0 else f"tenant-{i}", outcome="ok").inc()
    srv = OperatorServer(
        ("127.0.0.1", 0), statuses=lambda tenant: board.snapshot([], tenant), poller_id="p-<1>", registry=metrics.registry
    )
    await srv.start()
    yield srv
    await srv.stop()


async def exchange(server: OperatorServer, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(raw)
    await writer.drain()
    async with asyncio.timeout(10):
        reply = await reader.read()  # the server closes after one response
    writer.close()
    return reply


async def unanswered(server: OperatorServer) -> bool:
    """True when the server closes (or resets) a request's connection without answering."""
    try:
        return await exchange(server, b"GET /status HTTP/1.1\r\n\r\n") == b""
    except ConnectionResetError:
        return True


def split(reply: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


async def test_a_plain_get_is_answered_with_length_and_close(server):
    status, headers, body = split(await exchange(server, b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert (status, body) == (200, b"[]\n")
    assert headers["content-length"] == "3" and headers["connection"] == "close"
    assert headers["x-content-type-options"] == "nosniff" and headers["cache-control"] == "no-store"


async def test_the_poller_id_is_escaped_on_the_page(server):
    status, _, body = split(await exchange(server, b"GET / HTTP/1.0\r\n\r\n"))
    assert status == 200 and b"p-&lt;1&gt;" in body and b"p-<1>" not in body
    assert b"No agents configured" in body


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET nothing-absolute HTTP/1.1\r\n\r\n", 400),
        (b"GET / SPDY/3\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"DELETE /status HTTP/1.1\r\n\r\n", 405),
        (b"GET /../etc/passwd HTTP/1.1\r\n\r\n", 404),
        (b"GET /status?tenant=%3Cscript%3E HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * (MAX_REQUEST_BYTES + 10) + b"\r\n\r\n", 431),
    ],
)
async def test_bad_requests_get_a_named_client_error(server, raw, code):
    status, headers, body = split(await exchange(server, raw))
    assert status == code and body.strip()
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert b"<script" not in body.lower()  # an error never echoes markup back


async def test_a_silent_client_holds_up_no_one(server):
    _, silent = await asyncio.open_connection("127.0.0.1", server.port)  # connects, sends nothing
    try:
        status, _, _ = split(await exchange(server, b"GET /status HTTP/1.1\r\n\r\n"))
        assert status == 200
    finally:
        silent.close()


async def test_connections_beyond_the_limit_are_closed_unanswered():
    board = StatusBoard()
    srv = OperatorServer(
        ("127.0.0.1", 0),
        statuses=lambda tenant: board.snapshot([], tenant),
        poller_id="p",
        registry=PollerMetrics().registry,
        max_connections=2,
    )
    await srv.start()
    holders = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(2)]  # connect, send nothing
    try:
        assert await unanswered(srv)  # closed at once, no queueing
    finally:
        for _, writer in holders:
            writer.close()
    async with asyncio.timeout(10):  # the slots come back once the holders are gone
        while await unanswered(srv):
            pass
    assert split(await exchange(srv, b"GET /status HTTP/1.1\r\n\r\n"))[0] == 200
    await srv.stop()


async def test_metrics_negotiate_openmetrics_and_gzip(server):
    status, headers, body = split(
        await exchange(server, b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n")
    )
    assert status == 200 and headers["content-type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")
    status, headers, body = split(await exchange(server, b"GET /metrics HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n"))
    assert status == 200 and headers.get("content-encoding") == "gzip"
    assert b'poller_polls_total{outcome="ok",tenant="acme-corp"} 1.0' in gzip.decompress(body)


async def test_head_has_the_headers_and_no_body(server):
    status, headers, body = split(await exchange(server, b"HEAD / HTTP/1.1\r\n\r\n"))
    assert status == 200 and body == b"" and int(headers["content-length"]) > 100


async def test_a_daemon_bound_beyond_loopback_says_so(pki, log_events):
    from poller.config import parse_config
    from poller.daemon.daemon import PollerDaemon
    from poller.testing.memory_sink import MemorySink

    settings = parse_config({"poller_id": "p", "certs_dir": str(pki.directory), "metrics_listen": "0.0.0.0:0", "agents": {}})
    daemon = PollerDaemon(settings, sink=MemorySink())
    await daemon._start_http()
    try:
        assert daemon.metrics_port
    finally:
        await daemon.shutdown()
    [warning] = [line for line in log_events() if line["event"] == "status_pages_exposed"]
    assert warning["level"] == "warning" and warning["address"] == "0.0.0.0"


async def test_a_reload_keeps_the_address_the_pages_are_served_on(pki, tmp_path, log_events):
    import json

    from poller.config import load_config
    from poller.daemon.daemon import PollerDaemon
    from poller.testing.memory_sink import MemorySink

    config = tmp_path / "poller.json"
    doc = {"poller_id": "p", "certs_dir": str(pki.directory), "metrics_listen": "127.0.0.1:0", "agents": {}}
    config.write_text(json.dumps(doc))
    daemon = PollerDaemon(load_config(config), sink=MemorySink())
    await daemon._start_http()
    try:
        config.write_text(json.dumps({**doc, "metrics_listen": "127.0.0.1:1", "poller_id": "p2"}))
        assert await daemon.reload()
        assert daemon.settings.metrics_listen == "127.0.0.1:0" and daemon.settings.poller_id == "p2"
        assert [e for e in log_events() if e["event"] == "reload_partial"]
        assert daemon._http is not None
        status, _, _ = split(await exchange(daemon._http, b"GET /status HTTP/1.1\r\n\r\n"))  # still served there
        assert status == 200
    finally:
        await daemon.shutdown()


@pytest.mark.parametrize(
    ("base", "tenant", "url"),
    [
        ("http://127.0.0.1:9464", None, "http://127.0.0.1:9464/status"),
        ("http://127.0.0.1:9464/", "acme-corp", "http://127.0.0.1:9464/status?tenant=acme-corp"),
        ("https://poller.example/ops/status", None, "https://poller.example/ops/status"),
        ("127.0.0.1:9464", None, "http://127.0.0.1:9464/status"),
        ("ftp://127.0.0.1/", None, None),
    ],
)
def test_the_status_command_finds_the_status_url(base, tenant, url):
    from poller.cli.status import status_url

    assert status_url(base, tenant) == url


async def test_one_client_holding_idle_sockets_cannot_starve_the_scrape(server, monkeypatch, log_events):
    """Issue 18 item 16: a client that opens more idle sockets than the server's whole
    connection limit keeps MAX_CONNECTIONS_PER_CLIENT of them; the rest are closed at once,
    and a scrape from another address still gets its 200 (Linux routes all of 127/8 to lo)."""
    monkeypatch.setattr("poller.daemon.http.READ_TIMEOUT", 3600.0)  # the held sockets stay held for the whole test
    flood = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(MAX_CONNECTIONS + MAX_CONNECTIONS_PER_CLIENT)]
    over = len(flood) - MAX_CONNECTIONS_PER_CLIENT
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, local_addr=("127.0.0.2", 0))
        writer.write(b"GET /metrics HTTP/1.1\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(10):
            reply = await reader.read()
        writer.close()
        status, _, body = split(reply)
        assert status == 200 and b"poller_polls_total" in body

        # The flooder's sockets over its cap see EOF (or a reset) without being asked anything.
        async def closed(r: asyncio.StreamReader) -> bool:
            try:
                return await r.read() == b""
            except ConnectionResetError:
                return True

        reads = {asyncio.ensure_future(closed(r)): i for i, (r, _) in enumerate(flood)}
        ended: set[int] = set()
        async with asyncio.timeout(10):  # a guard against a hang, not a measurement
            for done in asyncio.as_completed(list(reads)):
                assert await done
                ended = {reads[t] for t in reads if t.done()}
                if len(ended) >= over:
                    break
        waiting = [task for task in reads if not task.done()]
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        held = [flood[i] for i in range(len(flood)) if i not in ended]
        assert len(ended) == over and len(held) == MAX_CONNECTIONS_PER_CLIENT
        # ... and the ones it kept were real, served connections.
        for r, w in held:
            w.write(b"GET /status HTTP/1.1\r\n\r\n")
            await w.drain()
            async with asyncio.timeout(10):
                assert split(await r.read())[0] == 200
    finally:
        for _, w in flood:
            w.close()
    assert server.refused == {"per_client": over, "total": 0}
    [line] = [e for e in log_events() if e["event"] == "http_connection_refused"]  # one line, not one per socket
    assert line["level"] == "warning" and line["peer"] == "127.0.0.1" and line["limit"] == "per_client"
    assert line["peer_connections"] == MAX_CONNECTIONS_PER_CLIENT
    # The flooder's count comes back once its sockets are gone.
    async with asyncio.timeout(10):
        while await unanswered(server):
            pass


@pytest.mark.parametrize(
    ("peername", "client"),
    [
        (("127.0.0.1", 5000), "127.0.0.1"),
        (("::ffff:10.1.2.3", 5000, 0, 0), "10.1.2.3"),  # a dual-stack listener: the same client as 10.1.2.3
        (("2001:db8::1", 5000, 0, 0), "2001:db8::1"),
        (None, "unknown"),
    ],
)
def test_the_per_client_limit_counts_one_client_by_its_address(peername, client):
    from poller.daemon.http import _client_address

    assert _client_address(peername) == client


async def test_refusals_held_back_when_a_flood_stops_are_still_said(monkeypatch, log_events, log_event_seen):
    # One line per limit per minute, with the number held back since; a flood that stops
    # inside its minute has that number said once a further minute has passed without a line.
    monkeypatch.setattr("poller.daemon.http.REFUSAL_LOG_EVERY", 1.0)  # the four refusals come well within it
    monkeypatch.setattr("poller.daemon.http.READ_TIMEOUT", 3600.0)  # the held sockets stay held
    said = log_event_seen("http_connections_held_back")
    statuses = StatusBoard()
    srv = OperatorServer(
        ("127.0.0.1", 0), statuses=lambda tenant: statuses.snapshot([], tenant), poller_id="p", registry=PollerMetrics().registry
    )
    await srv.start()
    flood = []
    try:
        flood = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(MAX_CONNECTIONS_PER_CLIENT + 4)]
        async with asyncio.timeout(10):  # a guard against a hang, not a measurement
            await said.wait()
    finally:
        for _, w in flood:
            w.close()
        await srv.stop()
    assert srv.refused["per_client"] == 4
    [line] = [e for e in log_events() if e["event"] == "http_connection_refused"]
    [held] = [e for e in log_events() if e["event"] == "http_connections_held_back"]
    assert held["limit"] == "per_client" and held["suppressed"] == 3 and "suppressed" not in line
