"""The daemon's one HTTP endpoint: /metrics, /status, the targets page /, /healthz and /readyz.

A small HTTP/1.1 server on the daemon's event loop (asyncio streams), so the
status it shows is read where it is written, with no locks. It serves GET and
HEAD only, one request per connection, with bounded request size, read time
and connection count, in total and per client address (so that one client
holding idle sockets cannot starve the Prometheus scrape): it is an
operator's view, not a web server. Rendering (Prometheus exposition, JSON,
HTML) runs in a worker thread so a large fleet never stalls polling.

/status and / list every tenant's agents: bind it where only the platform's
operators can reach it (loopback by default in the example config).
/healthz and /readyz answer JSON from the daemon's named checks
(poller.daemon.health): 200 when every check passes, 503 with the reasons
when one does not.

>>> server = OperatorServer(("127.0.0.1", 9464), statuses=view, poller_id="p-1", registry=metrics.registry)  # doctest: +SKIP
>>> await server.start(); server.port  # doctest: +SKIP
9464
"""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import json
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from poller.daemon.health import HealthChecks
from poller.daemon.status import AgentStatus, to_json
from poller.daemon.targets import render_targets_page
from poller.identity.names import is_label
from poller.identity.reasons import PollerError
from poller.logs import LineLimiter, get_logger

log = get_logger("poller.http")

# The records of one tenant's agents (all tenants when None); cheap, called on the loop.
StatusView = Callable[[str | None], list[AgentStatus]]

MAX_REQUEST_BYTES = 16 * 1024  # request line and headers together
READ_TIMEOUT = 10.0  # seconds a client may take to send its request
WRITE_TIMEOUT = 30.0  # seconds a client may take to read the answer (a slow reader holds a slot)
MAX_CONNECTIONS = 64
# Connections one client address may hold at once. Prometheus opens one per scrape and
# the kubelet one per probe; a browser opens at most 6. A client over it is closed at
# once, so the other 56 of MAX_CONNECTIONS stay free for everyone else.
MAX_CONNECTIONS_PER_CLIENT = 8
REFUSAL_LOG_EVERY = 60.0  # seconds between http_connection_refused lines of one kind

Limit = Literal["per_client", "total"]

_SECURITY_HEADERS = (
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    # Defence in depth for the page: certificate strings are escaped, and even
    # if one were not, no script, frame or outside resource could load.
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"),
)


