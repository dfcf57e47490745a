"""The one way the poller connects to NATS: the sink, the cluster node, `tail` and `cluster status` all use it.

- **Servers**: a list of URLs (or one comma-separated string), handed to
  nats-py as its server pool, so a poller started while one node is down
  connects to another. A URL that does not parse is a NatsUrlError
  (a config error: exit 2 from the commands).
- **Credentials**: an NKey seed file, a standard `.creds` file or the old
  JSON format (poller.nats.creds); a file readable by group or others is refused.
- **TLS**: `tls://` URLs are verified against `TlsFiles.ca_file` (the
  platform root), with a client certificate (mTLS) when `cert_file` and
  `key_file` are given. The scheme is the contract: a `tls://` URL never
  talks in clear (a server that does not offer TLS is refused before any
  credential is sent, and a reconnect that came up without TLS is closed),
  and a `nats://` URL that meets a TLS-only server gets a clear error rather
  than an upgrade against the system's CAs.
- **Logs**: `nats_connected` / `nats_reconnected` name the server actually
  reached; `nats_error` is rate-limited (one line per kind of error per
  ERROR_LOG_EVERY seconds, with the count of those not shown).

>>> target = NatsTarget.of("tls://nats-1:4222,tls://nats-2:4222", creds="poller.nk",
...                        tls=TlsFiles(ca_file=Path("root.pem")))                   # doctest: +SKIP
>>> nc = await connect(target, name="serviceradar-poller 1")                          # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from poller.logs import get_logger
from poller.nats.creds import CredentialsError, NatsCredentials, load_credentials
from poller.nats.urls import CountingContext, NatsTlsError, NatsUrlError, TlsFiles, parse_servers, redact_url

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

__all__ = [
    "ERROR_LOG_EVERY",
    "NatsTarget",
    "NatsTlsError",
    "NatsUrlError",
    "TlsFiles",
    "check_tls",
    "cluster_size",
    "config_problem",
    "connect",
    "parse_servers",
    "redact_url",
    "server_of",
    "target_of",
]

log = get_logger("poller.nats")

ERROR_LOG_EVERY = 30.0
_PROBE_TIMEOUT = 2.0
Callback = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class NatsTarget:
    """Where the poller's NATS is and how to prove itself to it."""

    servers: tuple[str, ...]
    creds: Path | None = None
    tls: TlsFiles | None = None

    @classmethod
    def of(cls, servers: str | Sequence[str], creds: str | Path | None = None, tls: TlsFiles | None = None) -> NatsTarget:
        """Checked: NatsUrlError for a bad URL, NatsTlsError for TLS files with nats:// URLs."""
        urls = parse_servers(servers)
        target = cls(urls, Path(creds) if creds is not None else None, tls)
        if tls is not None and not target.uses_tls:
            raise NatsTlsError("TLS files are given but the URLs are nats://: write them as tls://")
        return target

    @property
    def uses_tls(self) -> bool:
        return all(urlsplit(u).scheme == "tls" for u in self.servers)

    @property
    def shown(self) -> str:
        return ",".join(redact_url(u) for u in self.servers)

    def credentials(self) -> NatsCredentials | None:
        """The credentials file, read and checked (CredentialsError), or None."""
        return load_credentials(self.creds) if self.creds is not None else None


def server_of(nc: NATS) -> str | None:
    """host:port of the server this connection is on now (None while not connected)."""
    url = nc.connected_url
    return f"{url.hostname}:{url.port}" if url is not None and url.hostname else None


async def _server_info(url: str, timeout: float) -> dict[str, Any] | None:
    """The INFO a server greets a plain TCP connection with, or None if it does not answer."""
    parts = urlsplit(url)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 4222)
            try:
                line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError):
        return None
    if not line.startswith(b"INFO "):
        return None
    try:
        info = json.loads(line[5:])
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


async def check_tls(target: NatsTarget, timeout: float = _PROBE_TIMEOUT) -> None:
    """Ask each reachable server whether it speaks TLS; NatsTlsError when the URL's scheme disagrees."""
    infos = await asyncio.gather(*(_server_info(u, timeout) for u in target.servers))
    for url, info in zip(target.servers, infos, strict=True):
        if info is None:
            continue  # unreachable now: nats-py will try it, and the TLS check below still holds
        tls = urlsplit(url).scheme == "tls"
        offers = bool(info.get("tls_required") or info.get("tls_available"))
        if tls and not offers:
            raise NatsTlsError(f"{redact_url(url)}: the server does not offer TLS; refusing to talk to a tls:// URL in clear")
        if not tls and info.get("tls_required"):
            host = urlsplit(url).netloc.rsplit("@", 1)[-1]
            raise NatsTlsError(
                f"{redact_url(url)}: the server requires TLS: use tls://{host} with its CA (tls.ca_file, --tls-ca)"
            )


