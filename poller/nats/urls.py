"""NATS server URLs and TLS files as the config and the commands give them (no I/O, no nats-py).

>>> parse_servers("tls://nats-1:4222,tls://nats-2:4222")
('tls://nats-1:4222', 'tls://nats-2:4222')
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from poller.identity.reasons import PollerError, Reason

__all__ = ["SCHEMES", "CountingContext", "NatsTlsError", "NatsUrlError", "TlsFiles", "parse_servers", "redact_url"]

SCHEMES = ("nats", "tls")


class NatsUrlError(PollerError, ValueError):
    """A NATS server URL (or list) that cannot be used: a configuration error."""

    reason = Reason.USAGE

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NatsTlsError(NatsUrlError):
    """The URL's scheme and the server disagree about TLS, or the TLS files cannot be used."""


def redact_url(url: str) -> str:
    """The URL with its user:password@ part (a NATS URL may carry one) shown as ***@.

    >>> redact_url("nats://alice:s3cret@nats:4222")
    'nats://***@nats:4222'
    """
    return re.sub(r"(?<=//)[^/@]*@", "***@", url)


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
        ctx = CountingContext(ssl.PROTOCOL_TLS_CLIENT)
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


class CountingContext(ssl.SSLContext):
    """Counts TLS sessions begun with it, so a (re)connection made without TLS is seen."""

    handshakes = 0

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        self.handshakes += 1
        return super().wrap_bio(*args, **kwargs)
