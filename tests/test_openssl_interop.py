"""Certificates made by another tool (the openssl CLI, as generate-certs.sh
does) work as they are: the trust store loads them and probe accepts the
agent, or refuses it with the right reason."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from spawn import spawn_cli

from poller.testing.mock_agent import MockAgent
from poller.trust.store import TrustStore

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")

ACME = "acme-corp"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def sign(cwd: Path, name: str, subj: str, ca: str, ca_key: str, ext: str, key_args: tuple[str, ...]) -> None:
    (cwd / f"{name}.ext").write_text(ext)
    openssl("req", "-new", *key_args, "-nodes", "-keyout", f"{name}-key.pem", "-out", f"{name}.csr", "-subj", subj, cwd=cwd)
    openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        ca,
        "-CAkey",
        ca_key,
        "-CAcreateserial",
        "-days",
        "30",
        "-sha256",
        "-out",
        f"{name}.pem",
        "-extfile",
        f"{name}.ext",
        cwd=cwd,
    )


def make_dir(root: Path, key_args: tuple[str, ...], ca_key_usage: bool) -> Path:
    """A generate-certs.sh-like tree made by the openssl CLI, with tenant CAs."""
    root.mkdir(parents=True)
    openssl(
        "req",
        "-x509",
        *key_args,
        "-nodes",
        "-keyout",
        "root-key.pem",
        "-out",
        "root.pem",
        "-days",
        "30",
        "-subj",
        "/C=US/O=ServiceRadar/OU=Docker/CN=ServiceRadar Root CA",
        cwd=root,
    )
    sign(
        root,
        "poller",
        "/C=US/O=ServiceRadar/OU=Docker/CN=poller.serviceradar",
        "root.pem",
        "root-key.pem",
        "keyUsage=keyEncipherment,dataEncipherment,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n"
        "subjectAltName=DNS:poller.serviceradar,DNS:localhost,IP:127.0.0.1\n",
        key_args,
    )
    for tenant in (ACME, "xyz-inc"):
        tdir = root / "tenants" / tenant
        (tdir / "components").mkdir(parents=True)
        ca_ext = "basicConstraints=critical,CA:TRUE,pathlen:0\n" + (
            "keyUsage=critical,keyCertSign,cRLSign\n" if ca_key_usage else ""
        )
        sign(
            tdir,
            "ca",
            f"/O=ServiceRadar/CN=tenant-{tenant}.ca.serviceradar",
            "../../root.pem",
            "../../root-key.pem",
            ca_ext,
            key_args,
        )
        cn = f"agent-001.default.{tenant}.serviceradar"
        comp = tdir / "components"
        sign(
            comp,
            "agent-001-default",
            f"/C=US/O=ServiceRadar/OU=Edge/CN={cn}",
            "../ca.pem",
            "../ca-key.pem",
            "basicConstraints=CA:FALSE\nkeyUsage=keyEncipherment,dataEncipherment,digitalSignature\n"
            "extendedKeyUsage=serverAuth,clientAuth\n"
            f"subjectAltName=DNS:{cn},DNS:agent-001.serviceradar,DNS:localhost,IP:127.0.0.1,"
            f"URI:spiffe://serviceradar.local/agent/{tenant}/default\n",
            key_args,
        )
        chain = (comp / "agent-001-default.pem").read_bytes() + (tdir / "ca.pem").read_bytes()
        (comp / "agent-001-default-chain.pem").write_bytes(chain)
    return root


async def probe(address: str, certs: Path, tenant: str) -> tuple[int, dict]:
    proc = await spawn_cli(
        "probe",
        address,
        "--certs",
        str(certs),
        "--tenant",
        tenant,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode, json.loads(out) if out.strip() else {"stderr": err.decode()}


@pytest.mark.parametrize(
    ("key_args", "ca_key_usage"),
    [
        (("-newkey", "rsa:2048"), True),
        (("-newkey", "rsa:2048"), False),
        (("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"), True),
    ],
    ids=["rsa", "rsa-ca-without-keyusage", "ec-p256"],
)
async def test_openssl_made_directory(tmp_path, key_args, ca_key_usage):
    certs = make_dir(tmp_path / "certs", key_args, ca_key_usage)
    trust = TrustStore(certs)
    assert sorted(trust.tenants) == [ACME, "xyz-inc"]
    async with MockAgent.from_certs_dir(certs, ACME, "agent-001", "default") as agent:
        code, doc = await probe(agent.address, certs, ACME)
        assert (code, doc.get("accepted"), doc.get("tenant"), doc.get("component_id")) == (0, True, ACME, "agent-001"), doc
        code, doc = await probe(agent.address, certs, "xyz-inc")
        assert (code, doc["reason"]) == (3, "tenant_mismatch")