async def cluster_size(target: NatsTarget, timeout: float = _PROBE_TIMEOUT) -> int:
    """How many servers the reachable servers say their cluster has (1: not a cluster).

    From each server's INFO: the client URLs it advertises for its cluster, and the
    configured servers that name the same cluster (a server that is down is not counted)."""
    infos = [i for i in await asyncio.gather(*(_server_info(u, timeout) for u in target.servers)) if i is not None]
    clustered = [i for i in infos if i.get("cluster")]
    if not clustered:
        return 1
    names = {i.get("server_name") or i.get("server_id") for i in clustered}
    advertised = max(len(set(i.get("connect_urls") or [])) for i in clustered)
    return max(len(names), advertised, 1)


class _ErrorLog:
    """nats_error / nats_refused, each kind at most once per ERROR_LOG_EVERY seconds."""

    def __init__(self, logger: Any, every: float) -> None:
        self.logger = logger
        self.every = every
        self.last: dict[str, tuple[float, int]] = {}

    def __call__(self, err: Exception, server: str | None) -> None:
        text = str(err) or err.__class__.__name__
        refused = any(w in text.lower() for w in ("permission", "authorization"))
        key = f"{err.__class__.__name__}:{text[:80]}"
        now = time.monotonic()
        at, hidden = self.last.get(key, (-1e18, 0))
        if now - at < self.every:
            self.last[key] = (at, hidden + 1)
            return
        self.last[key] = (now, 0)
        extra = {"suppressed": hidden} if hidden else {}
        self.logger.warning("nats_refused" if refused else "nats_error", server=server, error=text, **extra)

    def reset(self) -> None:
        self.last.clear()


async def connect(
    target: NatsTarget,
    *,
    name: str,
    logger: Any = None,
    on_error: Callable[[Exception], Awaitable[None]] | None = None,
    on_disconnected: Callback | None = None,
    on_reconnected: Callback | None = None,
    on_closed: Callback | None = None,
    check: bool = True,
    error_log_every: float = ERROR_LOG_EVERY,
    **options: Any,
) -> NATS:
    """A nats-py connection to `target` (the keyword options go to nats.connect), logged through
    structlog, never stdout. Raises NatsUrlError/NatsTlsError (config), CredentialsError, or what
    nats.connect raises when no server answers."""
    import nats

    clog = logger if logger is not None else log
    auth = target.credentials()
    tls = target.tls if target.tls is not None else (TlsFiles() if target.uses_tls else None)
    ctx = tls.context() if tls is not None else None
    if check:
        await check_tls(target)
    errors = _ErrorLog(clog, error_log_every)
    holder: dict[str, NATS] = {}

    def current() -> str | None:
        nc = holder.get("nc")
        return server_of(nc) if nc is not None else None

    async def error_cb(err: Exception) -> None:
        errors(err, current())
        if on_error is not None:
            await on_error(err)

    async def disconnected_cb() -> None:
        nc = holder.get("nc")
        if nc is None or nc.is_closed:
            return  # closed on purpose (or a failed first connect, raised to the caller)
        clog.warning("nats_disconnected", servers=target.shown)
        if on_disconnected is not None:
            await on_disconnected()

    seen = {"handshakes": 0}

    async def reconnected_cb() -> None:
        nc = holder.get("nc")
        if isinstance(ctx, CountingContext) and ctx.handshakes == seen["handshakes"] and nc is not None:
            clog.error("nats_not_encrypted", server=current(), why="a tls:// connection came up without TLS; closing it")
            await nc.close()
            return
        if isinstance(ctx, CountingContext):
            seen["handshakes"] = ctx.handshakes
        errors.reset()
        clog.info("nats_reconnected", server=current())
        if on_reconnected is not None:
            await on_reconnected()

    async def closed_cb() -> None:
        if on_closed is not None:
            await on_closed()

    kwargs: dict[str, Any] = {
        "servers": list(target.servers),
        "name": name,
        "error_cb": error_cb,
        "disconnected_cb": disconnected_cb,
        "reconnected_cb": reconnected_cb,
        "closed_cb": closed_cb,
        **(auth.connect_options() if auth is not None else {}),
        **options,
    }
    if ctx is not None:
        kwargs["tls"] = ctx
    nc = await nats.connect(**kwargs)
    holder["nc"] = nc
    if isinstance(ctx, CountingContext):
        if ctx.handshakes == 0:
            await nc.close()
            raise NatsTlsError(f"{target.shown}: the connection came up without TLS; refusing it")
        seen["handshakes"] = ctx.handshakes
    clog.info("nats_connected", server=server_of(nc), servers=target.shown, tls=ctx is not None)
    return nc


def target_of(
    servers: str | Sequence[str],
    creds: str | Path | None,
    ca: str | Path | None = None,
    cert: str | Path | None = None,
    key: str | Path | None = None,
) -> NatsTarget:
    """A NatsTarget from command-line style values (`--nats`, `--creds`, `--tls-ca/--tls-cert/--tls-key`).

    TLS files given make the connection TLS; a tls:// URL alone uses the system's CAs."""
    given = [p for p in (ca, cert, key) if p is not None]
    tls = TlsFiles(*(Path(p) if p is not None else None for p in (ca, cert, key))) if given else None
    return NatsTarget.of(servers, creds, tls)


def config_problem(exc: BaseException) -> str | None:
    """The detail of a configuration error (bad URL, TLS files, credentials), else None."""
    if isinstance(exc, (NatsUrlError, CredentialsError)):
        return exc.detail
    return None
