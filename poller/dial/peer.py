"""Read the certificate chain an agent presents, over one TLS handshake.

grpcio cannot show a client the server's certificate (grpc/grpc#32635), so
the dialer makes one TLS handshake of its own to see what the agent presents.
This handshake only collects: the decision is made from the collected chain
by poller.trust.verify, and the gRPC channel used afterwards is pinned to the
tenant anchor and the verified name by gRPC's own handshake.
"""

from __future__ import annotations

import asyncio
import ssl
from functools import lru_cache
from pathlib import Path

from poller.identity import certinfo
from poller.identity.reasons import AgentUnreachable
from poller.trust.store import ClientIdentity

# OpenSSL verifies the server's CertificateVerify signature with the leaf's key
# in every verify mode, so a collected leaf is one whose key the peer holds.


def collector_context(client: ClientIdentity) -> ssl.SSLContext:
    """The cached collector context for this client identity (see _build)."""
    return _collector_context(client.chain_path, client.key_path, certinfo.fingerprint_sha256(client.cert))


@lru_cache(maxsize=16)
def _collector_context(chain_path: Path, key_path: Path, fingerprint: str) -> ssl.SSLContext:
    """A client context that presents the poller's certificate and collects the
    peer's chain. Chain verification is NOT done here (see module docstring):
    CERT_NONE is deliberate because a refused chain must still be read to say
    why it was refused; nothing sent over this connection but the handshake.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False  # collection only; see docstring
    ctx.verify_mode = ssl.CERT_NONE  # collection only; see docstring
    ctx.set_alpn_protocols(["h2"])  # Go gRPC servers refuse a handshake without ALPN h2
    ctx.load_cert_chain(chain_path, key_path)
    return ctx


def split_address(address: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port); ValueError otherwise."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"address {address!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    number = int(port)
    if not 0 < number < 65536:
        raise ValueError(f"port {number} out of range in {address!r}")
    return host, number


async def fetch_peer_chain(address: str, context: ssl.SSLContext, *, timeout: float) -> list[bytes]:
    """DER certificates the agent at address presents, leaf first."""
    host, port = split_address(address)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname=None)
    except TimeoutError:
        raise AgentUnreachable(f"TLS handshake with {address} timed out after {timeout:g}s", code="DEADLINE_EXCEEDED") from None
    except ssl.SSLError as exc:
        raise AgentUnreachable(f"TLS handshake with {address} failed: {exc.reason or exc}") from None
    except OSError as exc:
        raise AgentUnreachable(f"cannot connect to {address}: {exc.strerror or exc}") from None
    try:
        sslobj = writer.get_extra_info("ssl_object")
        return _unverified_chain(sslobj)
    finally:
        writer.close()
        try:
            async with asyncio.timeout(1.0):
                await writer.wait_closed()
        except (TimeoutError, OSError, ssl.SSLError):
            pass  # the agent may drop us first: we have what we came for


def _unverified_chain(sslobj: ssl.SSLObject | None) -> list[bytes]:
    if sslobj is None:
        raise AgentUnreachable("no TLS session after the handshake")
    # Public in Python 3.13 (SSLObject.get_unverified_chain); 3.11 and 3.12
    # have the same method on the private _sslobj.
    getter = getattr(sslobj, "get_unverified_chain", None) or getattr(sslobj._sslobj, "get_unverified_chain", None)  # type: ignore[attr-defined]
    if getter is None:  # pragma: no cover - every supported Python has one
        raise AgentUnreachable("this Python cannot read a peer certificate chain")
    chain = getter() or []
    return [c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER) for c in chain]  # type: ignore[attr-defined]
