"""TrustStore: loading a certs directory, refusing bad ones, reload keeping the good state."""

from __future__ import annotations

import shutil
from datetime import UTC

import pytest

from poller.identity.context import TenantContext
from poller.testing.forge import serviceradar_style_dir
from poller.trust.store import TrustStore, TrustStoreError


def test_loads_tenants_and_client(pki):
    trust = TrustStore(pki.directory)
    assert sorted(trust.tenants) == ["acme-corp", "xyz-inc"]
    assert trust.tenant("acme-corp").ca_cn == "tenant-acme-corp.ca.serviceradar"
    assert trust.client.cn == "poller-1.serviceradar"
    # a leaf-only poller.pem gets the platform CA appended for the handshake
    assert trust.client.chain_pem.count(b"BEGIN CERTIFICATE") == 2


def test_serviceradar_style_directory_loads_as_is(tmp_path):
    made = serviceradar_style_dir(tmp_path / "sr", tenants=("acme-corp", "xyz-inc"))
    trust = TrustStore(made.root)
    assert sorted(trust.tenants) == ["acme-corp", "xyz-inc"]
    assert trust.client.cn == "poller.serviceradar"
    assert trust.client.chain_pem.count(b"BEGIN CERTIFICATE") == 1  # signed by the root directly


def test_tenant_ca_in_the_wrong_directory_is_refused(pki):
    moved = pki.layout.tenant_dir("evil")
    shutil.copytree(pki.layout.tenant_dir("acme-corp"), moved)
    with pytest.raises(TrustStoreError) as caught:
        TrustStore(pki.directory)
    assert any("tenants/evil" in p and "acme-corp" in p for p in caught.value.problems)


def test_tenant_ca_not_signed_by_the_root_is_refused(pki, tmp_path):
    other = type(pki).create(tmp_path / "other", tenants=("acme-corp",))
    shutil.copy(other.layout.tenant_ca("acme-corp"), pki.layout.tenant_ca("acme-corp"))
    with pytest.raises(TrustStoreError) as caught:
        TrustStore(pki.directory)
    assert any("root did not sign" in p for p in caught.value.problems)


def test_missing_directory_is_an_error(tmp_path):
    with pytest.raises(TrustStoreError) as caught:
        TrustStore(tmp_path / "nope")
    assert "does not exist" in str(caught.value)


def test_mismatched_client_key_is_refused_without_showing_the_key(pki):
    other_key = pki.layout.tenant_key("acme-corp").read_bytes()
    pki.layout.service_key("poller").write_bytes(other_key)
    with pytest.raises(TrustStoreError) as caught:
        TrustStore(pki.directory)
    assert "does not match" in str(caught.value)
    assert b"PRIVATE KEY" not in str(caught.value).encode()


def test_garbage_key_is_refused_without_echo(pki):
    pki.layout.service_key("poller").write_bytes(
        b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LXNlY3JldA==\n-----END PRIVATE KEY-----\n"
    )
    with pytest.raises(TrustStoreError) as caught:
        TrustStore(pki.directory)
    assert "c2VjcmV0" not in str(caught.value)


def test_reload_with_a_broken_file_keeps_the_material_in_force_for_it(pki):
    trust = TrustStore(pki.directory)
    before = trust.snapshot
    pki.layout.tenant_ca("xyz-inc").write_text("not a certificate")
    pki.revoke("acme-corp", pki.agent("acme-corp", write=True))  # another tenant's change still applies
    report = trust.reload()
    assert any("xyz-inc" in p and "kept the material in force" in p for p in report.problems), report.problems
    assert trust.tenant("xyz-inc") is before.tenants["xyz-inc"]
    assert trust.tenant("acme-corp").crl_loaded and report.changed == ("acme-corp",)


def test_reload_of_a_missing_directory_keeps_everything(pki):
    trust = TrustStore(pki.directory)
    before = trust.snapshot
    shutil.rmtree(pki.directory)
    with pytest.raises(TrustStoreError):
        trust.reload()
    assert trust.snapshot is before


def test_reload_picks_up_a_new_tenant_and_a_crl(pki):
    trust = TrustStore(pki.directory)
    cert = pki.agent("acme-corp", write=True)
    pki.revoke("acme-corp", cert)
    from poller.pki import create_tenant_ca

    create_tenant_ca(pki.directory, "new-tenant")
    trust.reload()
    assert "new-tenant" in trust.tenants
    assert cert.cert.serial_number in trust.tenant("acme-corp").revoked_serials


def test_crl_signed_by_another_ca_is_refused(pki):
    pki.revoke("xyz-inc", pki.agent("xyz-inc", write=True))
    shutil.copy(pki.layout.tenant_crl("xyz-inc"), pki.layout.tenant_crl("acme-corp"))
    with pytest.raises(TrustStoreError) as caught:
        TrustStore(pki.directory)
    assert any("crl.pem" in p and "not signed" in p for p in caught.value.problems)


def test_tenant_context_cannot_be_made_from_strings():
    from datetime import datetime

    now = datetime.now(UTC)
    with pytest.raises(TypeError):
        TenantContext("acme-corp", "agent-001", "p", None, None, "1", "ab", "cd", now, now)


def test_tenants_are_indexed_by_spki(pki):
    trust = TrustStore(pki.directory)
    acme = trust.tenant("acme-corp")
    assert trust.snapshot.tenant_by_spki(acme.spki_sha256) is acme
    assert trust.snapshot.tenant_by_spki("0" * 64) is None


def test_two_tenants_sharing_a_ca_key_are_refused(pki):
    from short_ca import write_twin_tenant_ca

    write_twin_tenant_ca(pki)
    with pytest.raises(TrustStoreError) as caught:
        TrustStore(pki.directory)
    assert "same public key" in str(caught.value)
