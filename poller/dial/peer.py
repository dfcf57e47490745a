"""Read the certificate chain an agent presents, over one TLS handshake.

grpcio cannot show a client the server's certificate (grpc/grpc#32635), so
the dialer makes one TLS handshake of its own to see what the agent presents.
This handshake only collects: the decision is made from the collected chain
by poller.trust.verify, and the gRPC channel used afterwards is pinned to the
very leaf collected here (its exact DER bytes) and its verified name by gRPC's
own handshake.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import ssl
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

from poller.address import split_host_port
from poller.identity.reasons import AgentUnreachable, IdentityRefused, Reason
from poller.trust.snapshot import ClientIdentity

# OpenSSL verifies the server's CertificateVerify signature with the leaf's key
# in every verify mode, so a collected leaf is one whose key the peer holds.


@lru_cache(maxsize=16)
def collector_context(client: ClientIdentity) -> ssl.SSLContext:
    """A client context that presents the poller's certificate and collects the
    peer's chain (cached per client identity, so a rotated poller certificate
    gets a new one). Chain verification is NOT done here (see module
    docstring): CERT_NONE is deliberate because a refused chain must still be
    read to say why it was refused; nothing is sent but the handshake.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False  # collection only; see docstring
    ctx.verify_mode = ssl.CERT_NONE  # collection only; see docstring
    ctx.set_alpn_protocols(["h2"])  # Go gRPC servers refuse a handshake without ALPN h2
    _load_identity(ctx, client.chain_pem, client.key_pem)
    return ctx


def _load_identity(ctx: ssl.SSLContext, chain_pem: bytes, key_pem: bytes) -> None:
    """load_cert_chain reads files only. The PEM bytes (which may come from a
    database) go through anonymous memory files where the OS has them, else
    through a private temporary directory removed at once."""
    if hasattr(os, "memfd_create"):
        fds = [os.memfd_create("poller-chain"), os.memfd_create("poller-key")]
        try:
            for fd, data in zip(fds, (chain_pem, key_pem), strict=True):
                os.write(fd, data)
            ctx.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}")
        finally:
            for fd in fds:
                os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="poller-id-") as tmp:  # pragma: no cover - non-Linux
        chain, key = Path(tmp) / "chain.pem", Path(tmp) / "key.pem"
        chain.write_bytes(chain_pem)
        key.touch(mode=0o600)
        key.write_bytes(key_pem)
        ctx.load_cert_chain(chain, key)


# Handshakes run on a pool of threads: OpenSSL releases the GIL while it
# works, so the second core does the crypto and the event loop stays free
# (measured: event-loop CPU per collect 2.4 ms -> 0.2 ms). Every handshake
# has a hard deadline, so a silent or slow-dripping peer holds a thread for
# at most `timeout`; a queued handshake whose caller gave up never starts.
# Made at the first collect, not at import; a forked child (multiprocessing's
# default start on Linux) gets a pool of its own, since the parent's threads
# do not exist there and a handshake queued to them would never start.
_pool: ThreadPoolExecutor | None = None
_forgets_at_fork = False


def _collect_pool() -> ThreadPoolExecutor:
    global _pool, _forgets_at_fork
    if _pool is None:
        if not _forgets_at_fork and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_forget_pool)
            _forgets_at_fork = True
        _pool = ThreadPoolExecutor(max_workers=max(32, 4 * (os.cpu_count() or 1)), thread_name_prefix="poller-collect")
    return _pool


def _forget_pool() -> None:
    global _pool
    _pool = None


async def fetch_peer_chain(address: str, context: ssl.SSLContext, *, timeout: float) -> list[bytes]:
    """DER certificates the agent at address presents, leaf first."""
    host, port = split_host_port(address)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            return await loop.run_in_executor(_collect_pool(), _collect, host, port, context, time.monotonic() + timeout)
    except TimeoutError:
        raise AgentUnreachable(f"TLS handshake with {address} timed out after {timeout:g}s", code="DEADLINE_EXCEEDED") from None
    except ssl.SSLError as exc:
        if exc.reason in _NOT_TLS:
            raise AgentUnreachable(
                f"TLS handshake with {address} failed: the peer does not speak TLS ({exc.reason}); "
                "is it a plaintext port, or not an agent?"
            ) from None
        raise AgentUnreachable(f"TLS handshake with {address} failed: {exc.reason or exc}") from None
    except OSError as exc:
        raise AgentUnreachable(f"cannot connect to {address}: {exc.strerror or exc}") from None


# OpenSSL's reasons when the bytes that came back are not a TLS record at all.
_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE", "HTTP_REQUEST"})


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
                    return _handshake_chain(tls)
                except ssl.SSLWantReadError:
                    waiter.register(tls, select.POLLIN)
                except ssl.SSLWantWriteError:
                    waiter.register(tls, select.POLLOUT)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not waiter.poll(remaining * 1000):
                    raise TimeoutError("handshake deadline")


def _handshake_chain(tls: ssl.SSLSocket) -> list[bytes]:
    """The presented chain, whose first certificate must be the very one whose
    key signed this handshake (OpenSSL's peer certificate): what is proven,
    and later pinned, is exactly the certificate the handshake authenticated."""
    chain = _unverified_chain(tls)
    if not chain:
        return chain  # refused as bad_certificate by the verifier, with that detail
    if chain[0] != tls.getpeercert(binary_form=True):
        raise IdentityRefused(Reason.BAD_CERTIFICATE, "the presented chain does not start with the handshake's certificate")
    return chain


def _unverified_chain(sslsock: ssl.SSLSocket | ssl.SSLObject) -> list[bytes]:
    # Public in Python 3.13 (get_unverified_chain); 3.11 and 3.12 have the
    # same method on the private _sslobj.
    getter = getattr(sslsock, "get_unverified_chain", None) or getattr(sslsock._sslobj, "get_unverified_chain", None)  # type: ignore[union-attr]
    if getter is None:  # pragma: no cover - every supported Python has one
        raise AgentUnreachable("this Python cannot read a peer certificate chain")
    chain = getter() or []
    # A Certificate object gives PEM by default; the public converter makes it DER.
    return [c if isinstance(c, bytes) else ssl.PEM_cert_to_DER_cert(c.public_bytes()) for c in chain]
