"""poller.testing.forge: the forged certificates have exactly the requested properties."""

from __future__ import annotations

import ipaddress
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import DNSName, PolicyBuilder, Store, VerificationError

from poller import pki
from poller.identity.names import parse_edge_cn, parse_spiffe_id, spiffe_agrees_with
from poller.testing.forge import ForgedCert, ForgePki, serviceradar_style_dir
from poller.trust.layout import CertsLayout

ACME_AGENT = "agent-001.partition-1.acme-corp.serviceradar"
UTC = UTC


def ext(cert: x509.Certificate, cls: type) -> x509.Extension:
    return cert.extensions.get_extension_for_class(cls)


def san(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return ext(cert, x509.SubjectAlternativeName).value


def verify_server(
    anchor: x509.Certificate, forged: ForgedCert, name: str, *, at: datetime | None = None
) -> list[x509.Certificate]:
    builder = PolicyBuilder().store(Store([anchor]))
    if at is not None:
        builder = builder.time(at)
    return builder.build_server_verifier(DNSName(name)).verify(forged.cert, list(forged.intermediates))


def verify_client(anchor: x509.Certificate, forged: ForgedCert) -> None:
    PolicyBuilder().store(Store([anchor])).build_client_verifier().verify(forged.cert, list(forged.intermediates))


@pytest.fixture(scope="module")
def forge(tmp_path_factory: pytest.TempPathFactory) -> ForgePki:
    """One forge for the read-only tests (forging does not touch the directory)."""
    return ForgePki.create(tmp_path_factory.mktemp("forge") / "certs")


# --- the directory and the CAs --------------------------------------------------------------


def test_create_makes_a_real_certs_directory(forge: ForgePki) -> None:
    lay = forge.layout
    assert lay.root_ca.read_bytes() == forge.root_pem
    assert lay.platform_ca.read_bytes() == forge.platform_ca_pem
    assert lay.tenant_ca("acme-corp").read_bytes() == forge.tenant_ca_pem("acme-corp")
    assert lay.tenant_ca("xyz-inc").read_bytes() == forge.tenant_ca_pem("xyz-inc")
    assert forge.tenant_ca("acme-corp").subject.rfc4514_string() == "CN=tenant-acme-corp.ca.serviceradar"
    with pytest.raises(ValueError, match="no tenant 'nobody'"):
        forge.tenant_ca_pem("nobody")


def test_create_is_idempotent_over_an_existing_directory(tmp_path: Path) -> None:
    first = ForgePki.create(tmp_path, tenants=("acme-corp",))
    second = ForgePki.create(tmp_path, tenants=("acme-corp", "new-co"))
    assert second.root_pem == first.root_pem
    assert second.tenant_ca_pem("acme-corp") == first.tenant_ca_pem("acme-corp")
    assert "new-co" in second.tenants


def test_client_identity_is_the_pollers_chain_and_key(forge: ForgePki) -> None:
    chain_pem, key_pem = forge.client_identity()
    chain = x509.load_pem_x509_certificates(chain_pem)
    assert [c.subject.rfc4514_string() for c in chain] == ["CN=poller-1.serviceradar", "CN=platform.ca.serviceradar"]
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert key.public_key() == chain[0].public_key()


# --- honest and forged agents ------------------------------------------------------------------


def test_default_agent_is_an_honest_certificate(forge: ForgePki) -> None:
    good = forge.agent("acme-corp")
    assert good.cn == ACME_AGENT
    assert good.spiffe == "spiffe://serviceradar.local/agent/acme-corp/partition-1/agent-001"
    assert good.cert.subject.rfc4514_string() == f"CN={ACME_AGENT}"
    assert san(good.cert).get_values_for_type(x509.DNSName) == [ACME_AGENT]
    assert san(good.cert).get_values_for_type(x509.UniformResourceIdentifier) == [good.spiffe]
    assert set(ext(good.cert, x509.ExtendedKeyUsage).value) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not ext(good.cert, x509.BasicConstraints).value.ca
    assert isinstance(good.cert.public_key(), ec.EllipticCurvePublicKey)
    assert good.cert_pem == good.leaf_pem == good.cert.public_bytes(serialization.Encoding.PEM)
    assert x509.load_pem_x509_certificates(good.chain_pem) == [good.cert, forge.tenant_ca("acme-corp")]
    assert good.serial_hex == format(good.cert.serial_number, "x")
    assert good.issuer == "tenant:acme-corp"
    assert serialization.load_pem_private_key(good.key_pem, password=None).public_key() == good.cert.public_key()
    assert good.cert_path is None  # in memory only
    assert verify_server(forge.tenant_ca("acme-corp"), good, ACME_AGENT)[-1] == forge.tenant_ca("acme-corp")
    verify_client(forge.tenant_ca("acme-corp"), good)


def test_forging_does_not_touch_the_directory(tmp_path: Path) -> None:
    local = ForgePki.create(tmp_path, tenants=("acme-corp",))
    before = sorted(p for p in tmp_path.rglob("*"))
    local.agent("acme-corp")
    local.agent("acme-corp", signed_by="self", is_ca=True)
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_cross_tenant_impostor(forge: ForgePki) -> None:
    impostor = forge.agent("acme-corp", issuer_tenant="xyz-inc", dns=[])
    assert impostor.cn == ACME_AGENT and impostor.issuer == "tenant:xyz-inc"
    impostor.cert.verify_directly_issued_by(forge.tenant_ca("xyz-inc"))
    assert x509.load_pem_x509_certificates(impostor.chain_pem)[1] == forge.tenant_ca("xyz-inc")
    # Refused with the expected tenant's intermediate as the only anchor ...
    with pytest.raises(VerificationError):
        verify_client(forge.tenant_ca("acme-corp"), impostor)
    # ... and accepted with the platform root as anchor: why the root must never be the anchor.
    verify_client(x509.load_pem_x509_certificate(forge.root_pem), impostor)


def test_san_outside_the_name_constraints_can_be_forged_and_is_refused(forge: ForgePki) -> None:
    forged = forge.agent("acme-corp", issuer_tenant="xyz-inc")  # DNS SAN under acme-corp.serviceradar
    assert san(forged.cert).get_values_for_type(x509.DNSName) == [ACME_AGENT]
    root = x509.load_pem_x509_certificate(forge.root_pem)
    with pytest.raises(VerificationError, match="name constraint"):
        verify_server(root, forged, ACME_AGENT)
    localhost = forge.agent("acme-corp", dns=["localhost"])
    with pytest.raises(VerificationError, match="name constraint"):
        verify_server(forge.tenant_ca("acme-corp"), localhost, "localhost")


def test_expired_and_not_yet_valid(forge: ForgePki) -> None:
    now = datetime.now(UTC)
    expired = forge.agent("acme-corp", not_after=now - timedelta(days=1))
    assert expired.cert.not_valid_after_utc < now
    assert expired.cert.not_valid_before_utc < expired.cert.not_valid_after_utc
    with pytest.raises(VerificationError, match="not valid at validation time"):
        verify_server(forge.tenant_ca("acme-corp"), expired, ACME_AGENT)

    future = forge.agent("acme-corp", not_before=now + timedelta(days=1))
    assert future.cert.not_valid_before_utc > now
    assert future.cert.not_valid_after_utc - future.cert.not_valid_before_utc == timedelta(days=365)
    with pytest.raises(VerificationError, match="not valid at validation time"):
        verify_server(forge.tenant_ca("acme-corp"), future, ACME_AGENT)
    verify_server(forge.tenant_ca("acme-corp"), future, ACME_AGENT, at=now + timedelta(days=2))

    window = forge.agent("acme-corp", not_before=datetime(2030, 1, 1, tzinfo=UTC), not_after=datetime(2030, 1, 2, tzinfo=UTC))
    assert window.cert.not_valid_before_utc == datetime(2030, 1, 1, tzinfo=UTC)
    assert window.cert.not_valid_after_utc == datetime(2030, 1, 2, tzinfo=UTC)


@pytest.mark.parametrize("signer", ["root", "platform", "self"])
def test_other_signers(forge: ForgePki, signer: str) -> None:
    forged = forge.agent("acme-corp", signed_by=signer)  # type: ignore[arg-type]
    chain = x509.load_pem_x509_certificates(forged.chain_pem)
    assert forged.issuer == signer
    if signer == "root":
        forged.cert.verify_directly_issued_by(x509.load_pem_x509_certificate(forge.root_pem))
        assert chain == [forged.cert]
    elif signer == "platform":
        forged.cert.verify_directly_issued_by(x509.load_pem_x509_certificate(forge.platform_ca_pem))
        assert chain == [forged.cert, x509.load_pem_x509_certificate(forge.platform_ca_pem)]
    else:
        assert forged.cert.issuer == forged.cert.subject
        forged.cert.verify_directly_issued_by(forged.cert)
        assert chain == [forged.cert]
    with pytest.raises(VerificationError):
        verify_client(forge.tenant_ca("acme-corp"), forged)


def test_names_can_be_anything(forge: ForgePki) -> None:
    nameless = forge.agent("acme-corp", cn=None, spiffe=None)
    assert nameless.cert.subject == x509.Name([])
    assert nameless.cn is None and nameless.spiffe is None
    with pytest.raises(x509.ExtensionNotFound):
        ext(nameless.cert, x509.SubjectAlternativeName)

    five = "agent-001.extra.partition-1.acme-corp.serviceradar"
    weird = forge.agent("acme-corp", cn=five, spiffe="spiffe://serviceradar.local/agent/xyz-inc/partition-1/agent-001")
    assert weird.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == five
    assert san(weird.cert).get_values_for_type(x509.DNSName) == [five]
    assert weird.spiffe == "spiffe://serviceradar.local/agent/xyz-inc/partition-1/agent-001"

    unicode_cn = forge.agent("acme-corp", cn="agent-001.partition-1.acmé-corp.serviceradar")
    assert unicode_cn.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value.endswith("acmé-corp.serviceradar")
    assert san(unicode_cn.cert).get_values_for_type(x509.DNSName) == []

    star = forge.agent("acme-corp", cn="*.partition-1.acme-corp.serviceradar", dns=["*.acme-corp.serviceradar"], ips=["10.0.0.1"])
    assert san(star.cert).get_values_for_type(x509.DNSName) == ["*.acme-corp.serviceradar"]
    assert san(star.cert).get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.1")]

    three = forge.agent("acme-corp", spiffe="spiffe://serviceradar.local/agent-001/acme-corp/partition-1")
    assert spiffe_agrees_with(parse_spiffe_id(three.spiffe or ""), parse_edge_cn(ACME_AGENT))


def test_ca_flag_key_kind_and_eku(forge: ForgePki) -> None:
    ca_leaf = forge.agent("acme-corp", is_ca=True)
    assert ext(ca_leaf.cert, x509.BasicConstraints).value.ca
    usage = ext(ca_leaf.cert, x509.KeyUsage).value
    assert usage.key_cert_sign and usage.digital_signature  # still loadable as a TLS leaf
    no_ku = forge.agent("acme-corp", key_usage_names=None)
    with pytest.raises(x509.ExtensionNotFound):
        ext(no_ku.cert, x509.KeyUsage)
    with pytest.raises(VerificationError):
        verify_server(forge.tenant_ca("acme-corp"), ca_leaf, ACME_AGENT)

    rsa_leaf = forge.agent("acme-corp", key_kind="rsa")
    assert isinstance(rsa_leaf.cert.public_key(), rsa.RSAPublicKey)
    assert b"PRIVATE KEY" in rsa_leaf.key_pem

    no_eku = forge.agent("acme-corp", eku=None)
    with pytest.raises(x509.ExtensionNotFound):
        ext(no_eku.cert, x509.ExtendedKeyUsage)
    client_only = forge.agent("acme-corp", eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    with pytest.raises(VerificationError):
        verify_server(forge.tenant_ca("acme-corp"), client_only, ACME_AGENT)


def test_longer_chains_through_a_rogue_sub_ca(forge: ForgePki) -> None:
    rogue = forge.agent("acme-corp", "rogue-ca", is_ca=True)
    leaf = forge.agent("acme-corp", "agent-009", signed_by=rogue)
    assert leaf.intermediates == (rogue.cert, forge.tenant_ca("acme-corp"))
    assert x509.load_pem_x509_certificates(leaf.chain_pem) == [leaf.cert, rogue.cert, forge.tenant_ca("acme-corp")]
    assert leaf.issuer == f"forged:{rogue.cn}"
    with pytest.raises(VerificationError, match="path length"):
        verify_server(forge.tenant_ca("acme-corp"), leaf, leaf.cn or "")


def test_bad_signer_is_refused(forge: ForgePki) -> None:
    with pytest.raises(ValueError, match="signed_by"):
        forge.agent("acme-corp", signed_by="nobody")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no tenant"):
        forge.agent("acme-corp", issuer_tenant="nobody")


# --- writing and revoking (own directory) ----------------------------------------------------------------


def test_write_and_revoke(tmp_path: Path) -> None:
    local = ForgePki.create(tmp_path, tenants=("acme-corp", "xyz-inc"))
    lay = CertsLayout(tmp_path)
    written = local.agent("acme-corp", "agent-005", "p2", write=True)
    assert written.cert_path == lay.component_cert("acme-corp", "agent-005", "p2")
    assert written.cert_path.read_bytes() == written.leaf_pem
    assert written.chain_path is not None and written.chain_path.read_bytes() == written.chain_pem
    assert written.key_path is not None and stat.S_IMODE(written.key_path.stat().st_mode) == 0o600

    impostor = local.agent("acme-corp", "agent-666", issuer_tenant="xyz-inc", write=True)
    assert impostor.cert_path == lay.component_cert("xyz-inc", "agent-666", "partition-1")

    revoked = local.revoke("acme-corp", written)
    assert revoked.serial == written.serial_hex
    crl = x509.load_pem_x509_crl(lay.tenant_crl("acme-corp").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(written.cert.serial_number) is not None
    assert crl.is_signature_valid(local.tenant_ca("acme-corp").public_key())  # type: ignore[arg-type]

    in_memory = local.agent("acme-corp")
    local.revoke("acme-corp", in_memory.serial_hex)
    local.revoke("acme-corp", in_memory.cert.serial_number + 1)
    crl = x509.load_pem_x509_crl(lay.tenant_crl("acme-corp").read_bytes())
    assert {r.serial_number for r in crl} == {
        written.cert.serial_number,
        in_memory.cert.serial_number,
        in_memory.cert.serial_number + 1,
    }
    with pytest.raises(pki.PkiError, match="not issued by"):
        local.revoke("acme-corp", impostor)


# --- a directory as generate-certs.sh writes it ----------------------------------------------------------


@pytest.fixture(scope="module")
def sr_dir(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return serviceradar_style_dir(tmp_path_factory.mktemp("sr") / "certs", tenants=("acme-corp", "xyz-inc"))


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_serviceradar_style_root_and_platform_certificates(sr_dir) -> None:  # type: ignore[no-untyped-def]
    lay: CertsLayout = sr_dir.layout
    root = _load(lay.root_ca)
    assert root.subject.rfc4514_string() == "CN=ServiceRadar Root CA,OU=Docker,O=ServiceRadar,L=San Francisco,ST=CA,C=US"
    assert isinstance(root.public_key(), rsa.RSAPublicKey) and root.public_key().key_size == 2048
    assert ext(root, x509.BasicConstraints).value.ca
    with pytest.raises(x509.ExtensionNotFound):
        ext(root, x509.KeyUsage)  # like `openssl req -x509` with the default config

    poller = _load(lay.service_cert("poller"))
    assert sr_dir.services == {"poller": lay.service_cert("poller")}
    poller.verify_directly_issued_by(root)  # signed by the root directly
    assert poller.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "poller.serviceradar"
    assert san(poller).get_values_for_type(x509.DNSName) == ["poller", "poller.serviceradar", "localhost"]
    assert san(poller).get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    with pytest.raises(x509.ExtensionNotFound):
        ext(poller, x509.BasicConstraints)
    ku = ext(poller, x509.KeyUsage).value
    assert ku.key_encipherment and ku.data_encipherment and ku.digital_signature and not ku.key_cert_sign
    assert set(ext(poller, x509.ExtendedKeyUsage).value) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert stat.S_IMODE(lay.service_key("poller").stat().st_mode) == 0o600


def test_serviceradar_style_tenants_and_components(sr_dir) -> None:  # type: ignore[no-untyped-def]
    lay: CertsLayout = sr_dir.layout
    root = _load(lay.root_ca)
    for slug in ("acme-corp", "xyz-inc"):
        ca = _load(lay.tenant_ca(slug))
        ca.verify_directly_issued_by(root)
        bc = ext(ca, x509.BasicConstraints).value
        assert bc.ca and bc.path_length == 0
        with pytest.raises(x509.ExtensionNotFound):
            ext(ca, x509.NameConstraints)
        assert x509.load_pem_x509_certificates(lay.tenant_chain(slug).read_bytes()) == [ca, root]

        cn = f"agent-001.default.{slug}.serviceradar"
        chain = x509.load_pem_x509_certificates(lay.component_chain(slug, "agent-001", "default").read_bytes())
        leaf = chain[0]
        assert chain == [leaf, ca, root]
        assert sr_dir.components[slug] == (lay.component_cert(slug, "agent-001", "default"),)
        assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == cn
        names = san(leaf)
        assert names.get_values_for_type(x509.DNSName) == [cn, "agent-001.serviceradar", "localhost"]
        assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
        uri = names.get_values_for_type(x509.UniformResourceIdentifier)
        assert uri == [f"spiffe://serviceradar.local/agent/{slug}/default"]
        spiffe = parse_spiffe_id(uri[0])
        assert spiffe.component_type is None and spiffe_agrees_with(spiffe, parse_edge_cn(cn))
        bc_ext = ext(leaf, x509.BasicConstraints)
        assert not bc_ext.value.ca and not bc_ext.critical
        ku = ext(leaf, x509.KeyUsage).value
        assert ku.key_encipherment and ku.data_encipherment and ku.digital_signature
        assert isinstance(leaf.public_key(), rsa.RSAPublicKey)

        # The tenant intermediate as the only anchor verifies it ...
        PolicyBuilder().store(Store([ca])).build_server_verifier(DNSName(cn)).verify(leaf, [])
        described = pki.describe_certificate(lay.component_cert(slug, "agent-001", "default"))
        assert described["identity"]["tenant"] == slug and described["identity"]["spiffe_agrees"] is True


def test_cryptography_refuses_a_serviceradar_root_as_anchor(sr_dir) -> None:  # type: ignore[no-untyped-def]
    """A fact worth knowing: generate-certs.sh's root has no keyUsage, and
    cryptography's verifier (CA/B-style policy) refuses it as a trust anchor.
    Per-tenant anchors, which the design requires anyway, are unaffected."""
    lay: CertsLayout = sr_dir.layout
    root, ca = _load(lay.root_ca), _load(lay.tenant_ca("acme-corp"))
    leaf = _load(lay.component_cert("acme-corp", "agent-001", "default"))
    with pytest.raises(VerificationError, match=r"2\.5\.29\.15"):
        PolicyBuilder().store(Store([root])).build_server_verifier(DNSName("agent-001.default.acme-corp.serviceradar")).verify(
            leaf, [ca]
        )


def test_pki_operations_on_a_serviceradar_style_dir(tmp_path: Path) -> None:
    sr = serviceradar_style_dir(tmp_path, tenants=("acme-corp",))
    lay = sr.layout
    # No name constraints on the script's tenant CA: its usual SANs are allowed.
    out = pki.issue_component(
        tmp_path, tenant="acme-corp", component_id="agent-002", partition_id="default", dns=["localhost"], ips=["127.0.0.1"]
    )
    _load(out.cert_path).verify_directly_issued_by(_load(lay.tenant_ca("acme-corp")))
    assert pki.revoke(tmp_path, "acme-corp", lay.component_cert("acme-corp", "agent-001", "default")).serial
    # A new tenant (EC) under the script's RSA root.
    new = pki.create_tenant_ca(tmp_path, "new-co")
    _load(new.cert_path).verify_directly_issued_by(_load(lay.root_ca))
    # init keeps the root and refuses to replace the script's poller.pem.
    root_before = lay.root_ca.read_bytes()
    with pytest.raises(pki.AuthorityExists, match=r"poller\.pem"):
        pki.init_pki(tmp_path)
    assert lay.root_ca.read_bytes() == root_before
