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
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from poller.identity.reasons import PollerError, Reason
from poller.logs import get_logger
from poller.nats.creds import CredentialsError, NatsCredentials, load_credentials

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

__all__ = [
    "ERROR_LOG_EVERY",
    "NatsTarget",
    "NatsTlsError",
    "NatsUrlError",
    "TlsFiles",
    "check_tls",
    "config_problem",
    "connect",
    "parse_servers",
    "redact_url",
    "server_of",
    "target_of",
]

log = get_logger("poller.nats")

SCHEMES = ("nats", "tls")
ERROR_LOG_EVERY = 30.0
_PROBE_TIMEOUT = 2.0
Callback = Callable[[], Awaitable[None]]


class NatsUrlError(PollerError, ValueError):
    """A NATS server URL (or list) that cannot be used: a configuration error."""

    reason = Reason.USAGE

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NatsTlsError(NatsUrlError):
    """The URL's scheme and the server disagree about TLS, or the TLS files cannot be used."""


def redact_url(url: str) -> str:
    """The URL without its user:password@ part (a NATS URL may carry one)."""
    head, sep, tail = url.partition("://")
    return f"{head}{sep}{tail.rsplit('@', 1)[-1]}" if sep else url.rsplit("@", 1)[-1]


def parse_servers(value: str | Sequence[str]) -> tuple[str, ...]:
    """A list of NATS URLs, or one string of comma-separated URLs, checked; NatsUrlError names the bad one.

    >>> parse_servers("nats://a:4222, nats://b:4222")
    ('nats://a:4222', 'nats://b:4222')
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    urls: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise NatsUrlError(f"a NATS URL must be a string, not {type(item).__name__}")
        url = item.strip()
        if not url:
            raise NatsUrlError("empty NATS URL in the list" if len(items) > 1 else "no NATS URL given")
        shown = redact_url(url)
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise NatsUrlError(f"{shown!r} is not a URL (expected e.g. nats://127.0.0.1:4222)") from None
        if parts.scheme not in SCHEMES:
            raise NatsUrlError(f"{shown!r}: scheme must be nats:// or tls:// (e.g. tls://nats:4222)")
        if not parts.hostname or any(c in url for c in " \t\n"):
            raise NatsUrlError(f"{shown!r} has no host (expected e.g. nats://127.0.0.1:4222)")
        if port == 0:
            raise NatsUrlError(f"{shown!r}: port 0 is not a port to connect to")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise NatsUrlError(f"{shown!r}: a NATS URL has no path, query or fragment")
        urls.append(url)
    if len({urlsplit(u).scheme for u in urls}) > 1:
        raise NatsUrlError("the NATS URLs mix nats:// and tls://: use one scheme for every server")
    return tuple(urls)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The TLS of a NATS connection: `ca_file` verifies the server (None: the system's CAs);
    `cert_file` + `key_file` (a chain and its key) are the client certificate for mTLS."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise NatsTlsError("a client certificate needs both cert_file and key_file")

    def context(self) -> ssl.SSLContext:
        """A client SSLContext: TLS 1.2+, the server's name and chain verified; NatsTlsError if a file is unusable."""
        ctx = _CountingContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            if self.ca_file is not None:
                ctx.load_verify_locations(cafile=str(self.ca_file))
            else:
                ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
            if self.cert_file is not None and self.key_file is not None:
                ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        except (OSError, ssl.SSLError) as exc:
            files = ", ".join(str(p) for p in (self.ca_file, self.cert_file, self.key_file) if p is not None)
            raise NatsTlsError(f"TLS files ({files}) cannot be used: {exc.strerror or exc}") from None
        return ctx


class _CountingContext(ssl.SSLContext):
    """Counts TLS sessions begun with it, so a (re)connection made without TLS is seen."""

    handshakes = 0

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        self.handshakes += 1
        return super().wrap_bio(*args, **kwargs)


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
        if isinstance(ctx, _CountingContext) and ctx.handshakes == seen["handshakes"] and nc is not None:
            clog.error("nats_not_encrypted", server=current(), why="a tls:// connection came up without TLS; closing it")
            await nc.close()
            return
        if isinstance(ctx, _CountingContext):
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
    if isinstance(ctx, _CountingContext):
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
