"""poller.pki and `serviceradar-poller pki`: real files in tmp_path, EC keys."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import stat
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import DNSName, IPAddress, PolicyBuilder, Store, VerificationError
from hypothesis import given
from hypothesis import strategies as st

from poller import pki
from poller.cli.main import main
from poller.identity.names import InvalidName
from poller.pki.build import build_certificate, new_key
from poller.trust.layout import CertsLayout

ACME_AGENT = "agent-001.partition-1.acme-corp.serviceradar"


# --- helpers & fixtures ----------------------------------------------------------


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def load_all(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def ext(cert: x509.Certificate, cls: type) -> x509.Extension:
    return cert.extensions.get_extension_for_class(cls)


def fingerprint(path: Path) -> str:
    return load(path).fingerprint(hashes.SHA256()).hex()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    """A certs dir with root, platform CA, poller and the acme-corp + xyz-inc CAs."""
    directory = tmp_path / "certs"
    pki.init_pki(directory)
    pki.create_tenant_ca(directory, "acme-corp")
    pki.create_tenant_ca(directory, "xyz-inc")
    return directory


@pytest.fixture
def layout(certs: Path) -> CertsLayout:
    return CertsLayout(certs)


@pytest.fixture
def issued(certs: Path) -> pki.IssuedCertificate:
    return pki.issue_component(certs, tenant="acme-corp", component_id="agent-001", partition_id="partition-1")


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


# --- init ------------------------------------------------------------------------------


def test_init_writes_root_platform_and_poller(tmp_path: Path) -> None:
    result = pki.init_pki(tmp_path / "c", poller_id="7")
    lay = CertsLayout(tmp_path / "c")

    root = load(lay.root_ca)
    assert root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "ServiceRadar Root CA"
    assert root.issuer == root.subject
    assert ext(root, x509.BasicConstraints).value.ca

    platform = load(lay.platform_ca)
    assert platform.subject.rfc4514_string() == "CN=platform.ca.serviceradar"
    assert platform.issuer == root.subject
    bc = ext(platform, x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    platform.verify_directly_issued_by(root)

    assert len(load_all(lay.service_cert("poller"))) == 1  # leaf only
    poller = load(lay.service_cert("poller"))
    assert result.poller_cn == "poller-7.serviceradar"
    assert poller.subject.rfc4514_string() == "CN=poller-7.serviceradar"
    san = ext(poller, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["poller-7.serviceradar"]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://serviceradar.local/poller/poller-7"]
    assert set(ext(poller, x509.ExtendedKeyUsage).value) == {
        ExtendedKeyUsageOID.CLIENT_AUTH,
        ExtendedKeyUsageOID.SERVER_AUTH,
    }
    assert not ext(poller, x509.BasicConstraints).value.ca
    poller.verify_directly_issued_by(platform)
    assert isinstance(poller.public_key(), ec.EllipticCurvePublicKey)

    chain = load_all(result.poller_chain)
    assert chain == [poller, platform]
    assert result.poller_chain == tmp_path / "c" / "poller-chain.pem"
    assert result.poller_serial == format(poller.serial_number, "x")
    assert result.root_fingerprint == fingerprint(lay.root_ca)
    assert result.created and set(result.written) >= {lay.root_ca, lay.root_key, lay.platform_key, result.poller_key}

    # The poller's chain verifies as a TLS client with the platform CA as anchor.
    verified = PolicyBuilder().store(Store([platform])).build_client_verifier().verify(poller, [])
    assert verified.chain[-1] == platform


def test_init_is_idempotent(tmp_path: Path) -> None:
    first = pki.init_pki(tmp_path)
    before = snapshot(tmp_path)
    second = pki.init_pki(tmp_path)
    assert second.root_fingerprint == first.root_fingerprint
    assert second.written == () and not second.created
    assert snapshot(tmp_path) == before


def test_init_adds_missing_pieces_and_rewrites_chain(tmp_path: Path) -> None:
    lay = CertsLayout(tmp_path)
    first = pki.init_pki(tmp_path)
    first.poller_chain.unlink()
    second = pki.init_pki(tmp_path)
    assert second.written == (first.poller_chain,)
    assert second.root_fingerprint == first.root_fingerprint
    assert load_all(first.poller_chain) == [load(lay.service_cert("poller")), load(lay.platform_ca)]


def test_init_exist_ok_false_refuses_and_force_regenerates(certs: Path, layout: CertsLayout) -> None:
    old = fingerprint(layout.root_ca)
    with pytest.raises(pki.AuthorityExists, match="--force"):
        pki.init_pki(certs, exist_ok=False)
    assert fingerprint(layout.root_ca) == old

    result = pki.init_pki(certs, force=True)
    assert fingerprint(layout.root_ca) != old
    assert result.root_fingerprint == fingerprint(layout.root_ca)
    # Tenant CAs issued by the old root are reported, not silently left behind.
    assert result.stale_tenants == ("acme-corp", "xyz-inc")
    assert mode(layout.root_key) == 0o600


def test_init_refuses_inconsistent_state_without_writing(tmp_path: Path) -> None:
    lay = CertsLayout(tmp_path)
    pki.init_pki(tmp_path)
    lay.root_key.unlink()
    before = snapshot(tmp_path)
    with pytest.raises(pki.PkiError, match=r"root-key\.pem is missing"):
        pki.init_pki(tmp_path)
    assert snapshot(tmp_path) == before


def test_init_refuses_a_key_that_does_not_match(tmp_path: Path) -> None:
    lay = CertsLayout(tmp_path)
    pki.init_pki(tmp_path)
    lay.platform_key.write_bytes(lay.root_key.read_bytes())
    with pytest.raises(pki.PkiError, match="not the private key"):
        pki.init_pki(tmp_path)


def test_init_refuses_platform_ca_of_another_root(tmp_path: Path) -> None:
    pki.init_pki(tmp_path / "a")
    pki.init_pki(tmp_path / "b")
    for name in ("root.pem", "root-key.pem"):
        (tmp_path / "b" / name).write_bytes((tmp_path / "a" / name).read_bytes())
    with pytest.raises(pki.AuthorityExists, match="not issued by"):
        pki.init_pki(tmp_path / "b")


def test_init_refuses_another_poller_id_without_force(tmp_path: Path) -> None:
    pki.init_pki(tmp_path, poller_id="1")
    with pytest.raises(pki.AuthorityExists, match=r"poller-1\.serviceradar"):
        pki.init_pki(tmp_path, poller_id="2")
    assert pki.init_pki(tmp_path, poller_id="2", force=True).poller_cn == "poller-2.serviceradar"


def test_init_refuses_bad_poller_id(tmp_path: Path) -> None:
    with pytest.raises(InvalidName):
        pki.init_pki(tmp_path, poller_id="Bad_Id")
    assert not any(tmp_path.iterdir())


# --- file modes and atomic writes --------------------------------------------------------


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077])
def test_key_files_are_0600_and_certs_0644_whatever_the_umask(tmp_path: Path, mask: int, umask: None) -> None:
    os.umask(mask)
    pki.create_dev_pki(tmp_path)
    pki.revoke(
        tmp_path,
        "acme-corp",
        pki.issue_component(tmp_path, tenant="acme-corp", component_id="agent-003", partition_id="partition-1").serial,
    )
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    keys = [p for p in files if p.name.endswith("key.pem")]
    assert len(keys) == 3 + 2 + 5  # root, platform, poller; 2 tenant CAs; 3 agents, impostor, agent-003
    for path in files:
        expected = 0o600 if path.name.endswith("key.pem") else 0o644
        assert mode(path) == expected, path
    assert not [p for p in files if p.name.endswith(".tmp")]


def test_a_private_key_is_never_readable_by_others_while_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The temporary file already has mode 0600 when the first byte is written."""
    from poller import durable
    from poller.pki import files

    seen: list[int] = []
    real_fdopen = os.fdopen

    def spy(fd: int, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_fdopen(fd, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(durable.os, "fdopen", spy)
    files.write_private(tmp_path / "k.pem", b"secret")
    assert seen and all(m & 0o077 == 0 for m in seen)
    assert mode(tmp_path / "k.pem") == 0o600


# --- tenant CA ----------------------------------------------------------------------------


def test_tenant_ca_properties(certs: Path, layout: CertsLayout) -> None:
    root = load(layout.root_ca)
    ca = load(layout.tenant_ca("acme-corp"))
    assert ca.subject.rfc4514_string() == "CN=tenant-acme-corp.ca.serviceradar"
    ca.verify_directly_issued_by(root)

    bc = ext(ca, x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ext(ca, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign and not ku.value.digital_signature
    nc = ext(ca, x509.NameConstraints)
    assert nc.critical
    assert nc.value.permitted_subtrees == [x509.DNSName("acme-corp.serviceradar")]
    assert nc.value.excluded_subtrees is None
    ski = ext(ca, x509.SubjectKeyIdentifier).value
    aki = ext(ca, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ext(root, x509.SubjectKeyIdentifier).value.key_identifier
    assert ski.digest == x509.SubjectKeyIdentifier.from_public_key(ca.public_key()).digest  # type: ignore[arg-type]
    assert ca.not_valid_after_utc <= root.not_valid_after_utc

    assert load_all(layout.tenant_chain("acme-corp")) == [ca, root]
    assert mode(layout.tenant_key("acme-corp")) == 0o600


def test_tenant_ca_rerun_keeps_exist_ok_false_refuses_force_regenerates(certs: Path, layout: CertsLayout) -> None:
    path = layout.tenant_ca("acme-corp")
    old = fingerprint(path)
    kept = pki.create_tenant_ca(certs, "acme-corp")
    assert not kept.created and kept.fingerprint == old == fingerprint(path)

    with pytest.raises(pki.AuthorityExists, match="already has a CA"):
        pki.create_tenant_ca(certs, "acme-corp", exist_ok=False)
    assert fingerprint(path) == old

    new = pki.create_tenant_ca(certs, "acme-corp", force=True)
    assert new.created and new.fingerprint == fingerprint(path) != old
    assert load_all(layout.tenant_chain("acme-corp"))[0] == load(path)


def test_tenant_ca_force_resets_revocations(certs: Path, layout: CertsLayout, issued: pki.IssuedCertificate) -> None:
    pki.revoke(certs, "acme-corp", issued.serial)
    pki.create_tenant_ca(certs, "acme-corp", force=True)
    crl = x509.load_pem_x509_crl(layout.tenant_crl("acme-corp").read_bytes())
    assert len(crl) == 0
    assert crl.is_signature_valid(load(layout.tenant_ca("acme-corp")).public_key())  # type: ignore[arg-type]


def test_tenant_ca_needs_a_root(tmp_path: Path) -> None:
    with pytest.raises(pki.PkiError, match="pki init"):
        pki.create_tenant_ca(tmp_path, "acme-corp")


def test_tenant_ca_of_an_old_root_is_refused_without_force(certs: Path) -> None:
    pki.init_pki(certs, force=True)
    with pytest.raises(pki.AuthorityExists, match="root regenerated"):
        pki.create_tenant_ca(certs, "acme-corp")
    assert pki.create_tenant_ca(certs, "acme-corp", force=True).created


@pytest.mark.parametrize("slug", ["Acme", "acme_corp", "-acme", "acme.corp", "", "a" * 64, "acme corp", "ácme"])
def test_tenant_ca_refuses_invalid_slug(certs: Path, slug: str) -> None:
    with pytest.raises(InvalidName):
        pki.create_tenant_ca(certs, slug)


# --- issue -----------------------------------------------------------------------------------


def test_issue_component_properties(certs: Path, layout: CertsLayout, issued: pki.IssuedCertificate) -> None:
    ca = load(layout.tenant_ca("acme-corp"))
    leaf = load(issued.cert_path)
    assert issued.cert_path == layout.component_cert("acme-corp", "agent-001", "partition-1")
    assert issued.key_path == layout.component_key("acme-corp", "agent-001", "partition-1")
    assert issued.chain_path == layout.component_chain("acme-corp", "agent-001", "partition-1")
    assert issued.cn == ACME_AGENT
    assert re.fullmatch(r"[0-9a-f]+", issued.serial) and int(issued.serial, 16) == leaf.serial_number
    assert issued.spiffe_id == "spiffe://serviceradar.local/agent/acme-corp/partition-1/agent-001"

    assert leaf.subject.rfc4514_string() == f"CN={ACME_AGENT}"
    san = ext(leaf, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [ACME_AGENT]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [issued.spiffe_id]
    assert set(ext(leaf, x509.ExtendedKeyUsage).value) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    bc = ext(leaf, x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = ext(leaf, x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    assert ext(leaf, x509.AuthorityKeyIdentifier).value.key_identifier == ext(ca, x509.SubjectKeyIdentifier).value.digest
    ext(leaf, x509.SubjectKeyIdentifier)
    assert leaf.not_valid_after_utc == issued.not_after
    assert timedelta(days=364) < leaf.not_valid_after_utc - leaf.not_valid_before_utc <= timedelta(days=365)

    assert load_all(issued.chain_path) == [leaf, ca]
    assert len(load_all(issued.cert_path)) == 1
    assert mode(issued.key_path) == 0o600
    key = serialization.load_pem_private_key(issued.key_path.read_bytes(), password=None)
    assert key.public_key() == leaf.public_key()


def test_issued_cert_verifies_with_the_tenant_ca_as_trust_anchor(
    certs: Path, layout: CertsLayout, issued: pki.IssuedCertificate
) -> None:
    ca = load(layout.tenant_ca("acme-corp"))
    leaf = load(issued.cert_path)
    server = PolicyBuilder().store(Store([ca])).build_server_verifier(DNSName(issued.cn))
    assert server.verify(leaf, []) == [leaf, ca]
    client = PolicyBuilder().store(Store([ca])).build_client_verifier().verify(leaf, [])
    assert x509.UniformResourceIdentifier(issued.spiffe_id) in client.subjects  # type: ignore[operator]
    # ... and with the root as anchor plus the intermediate (name constraint satisfied).
    root = load(layout.root_ca)
    PolicyBuilder().store(Store([root])).build_server_verifier(DNSName(issued.cn)).verify(leaf, [ca])
    # Another tenant's CA does not verify it.
    other = load(layout.tenant_ca("xyz-inc"))
    with pytest.raises(VerificationError):
        PolicyBuilder().store(Store([other])).build_server_verifier(DNSName(issued.cn)).verify(leaf, [])


def test_issue_with_extra_names_and_ips(certs: Path, layout: CertsLayout) -> None:
    out = pki.issue_component(
        certs,
        tenant="acme-corp",
        component_id="snmp-1",
        partition_id="site-a",
        component_type="checker",
        days=30,
        dns=["snmp.acme-corp.serviceradar", "acme-corp.serviceradar", "snmp.acme-corp.serviceradar"],
        ips=["127.0.0.1", "::1"],
    )
    leaf = load(out.cert_path)
    san = ext(leaf, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [out.cn, "snmp.acme-corp.serviceradar", "acme-corp.serviceradar"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    assert out.spiffe_id == "spiffe://serviceradar.local/checker/acme-corp/site-a/snmp-1"
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= timedelta(days=30)
    ca = load(layout.tenant_ca("acme-corp"))
    PolicyBuilder().store(Store([ca])).build_server_verifier(IPAddress(ipaddress.ip_address("127.0.0.1"))).verify(leaf, [])
    PolicyBuilder().store(Store([ca])).build_server_verifier(DNSName("snmp.acme-corp.serviceradar")).verify(leaf, [])


@pytest.mark.parametrize("name", ["localhost", "agent-001.serviceradar", "x.xyz-inc.serviceradar", "evilacme-corp.serviceradar"])
def test_issue_refuses_names_outside_the_name_constraint_before_writing(certs: Path, name: str) -> None:
    before = snapshot(certs)
    with pytest.raises(pki.NameNotPermitted, match=re.escape(f"DNS:{name}")):
        pki.issue_component(certs, tenant="acme-corp", component_id="agent-001", partition_id="partition-1", dns=[name])
    assert snapshot(certs) == before


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"component_type": "poller"}, pki.PkiError, "not one of agent, checker, gateway, sync"),
        ({"component_type": "Agent"}, pki.PkiError, "component type"),
        ({"tenant": "nobody"}, pki.PkiError, "has no CA"),
        ({"component_id": "Agent-001"}, InvalidName, "component id"),
        ({"partition_id": "p.1"}, InvalidName, "partition id"),
        ({"tenant": "acme_corp"}, InvalidName, "tenant slug"),
        ({"days": 0}, pki.PkiError, "days"),
        ({"dns": ["UPPER.acme-corp.serviceradar"]}, pki.PkiError, "not a lowercase DNS name"),
        ({"dns": ["*.acme-corp.serviceradar"]}, pki.PkiError, "not a lowercase DNS name"),
        ({"ips": ["999.1.1.1"]}, pki.PkiError, "not an IP address"),
    ],
)
def test_issue_refusals(certs: Path, kwargs: dict, error: type[Exception], message: str) -> None:
    args = {"tenant": "acme-corp", "component_id": "agent-001", "partition_id": "partition-1", **kwargs}
    before = snapshot(certs)
    with pytest.raises(error, match=message):
        pki.issue_component(certs, **args)
    assert snapshot(certs) == before


def test_issue_is_capped_at_the_tenant_ca_expiry(certs: Path, layout: CertsLayout) -> None:
    out = pki.issue_component(certs, tenant="acme-corp", component_id="agent-001", partition_id="p", days=100_000)
    assert out.not_after == load(layout.tenant_ca("acme-corp")).not_valid_after_utc


def test_issue_on_a_tenant_ca_without_name_constraints_allows_any_dns(tmp_path: Path) -> None:
    """A ServiceRadar-style tenant CA (no NameConstraints) accepts localhost."""
    lay = CertsLayout(tmp_path)
    pki.init_pki(tmp_path)
    root = pki.load_root(tmp_path)
    key = new_key()
    ca = build_certificate(
        subject_key=key,
        subject_cn="tenant-open.ca.serviceradar",
        issuer_cert=root.cert,
        issuer_key=root.key,
        is_ca=True,
        pathlen=0,
    )
    lay.tenant_dir("open").mkdir(parents=True)
    lay.tenant_ca("open").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    lay.tenant_key("open").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    out = pki.issue_component(tmp_path, tenant="open", component_id="a", partition_id="b", dns=["localhost"])
    assert "localhost" in ext(load(out.cert_path), x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


def test_check_names_permitted_semantics() -> None:
    key = new_key()
    ca = build_certificate(
        subject_key=key,
        subject_cn="c",
        is_ca=True,
        extra_extensions=[
            (
                x509.NameConstraints(
                    permitted_subtrees=[x509.DNSName("a.example"), x509.IPAddress(ipaddress.ip_network("10.0.0.0/8"))],
                    excluded_subtrees=[x509.DNSName("bad.a.example")],
                ),
                True,
            )
        ],
    )
    pki.check_names_permitted(
        ca, dns=["a.example", "x.a.example"], ips=[ipaddress.ip_address("10.1.2.3")], uris=["spiffe://anything/at/all"]
    )
    for kwargs in (
        {"dns": ["b.example"]},
        {"dns": ["x.bad.a.example"]},
        {"dns": ["xa.example"]},
        {"ips": [ipaddress.ip_address("11.0.0.1")]},
        {"ips": [ipaddress.ip_address("::1")]},
    ):
        with pytest.raises(pki.NameNotPermitted):
            pki.check_names_permitted(ca, **kwargs)  # type: ignore[arg-type]


# --- revoke / crl ----------------------------------------------------------------------------


def test_revoke_by_certificate_file_writes_a_crl_signed_by_the_tenant_ca(
    certs: Path, layout: CertsLayout, issued: pki.IssuedCertificate
) -> None:
    result = pki.revoke(certs, "acme-corp", str(issued.cert_path))
    assert result.serial == issued.serial and not result.already_revoked
    assert result.crl_path == layout.tenant_crl("acme-corp")
    crl = x509.load_pem_x509_crl(result.crl_path.read_bytes())
    ca = load(layout.tenant_ca("acme-corp"))
    assert crl.issuer == ca.subject
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert not crl.is_signature_valid(load(layout.root_ca).public_key())  # type: ignore[arg-type]
    entry = crl.get_revoked_certificate_by_serial_number(int(issued.serial, 16))
    assert entry is not None
    assert crl.next_update_utc is not None
    assert timedelta(days=6) < crl.next_update_utc - crl.last_update_utc <= timedelta(days=7)
    assert ext(crl, x509.AuthorityKeyIdentifier).value.key_identifier == ext(ca, x509.SubjectKeyIdentifier).value.digest  # type: ignore[arg-type]
    assert mode(result.crl_path) == 0o644

    state = json.loads(pki.revocation_state_path(layout, "acme-corp").read_text())
    assert state["revoked"][0]["serial"] == issued.serial
    assert state["revoked"][0]["cn"] == ACME_AGENT
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", state["revoked"][0]["revoked_at"])


@pytest.mark.parametrize("form", ["plain", "0x", "0X-upper", "colons"])
def test_revoke_by_serial_in_any_hex_form(certs: Path, issued: pki.IssuedCertificate, form: str) -> None:
    serial = issued.serial
    text = {
        "plain": serial,
        "0x": "0x" + serial,
        "0X-upper": "0X" + serial.upper(),
        "colons": ":".join(
            serial.zfill(len(serial) + len(serial) % 2)[i : i + 2] for i in range(0, len(serial) + len(serial) % 2, 2)
        ),
    }[form]
    assert pki.revoke(certs, "acme-corp", text).serial == serial
    again = pki.revoke(certs, "acme-corp", issued.cert_path)
    assert again.already_revoked
    crl = x509.load_pem_x509_crl(again.crl_path.read_bytes())
    assert [r.serial_number for r in crl] == [int(serial, 16)]


def test_revoke_refusals(certs: Path, layout: CertsLayout, issued: pki.IssuedCertificate, tmp_path: Path) -> None:
    other = pki.issue_component(certs, tenant="xyz-inc", component_id="agent-007", partition_id="site-b")
    with pytest.raises(pki.PkiError, match="not issued by tenant 'acme-corp'"):
        pki.revoke(certs, "acme-corp", other.cert_path)
    for bad in ("not-a-serial", "0x", "", "12:zz"):
        with pytest.raises(pki.PkiError, match="neither a hex serial"):
            pki.revoke(certs, "acme-corp", bad)
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    with pytest.raises(pki.NotACertificate):
        pki.revoke(certs, "acme-corp", junk)
    with pytest.raises(pki.PkiError, match="has no CA"):
        pki.revoke(certs, "nobody", issued.serial)
    assert not layout.tenant_crl("acme-corp").exists()


def test_write_crl_numbers_increase_and_empty_crl_is_valid(certs: Path, layout: CertsLayout) -> None:
    first = pki.write_crl(certs, "acme-corp", days=2)
    second = pki.write_crl(certs, "acme-corp")
    assert (first.number, second.number) == (1, 2)
    crl = x509.load_pem_x509_crl(second.path.read_bytes())
    assert len(crl) == 0 and crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
    assert crl.is_signature_valid(load(layout.tenant_ca("acme-corp")).public_key())  # type: ignore[arg-type]
    assert first.next_update < second.next_update


@given(st.integers(min_value=1, max_value=2**159))
def test_parse_serial_round_trips(serial: int) -> None:
    text = format(serial, "x")
    padded = text.zfill(len(text) + len(text) % 2)
    assert pki.parse_serial(text) == serial
    assert pki.parse_serial("0x" + text.upper()) == serial
    assert pki.parse_serial(":".join(padded[i : i + 2] for i in range(0, len(padded), 2))) == serial


# --- describe ----------------------------------------------------------------------------------

RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def test_describe_edge_certificate(issued: pki.IssuedCertificate) -> None:
    info = pki.describe_certificate(issued.cert_path)
    leaf = load(issued.cert_path)
    assert info["subject_cn"] == ACME_AGENT
    assert info["identity"] == {
        "kind": "edge",
        "tenant": "acme-corp",
        "component_id": "agent-001",
        "partition_id": "partition-1",
        "spiffe_agrees": True,
    }
    assert info["spiffe_ids"] == [issued.spiffe_id]
    assert info["dns_names"] == [ACME_AGENT]
    assert info["issuer_cn"] == "tenant-acme-corp.ca.serviceradar"
    assert info["serial"] == issued.serial
    assert RFC3339.fullmatch(info["not_before"]) and RFC3339.fullmatch(info["not_after"])
    assert info["not_after"] == leaf.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert info["sha256_fingerprint"] == leaf.fingerprint(hashes.SHA256()).hex()
    assert re.fullmatch(r"[0-9a-f]{64}", info["spki_sha256"])
    assert info["is_ca"] is False
    json.dumps(info)


def test_describe_tenant_ca_root_and_foreign_certificates(certs: Path, layout: CertsLayout, tmp_path: Path) -> None:
    ca = pki.describe_certificate(layout.tenant_chain("acme-corp"))
    assert ca["identity"] == {"kind": "tenant_ca", "tenant": "acme-corp"}
    assert ca["is_ca"] is True and ca["path_length"] == 0 and ca["chain_length"] == 2
    root = pki.describe_certificate(layout.root_ca)
    assert root["identity"] == {} and root["issuer_cn"] == "ServiceRadar Root CA"

    key = new_key("ec")
    foreign = build_certificate(
        subject_key=key, subject_cn="www.example.com", dns=["www.example.com"], uris=["https://example.com/"]
    )
    der = tmp_path / "foreign.der"
    der.write_bytes(foreign.public_bytes(serialization.Encoding.DER))
    info = pki.describe_certificate(der)
    assert info["identity"] == {} and info["spiffe_ids"] == [] and info["subject_cn"] == "www.example.com"

    nameless = build_certificate(subject_key=key, subject_cn=None, dns=["x.example"])
    (tmp_path / "nameless.pem").write_bytes(nameless.public_bytes(serialization.Encoding.PEM))
    assert pki.describe_certificate(tmp_path / "nameless.pem")["subject_cn"] is None

    # An edge CN whose SPIFFE ID names another tenant is described, with the disagreement.
    liar = build_certificate(
        subject_key=key, subject_cn=ACME_AGENT, uris=["spiffe://serviceradar.local/agent/xyz-inc/partition-1/agent-001"]
    )
    (tmp_path / "liar.pem").write_bytes(liar.public_bytes(serialization.Encoding.PEM))
    assert pki.describe_certificate(tmp_path / "liar.pem")["identity"]["spiffe_agrees"] is False


def test_describe_refuses_what_is_not_a_certificate(certs: Path, layout: CertsLayout, tmp_path: Path) -> None:
    (tmp_path / "text.pem").write_text("just text\n")
    (tmp_path / "broken.pem").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    for path in (tmp_path / "text.pem", tmp_path / "broken.pem", layout.root_key, tmp_path):
        with pytest.raises(pki.NotACertificate):
            pki.describe_certificate(path)
    with pytest.raises(pki.PkiError, match="no such file"):
        pki.describe_certificate(tmp_path / "missing.pem")


def test_errors_never_carry_key_material(certs: Path, layout: CertsLayout) -> None:
    with pytest.raises(pki.PkiError) as caught:
        pki.describe_certificate(layout.root_key)
    assert "PRIVATE" not in str(caught.value)
    secret = layout.root_key.read_bytes().decode().splitlines()[1]
    assert secret not in str(caught.value)


# --- dev PKI ---------------------------------------------------------------------------------------


def test_create_dev_pki(tmp_path: Path) -> None:
    lay = CertsLayout(tmp_path)
    dev = pki.create_dev_pki(tmp_path)
    assert [c.cn for c in dev.components] == [
        "agent-001.partition-1.acme-corp.serviceradar",
        "agent-002.partition-1.acme-corp.serviceradar",
        "agent-007.site-b.xyz-inc.serviceradar",
    ]
    assert dev.components[2].cert_path == lay.component_cert("xyz-inc", "agent-007", "site-b")
    assert set(dev.tenants) == {"acme-corp", "xyz-inc"}

    assert dev.impostor is not None
    imp_path = tmp_path / "tenants/xyz-inc/components/impostor-agent-666-partition-1.pem"
    assert dev.impostor.cert_path == imp_path
    assert (tmp_path / "tenants/xyz-inc/components/impostor-agent-666-partition-1-key.pem").exists()
    assert (tmp_path / "tenants/xyz-inc/components/impostor-agent-666-partition-1-chain.pem").exists()
    impostor = load(imp_path)
    xyz, acme = load(lay.tenant_ca("xyz-inc")), load(lay.tenant_ca("acme-corp"))
    impostor.verify_directly_issued_by(xyz)
    assert impostor.subject.rfc4514_string() == "CN=agent-666.partition-1.acme-corp.serviceradar"
    san = ext(impostor, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == []
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://serviceradar.local/agent/acme-corp/partition-1/agent-666"
    ]
    # The impostor is exactly what per-tenant anchors stop ...
    with pytest.raises(VerificationError):
        PolicyBuilder().store(Store([acme])).build_client_verifier().verify(impostor, [])
    # ... and what the platform root as anchor lets through (invariant 2 of docs/design.md).
    root = load(lay.root_ca)
    PolicyBuilder().store(Store([root])).build_client_verifier().verify(impostor, [xyz])

    for component in dev.components:
        PolicyBuilder().store(Store([load(lay.tenant_ca(component.tenant))])).build_server_verifier(DNSName(component.cn)).verify(
            load(component.cert_path), []
        )


def test_create_dev_pki_is_idempotent(tmp_path: Path) -> None:
    first = pki.create_dev_pki(tmp_path)
    before = snapshot(tmp_path)
    second = pki.create_dev_pki(tmp_path)
    assert snapshot(tmp_path) == before
    assert [c.serial for c in second.components] == [c.serial for c in first.components]
    assert not any(c.created for c in second.components)
    assert second.impostor is not None and not second.impostor.created
    assert second.init.root_fingerprint == first.init.root_fingerprint


def test_create_dev_pki_reissues_components_of_a_regenerated_tenant_ca(tmp_path: Path) -> None:
    first = pki.create_dev_pki(tmp_path)
    pki.create_tenant_ca(tmp_path, "acme-corp", force=True)
    second = pki.create_dev_pki(tmp_path)
    assert [c.created for c in second.components] == [True, True, False]
    assert second.components[0].serial != first.components[0].serial


def test_create_dev_pki_custom_agents(tmp_path: Path) -> None:
    dev = pki.create_dev_pki(tmp_path, tenants=("solo",), agents={"solo": [("gw-1", "edge")]})
    assert [c.cn for c in dev.components] == ["gw-1.edge.solo.serviceradar"]
    assert dev.impostor is None
    with pytest.raises(pki.PkiError, match="not in tenants"):
        pki.create_dev_pki(tmp_path, tenants=("solo",), agents={"other": []})


# --- CLI -------------------------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["pki", *argv])
    out, err = capsys.readouterr()
    assert "PRIVATE KEY" not in out + err
    return code, out, err


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main(["pki", *argv])
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_cli_full_round(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path / "certs")
    lay = CertsLayout(Path(d))

    code, out, _ = run(capsys, "init", d, "--poller-id", "3")
    assert code == 0 and "poller-3.serviceradar" in out and str(lay.root_ca) in out and "created" in out
    root_fp = fingerprint(lay.root_ca)

    code, out, _ = run(capsys, "init", d, "--poller-id", "3")
    assert code == 0 and "kept" in out and "nothing written" in out
    assert fingerprint(lay.root_ca) == root_fp

    code, out, _ = run(capsys, "tenant", d, "acme-corp")
    assert code == 0 and "tenant-acme-corp.ca.serviceradar" in out and str(lay.tenant_ca("acme-corp")) in out

    code, out, _ = run(
        capsys,
        "issue",
        d,
        "--tenant",
        "acme-corp",
        "--component",
        "agent-001",
        "--partition",
        "partition-1",
        "--dns",
        "a.acme-corp.serviceradar",
        "--dns",
        "b.acme-corp.serviceradar",
        "--ip",
        "127.0.0.1",
        "--type",
        "gateway",
        "--days",
        "10",
    )
    assert code == 0
    cert_path = lay.component_cert("acme-corp", "agent-001", "partition-1")
    leaf = load(cert_path)
    serial = format(leaf.serial_number, "x")
    assert ACME_AGENT in out and serial in out and str(cert_path) in out
    assert "spiffe://serviceradar.local/gateway/acme-corp/partition-1/agent-001" in out
    san = ext(leaf, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [ACME_AGENT, "a.acme-corp.serviceradar", "b.acme-corp.serviceradar"]

    code, out, _ = run(capsys, "revoke", d, "--tenant", "acme-corp", str(cert_path))
    assert code == 0 and serial in out and "revoked" in out
    crl = x509.load_pem_x509_crl(lay.tenant_crl("acme-corp").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None

    code, out, _ = run(capsys, "revoke", d, "--tenant", "acme-corp", "0x" + serial)
    assert code == 0 and "already revoked" in out

    code, out, _ = run(capsys, "crl", d, "--tenant", "acme-corp", "--days", "3")
    assert code == 0 and "1 revoked" in out and serial in out

    code, out, _ = run(capsys, "show", str(cert_path))
    assert code == 0
    shown = json.loads(out)
    assert shown["serial"] == serial and shown["identity"]["tenant"] == "acme-corp"

    for path in Path(d).rglob("*key.pem"):
        assert mode(path) == 0o600


def test_cli_tenant_without_force_keeps_with_force_regenerates(
    certs: Path, layout: CertsLayout, capsys: pytest.CaptureFixture[str]
) -> None:
    old = fingerprint(layout.tenant_ca("acme-corp"))
    code, out, _ = run(capsys, "tenant", str(certs), "acme-corp")
    assert code == 0 and "kept" in out and "--force" in out
    assert fingerprint(layout.tenant_ca("acme-corp")) == old
    code, out, _ = run(capsys, "tenant", str(certs), "acme-corp", "--force")
    assert code == 0 and "created" in out
    assert fingerprint(layout.tenant_ca("acme-corp")) != old


def test_cli_init_force_warns_about_stale_tenants(certs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "init", str(certs), "--force")
    assert code == 0
    assert "warning: tenant CA 'acme-corp'" in err and "--force" in err


def test_cli_errors_exit_2_with_a_message(certs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.txt"
    junk.write_text("not a certificate")
    code, out, err = run(capsys, "show", str(junk))
    assert code == 2 and out == "" and err.startswith("error: ") and "junk.txt" in err

    code, _, err = run(capsys, "show", str(tmp_path / "missing.pem"))
    assert code == 2 and "no such file" in err

    code, _, err = run(
        capsys,
        "issue",
        str(certs),
        "--tenant",
        "acme-corp",
        "--component",
        "agent-001",
        "--partition",
        "p1",
        "--dns",
        "localhost",
    )
    assert code == 2 and "error: DNS:localhost not permitted" in err
    assert not CertsLayout(certs).component_cert("acme-corp", "agent-001", "p1").exists()

    code, _, err = run(capsys, "issue", str(certs), "--tenant", "nobody", "--component", "a", "--partition", "b")
    assert code == 2 and "has no CA" in err

    code, _, err = run(capsys, "tenant", str(tmp_path / "empty"), "acme-corp")
    assert code == 2 and "pki init" in err

    code, _, err = run(capsys, "revoke", str(certs), "--tenant", "acme-corp", "zzz")
    assert code == 2 and "neither a hex serial" in err

    code, _, err = run(capsys, "show", str(CertsLayout(certs).root_key))
    assert code == 2 and "error:" in err


@pytest.mark.parametrize(
    "argv",
    [
        ("tenant", "{d}", "Acme-Corp"),
        ("tenant", "{d}", "acme_corp"),
        ("issue", "{d}", "--tenant", "acme.corp", "--component", "a", "--partition", "b"),
        ("issue", "{d}", "--tenant", "acme-corp", "--component", "-a", "--partition", "b"),
        ("issue", "{d}", "--tenant", "acme-corp", "--component", "a", "--partition", "B"),
        ("issue", "{d}", "--tenant", "acme-corp", "--component", "a", "--partition", "b", "--type", "poller"),
        ("issue", "{d}", "--tenant", "acme-corp", "--component", "a", "--partition", "b", "--days", "0"),
        ("issue", "{d}", "--tenant", "acme-corp", "--component", "a"),
        ("revoke", "{d}", "--tenant", "ACME", "01"),
        ("crl", "{d}", "--tenant", ""),
        ("init", "{d}", "--poller-id", "x y"),
        (),
    ],
)
def test_cli_invalid_usage_exits_2(certs: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> None:
    before = snapshot(certs)
    err = usage_error(capsys, *(a.format(d=certs) for a in argv))
    assert "error" in err
    assert snapshot(certs) == before


def test_cli_init_refusal_exits_2(certs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "init", str(certs), "--poller-id", "9")
    assert code == 2 and "error: " in err and "--force" in err


@pytest.mark.parametrize("sub", [(), ("init",), ("tenant",), ("issue",), ("revoke",), ("crl",), ("show",), ("dev",)])
def test_cli_help(capsys: pytest.CaptureFixture[str], sub: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["pki", *sub, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: serviceradar-poller pki" in out and len(out) > 200


def test_cli_dev(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "dev", str(tmp_path))
    assert code == 0
    assert "agent-002.partition-1.acme-corp.serviceradar" in out
    assert "impostor" in out and "agent-666.partition-1.acme-corp.serviceradar" in out
    before = snapshot(tmp_path)
    code, out, _ = run(capsys, "dev", str(tmp_path))
    assert code == 0 and "created" not in out
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("offset_days", "validity", "warning"),
    [(-10, "expired", "expired at"), (10, "not_yet_valid", "is not valid before"), (0, "valid", None)],
)
def test_cli_show_says_when_a_certificate_is_outside_its_validity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], offset_days: int, validity: str, warning: str | None
) -> None:
    from datetime import timedelta

    from poller.identity.certinfo import utcnow
    from poller.testing.forge import ForgePki

    forge = ForgePki.create(tmp_path / "certs", tenants=("acme-corp",))
    start = utcnow() + timedelta(days=offset_days) - timedelta(days=1)
    cert = forge.agent("acme-corp", not_before=start, not_after=start + timedelta(days=2))
    path = tmp_path / "agent.pem"
    path.write_bytes(cert.leaf_pem)
    code, out, err = run(capsys, "show", str(path))
    assert code == 0 and json.loads(out)["validity"] == validity
    if warning is None:
        assert err == ""
    else:
        assert f"warning: {path}: the certificate {warning}" in err