class BadRequest(PollerError):
    """A request this server does not answer; `status` is the HTTP status it gets."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class OperatorServer:
    """Serves /metrics (Prometheus), /status (JSON), / (HTML), /healthz and /readyz (JSON) on one address."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        statuses: StatusView,
        poller_id: str,
        registry: CollectorRegistry,
        refresh_seconds: float = 10.0,
        max_connections: int = MAX_CONNECTIONS,
        max_per_client: int = MAX_CONNECTIONS_PER_CLIENT,
        health: HealthChecks | None = None,
        about: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.host, self._port = address
        self.health = health if health is not None else HealthChecks()
        # The targets page's "this poller" panel (version, uptime, NATS, outbox, own certificate, gateway).
        self._about = about
        self._statuses = statuses
        self.poller_id = poller_id
        self.refresh_seconds = refresh_seconds
        self.registry = registry
        self._server: asyncio.Server | None = None
        self.max_connections = max_connections
        self._slots = asyncio.Semaphore(max_connections)
        self._clients: set[asyncio.StreamWriter] = set()
        self.max_per_client = max_per_client
        self._per_client: dict[str, int] = {}  # connections held, by client address; no zero entries
        # Connections closed unanswered because a limit was reached, by limit (for tests and debugging).
        self.refused: dict[Limit, int] = {"per_client": 0, "total": 0}
        self._refusal_log = LineLimiter(REFUSAL_LOG_EVERY, on_held_back=self._refusals_held_back)  # per limit

    @property
    def port(self) -> int:
        """The bound port (the real one when the configured port was 0)."""
        return self._port

    async def start(self) -> None:
        # An empty host means every interface, as metrics_listen documents.
        self._server = await asyncio.start_server(
            self._serve, host=self.host or None, port=self._port, reuse_address=True, limit=MAX_REQUEST_BYTES
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._clients):  # a slow client must not hold the shutdown
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = _client_address(writer.get_extra_info("peername"))
        held = self._per_client.get(client, 0)
        if held >= self.max_per_client:
            self._refuse(writer, "per_client", client, held)
            return
        if self._slots.locked():
            self._refuse(writer, "total", client, held)  # full: refuse at once rather than queue without bound
            return
        self._per_client[client] = held + 1
        try:
            await self._serve_one(reader, writer)
        finally:
            left = self._per_client[client] - 1
            if left:
                self._per_client[client] = left
            else:
                del self._per_client[client]  # bounded by the connections held, not by every address seen

    def _refuse(self, writer: asyncio.StreamWriter, limit: Limit, client: str, held: int) -> None:
        """Close a connection over a limit unanswered; one warning per limit per REFUSAL_LOG_EVERY seconds."""
        writer.close()
        self.refused[limit] += 1
        hidden = self._refusal_log.due(limit)
        if hidden is None:
            return
        extra = {"suppressed": hidden} if hidden else {}
        cap = self.max_per_client if limit == "per_client" else self.max_connections
        log.warning("http_connection_refused", limit=limit, peer=client, peer_connections=held, max=cap, **extra)

    def _refusals_held_back(self, limit: object, held: int) -> None:
        """Refusals of one limit held back in a window that closed with no line saying them."""
        log.warning("http_connections_held_back", limit=limit, suppressed=held, window_s=self._refusal_log.every)

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with self._slots:
            self._clients.add(writer)
            try:
                try:
                    async with asyncio.timeout(READ_TIMEOUT):
                        method, target, headers = await _read_request(reader)
                    status, content_type, body = await self._respond(method, target, headers)
                except BadRequest as exc:
                    method, status, content_type, body = "GET", exc.status, "text/plain; charset=utf-8", f"{exc}\n".encode()
                    headers = {}
                async with asyncio.timeout(WRITE_TIMEOUT):
                    await _write_response(writer, status, content_type, body, headers, head=method == "HEAD")
            except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
                pass  # the client went away or was too slow: nothing to answer
            except Exception:
                log.exception("http_request_failed")
            finally:
                self._clients.discard(writer)
                writer.close()
                try:
                    await writer.wait_closed()
                except (ConnectionError, OSError):
                    pass

    async def _respond(self, method: str, target: str, headers: dict[str, str]) -> tuple[HTTPStatus, str, bytes]:
        if method not in ("GET", "HEAD"):
            raise BadRequest(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is not served here; use GET")
        url = urlsplit(target)
        query = parse_qs(url.query)
        if url.path == "/metrics":
            encoder, content_type = choose_encoder(headers.get("accept", ""))
            return HTTPStatus.OK, content_type, await asyncio.to_thread(encoder, self.registry)
        if url.path in ("/healthz", "/readyz"):
            report = self.health.live() if url.path == "/healthz" else self.health.ready()  # cheap, on the loop
            status = HTTPStatus.OK if report["status"] == "ok" else HTTPStatus.SERVICE_UNAVAILABLE
            return status, "application/json", (json.dumps({"poller_id": self.poller_id, **report}) + "\n").encode()
        if url.path in ("/status", "/"):
            tenant = _tenant_filter(query)
            statuses = self._statuses(tenant)  # on the loop, where the records are written; immutable
            if url.path == "/status":
                return HTTPStatus.OK, "application/json", await asyncio.to_thread(_json, statuses)
            about = self._about() if self._about is not None else None  # on the loop, like the statuses
            page = await asyncio.to_thread(
                lambda: render_targets_page(
                    to_json(statuses), poller_id=self.poller_id, tenant=tenant, refresh_seconds=self.refresh_seconds, about=about
                )
            )
            return HTTPStatus.OK, "text/html; charset=utf-8", page.encode()
        raise BadRequest(HTTPStatus.NOT_FOUND, f"{url.path} not found; try /, /status, /metrics, /healthz or /readyz")


def _client_address(peername: Any) -> str:
    """The client's address as the per-client limit counts it: an IPv4-mapped IPv6 address
    (a dual-stack listener) as the IPv4 address, so one client is one key either way."""
    if not isinstance(peername, tuple) or not peername:
        return "unknown"
    host = str(peername[0])
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _tenant_filter(query: dict[str, list[str]]) -> str | None:
    values = query.get("tenant")
    if not values:
        return None
    if len(values) > 1 or not is_label(values[0]):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "tenant must be one tenant slug (a lowercase DNS label)")
    return values[0]


def _json(statuses: list[AgentStatus]) -> bytes:
    return (json.dumps(to_json(statuses), separators=(",", ":")) + "\n").encode()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]]:
    """Method, target and lower-cased headers; BadRequest when it is not a sane HTTP/1.x request."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request headers too large") from None
    if len(head) > MAX_REQUEST_BYTES:
        raise BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request headers too large")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "not an HTTP/1.x request")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            if not sep:
                raise BadRequest(HTTPStatus.BAD_REQUEST, "malformed header line")
            headers[name.strip().lower()] = value.strip()
    return parts[0], parts[1], headers


async def _write_response(
    writer: asyncio.StreamWriter,
    status: HTTPStatus,
    content_type: str,
    body: bytes,
    request_headers: dict[str, str],
    *,
    head: bool,
) -> None:
    extra: list[tuple[str, str]] = []
    if len(body) > 1024 and "gzip" in request_headers.get("accept-encoding", ""):
        body = await asyncio.to_thread(gzip.compress, body, 6)
        extra.append(("Content-Encoding", "gzip"))
    lines = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{k}: {v}" for k, v in (*_SECURITY_HEADERS, *extra)),
    ]
    if status is HTTPStatus.METHOD_NOT_ALLOWED:
        lines.append("Allow: GET, HEAD")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if not head:
        writer.write(body)
    await writer.drain()
