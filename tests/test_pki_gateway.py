"""`pki gateway`: the gateway's serving certificate, checked the way a push agent checks it.

Real certs directory (poller.pki.init_pki), real TLS on loopback: a server
presenting gateway.pem / gateway-key.pem, a client that trusts only root.pem
(the `ca_file` of every onboarding package) and checks a `server_name`, as
ServiceRadar's push agent does with Go's crypto/tls.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from spawn import cli_argv

from poller.pki import create_tenant_ca, init_pki
from poller.pki.errors import PkiError
from poller.pki.files import read_certificates
from poller.pki.gateway import gateway_sans, issue_gateway_cert


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    init_pki(tmp_path / "certs")
    create_tenant_ca(tmp_path / "certs", "acme-corp")
    return tmp_path / "certs"


async def handshake(certs: Path, server_name: str) -> bool:
    """Serve gateway.pem on loopback; True when a root.pem-only client accepts it for server_name."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(certs / "gateway.pem", certs / "gateway-key.pem")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b"ok")
            await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    client_ctx = ssl.create_default_context(cafile=str(certs / "root.pem"))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx, server_hostname=server_name)
    except ssl.SSLCertVerificationError:
        return False
    finally:
        server.close()
    data = await reader.read(2)
    writer.close()
    return data == b"ok"


@pytest.mark.parametrize("issuer", ["platform", "root"])
async def test_a_root_only_client_accepts_it_for_its_sans_only(certs: Path, issuer: str) -> None:
    issue_gateway_cert(certs, dns=["gw.example.net"], ips=["127.0.0.1"], issuer=issuer)  # type: ignore[arg-type]
    assert await handshake(certs, "gw.example.net")
    assert await handshake(certs, "127.0.0.1")
    assert not await handshake(certs, "other.example.net")
    assert not await handshake(certs, "poller-1.serviceradar")


def test_server_auth_only_and_the_served_chain(certs: Path) -> None:
    issued = issue_gateway_cert(certs, dns=["gw.example.net", "gw.example.net"], ips=["10.0.0.5"])
    assert (issued.cn, issued.sans, issued.issuer) == ("gw.example.net", ("DNS:gw.example.net", "IP:10.0.0.5"), "platform")
    served = read_certificates(issued.cert_path)
    platform = read_certificates(certs / "platform" / "ca.pem")[0]
    assert served == [served[0], platform]  # the leaf, then the intermediate a root-only agent needs
    leaf = served[0]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]  # never a client anywhere the poller proves clients
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert issued.key_path.stat().st_mode & 0o777 == 0o600
    assert gateway_sans(issued.cert_path) == issued.sans
    root_issued = issue_gateway_cert(certs, ips=["10.0.0.5"], issuer="root", name="gateway-b")
    assert len(read_certificates(root_issued.cert_path)) == 1
    assert root_issued.cn == "10.0.0.5"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "at least one SAN"),
        ({"dns": ["Bad_Name"]}, "not a lowercase DNS name"),
        ({"ips": ["10.0.0.300"]}, "not an IP address"),
        ({"dns": ["gw"], "issuer": "tenant"}, "not one of"),
        ({"dns": ["gw"], "days": 0}, "at least 1"),
    ],
)
def test_refusals_write_nothing(certs: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(PkiError, match=message):
        issue_gateway_cert(certs, **kwargs)  # type: ignore[arg-type]
    assert not (certs / "gateway.pem").exists() and not (certs / "gateway-key.pem").exists()


def test_no_platform_ca_says_what_to_do(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    init_pki(certs)
    (certs / "platform" / "ca.pem").unlink()
    (certs / "platform" / "ca-key.pem").unlink()
    with pytest.raises(PkiError, match="--issuer root"):
        issue_gateway_cert(certs, dns=["gw"])
    assert issue_gateway_cert(certs, dns=["gw"], issuer="root").issuer == "root"


def test_cli_pki_gateway(certs: Path) -> None:
    done = subprocess.run(
        cli_argv("pki", "gateway", str(certs), "--dns", "gw.example.net", "--ip", "127.0.0.1"),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "SANs         DNS:gw.example.net IP:127.0.0.1" in done.stdout
    assert "PRIVATE" not in done.stdout
    assert gateway_sans(certs / "gateway.pem") == ("DNS:gw.example.net", "IP:127.0.0.1")
    none = subprocess.run(cli_argv("pki", "gateway", str(certs)), capture_output=True, text=True, check=False)
    assert none.returncode == 2 and "at least one SAN" in none.stderr


def test_help_says_what_each_issuer_needs_and_it_is_all_it_needs(tmp_path: Path) -> None:
    shown = subprocess.run(cli_argv("pki", "gateway", "--help"), capture_output=True, text=True, check=False)
    text = " ".join(shown.stdout.split())  # argparse wraps the help
    # It said "must hold a root and platform CA", though --issuer root reads no platform CA.
    assert "with --issuer platform it must hold platform/ca.pem and platform/ca-key.pem" in text
    assert "with --issuer root root.pem and root-key.pem" in text
    # And those files are enough: each issuer from a directory holding only its own pair.
    for issuer, keep in (("platform", "platform"), ("root", "root")):
        certs = tmp_path / issuer
        init_pki(certs)
        gone = ["root.pem", "root-key.pem"] if keep == "platform" else ["platform/ca.pem", "platform/ca-key.pem"]
        for name in gone:
            (certs / name).unlink()
        assert issue_gateway_cert(certs, dns=["gw"], issuer=issuer).issuer == issuer  # type: ignore[arg-type]
