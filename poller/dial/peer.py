"""Read the certificate chain an agent presents, over one TLS handshake.

grpcio cannot show a client the server's certificate (grpc/grpc#32635), so
the dialer makes one TLS handshake of its own to see what the agent presents.
This handshake only collects: the decision is made from the collected chain
by poller.trust.verify, and the gRPC channel used afterwards is pinned to the
tenant anchor and the verified name by gRPC's own handshake.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

from poller.address import split_host_port
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


# Handshakes run on a pool of threads: OpenSSL releases the GIL while it
# works, so the second core does the crypto and the event loop stays free
# (measured: event-loop CPU per collect 2.4 ms -> 0.2 ms). Every handshake
# has a hard deadline, so a silent or slow-dripping peer holds a thread for
# at most `timeout`; a queued handshake whose caller gave up never starts.
_POOL = ThreadPoolExecutor(max_workers=max(32, 4 * (os.cpu_count() or 1)), thread_name_prefix="poller-collect")


async def fetch_peer_chain(address: str, context: ssl.SSLContext, *, timeout: float) -> list[bytes]:
    """DER certificates the agent at address presents, leaf first."""
    host, port = split_host_port(address)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            return await loop.run_in_executor(_POOL, _collect, host, port, context, time.monotonic() + timeout)
    except TimeoutError:
        raise AgentUnreachable(f"TLS handshake with {address} timed out after {timeout:g}s", code="DEADLINE_EXCEEDED") from None
    except ssl.SSLError as exc:
        raise AgentUnreachable(f"TLS handshake with {address} failed: {exc.reason or exc}") from None
    except OSError as exc:
        raise AgentUnreachable(f"cannot connect to {address}: {exc.strerror or exc}") from None


def _collect(host: str, port: int, context: ssl.SSLContext, deadline: float) -> list[bytes]:
    """Blocking: connect, handshake before the deadline, read the chain, drop
    the connection (no close_notify: nothing was exchanged, and skipping the
    TLS shutdown saves work)."""
    with socket.create_connection((host, port), timeout=max(0.001, deadline - time.monotonic())) as raw:
        raw.setblocking(False)
        with context.wrap_socket(raw, server_hostname=None, do_handshake_on_connect=False) as tls:
            waiter = select.poll()  # not select(): descriptors above 1024 are normal with many agents
            while True:
                try:
                    tls.do_handshake()
                    return _unverified_chain(tls)
                except ssl.SSLWantReadError:
                    waiter.register(tls, select.POLLIN)
                except ssl.SSLWantWriteError:
                    waiter.register(tls, select.POLLOUT)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not waiter.poll(remaining * 1000):
                    raise TimeoutError("handshake deadline")


def _unverified_chain(sslsock: ssl.SSLSocket | ssl.SSLObject) -> list[bytes]:
    # Public in Python 3.13 (get_unverified_chain); 3.11 and 3.12 have the
    # same method on the private _sslobj.
    getter = getattr(sslsock, "get_unverified_chain", None) or getattr(sslsock._sslobj, "get_unverified_chain", None)  # type: ignore[union-attr]
    if getter is None:  # pragma: no cover - every supported Python has one
        raise AgentUnreachable("this Python cannot read a peer certificate chain")
    chain = getter() or []
    return [c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER) for c in chain]  # type: ignore[attr-defined]
