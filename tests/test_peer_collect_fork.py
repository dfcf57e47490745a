"""The collecting handshake's thread pool (poller.dial.peer): made at the first
collect, not at import, and made again in a forked child, whose parent's
threads do not exist there (multiprocessing's default start on Linux is
fork). A real TLS server on loopback (Python's ssl, in a thread) presents an
agent's chain. Each case runs in a fresh interpreter, so that no other test's
gRPC threads are forked with it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from poller.testing import ForgePki

FORK_DRIVER = r"""
import asyncio, os, socket, ssl, sys, tempfile, threading
from cryptography import x509
from poller.dial.peer import collector_context, fetch_peer_chain
from poller.trust.snapshot import ClientIdentity

agent_chain, agent_key, poller_chain, poller_key = sys.argv[1:5]
server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
server.load_cert_chain(agent_chain, agent_key)
server.set_alpn_protocols(["h2"])
listener = socket.create_server(("127.0.0.1", 0))
address = "127.0.0.1:%d" % listener.getsockname()[1]

def serve():
    while True:
        raw, _ = listener.accept()
        with raw:
            raw.settimeout(5)
            try:
                with server.wrap_socket(raw, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                pass  # the collector drops the connection once it has the chain

threading.Thread(target=serve, daemon=True).start()
chain_pem = open(poller_chain, "rb").read()
key_pem = open(poller_key, "rb").read()
client = ClientIdentity(cert=x509.load_pem_x509_certificate(chain_pem), chain_pem=chain_pem, key_pem=key_pem)
context = collector_context(client)
leaf = ssl.PEM_cert_to_DER_cert(open(agent_chain).read().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n")
assert asyncio.run(fetch_peer_chain(address, context, timeout=10))[0] == leaf  # the parent's pool has threads now
with tempfile.TemporaryFile() as report:
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            chain = asyncio.run(fetch_peer_chain(address, context, timeout=5))
            report.write(b"ok" if chain[0] == leaf else b"wrong chain")
            status = 0
        except BaseException as exc:
            report.write(("%s: %s" % (type(exc).__name__, exc)).encode())
        finally:
            report.flush()
            os._exit(status)
    _, wait_status = os.waitpid(pid, 0)
    report.seek(0)
    print(os.waitstatus_to_exitcode(wait_status), report.read().decode())
"""


def test_importing_the_dialer_starts_no_threads() -> None:
    code = "import poller.dial.peer as peer, threading; print(peer._pool is None, threading.active_count())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout.split()
    assert out == ["True", "1"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_forked_child_collects_with_a_pool_of_its_own(pki: ForgePki, tmp_path: Path) -> None:
    files = []
    for name, cert in (("agent", pki.agent("acme-corp", "agent-001")), ("poller", pki.agent("acme-corp", "poller-1"))):
        chain, key = tmp_path / f"{name}.pem", tmp_path / f"{name}-key.pem"
        chain.write_bytes(cert.chain_pem)
        key.write_bytes(cert.key_pem)
        files += [str(chain), str(key)]
    done = subprocess.run([sys.executable, "-c", FORK_DRIVER, *files], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "0 ok"  # the child read the chain before its deadline
