"""`pki revoke` / `pki crl` over a crl.pem that another tool wrote (review 10, t08).

The tenant's crl.pem may come from `openssl ca -gencrl`, with its own number
and revocations revoked.json never heard of. Rewriting it from revoked.json
alone dropped them (the certificate was accepted again by every proof that
remembered no CRL) and restarted the number at 1. Now its entries are carried
over, the number goes on from the higher of the two, and a crl.pem that cannot
be carried over is refused and left as it is. The "openssl" CRLs here are made
with cryptography's builder (tests/crls.py), signed by the tenant CA's key.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from crls import make_crl
from cryptography import x509

from poller import pki
from poller.cli.main import main
from poller.identity.reasons import IdentityRefused, Reason
from poller.pki.ca import load_tenant_authority
from poller.trust.layout import CertsLayout
from poller.trust.store import TrustStore
from poller.trust.verify import verify_agent_chain

ACME = "acme-corp"
OPENSSL_REVOKED_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    directory = tmp_path / "certs"
    pki.init_pki(directory)
    pki.create_tenant_ca(directory, ACME)
    pki.create_tenant_ca(directory, "xyz-inc")
    return directory


def issue(certs: Path, component: str) -> pki.IssuedCertificate:
    return pki.issue_component(certs, tenant=ACME, component_id=component, partition_id="partition-1")


def leaf(issued: pki.IssuedCertificate) -> x509.Certificate:
    return x509.load_pem_x509_certificate(issued.cert_path.read_bytes())


def openssl_style_crl(certs: Path, serials: list[int], *, number: int | None = 13, **kw) -> bytes:
    """A CRL of acme-corp's CA as another tool writes it: its own number, a reason code per entry."""
    ca = load_tenant_authority(certs, ACME)
    kw.setdefault("entry_extensions", [(x509.CRLReason(x509.ReasonFlags.key_compromise), False)])
    return make_crl(ca.cert, ca.key, serials, number=number, this_update=OPENSSL_REVOKED_AT, **kw)


def proof_reason(certs: Path, cert: x509.Certificate) -> Reason | None:
    """What a fresh poller's proof (no remembered CRL state) says of cert."""
    trust = TrustStore(certs)
    try:
        verify_agent_chain([cert], tenant=ACME, trust=trust.snapshot)
    except IdentityRefused as err:
        return err.reason
    return None


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["pki", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_revoke_keeps_the_revocations_and_number_of_a_crl_another_tool_wrote(
    certs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = CertsLayout(certs)
    old, new, good = issue(certs, "agent-001"), issue(certs, "agent-002"), issue(certs, "agent-003")
    layout.tenant_crl(ACME).write_bytes(openssl_style_crl(certs, [leaf(old).serial_number]))
    assert proof_reason(certs, leaf(old)) is Reason.REVOKED

    code, out, _ = cli(capsys, "revoke", str(certs), "--tenant", ACME, str(new.cert_path))
    assert code == 0

    crl = x509.load_pem_x509_crl(layout.tenant_crl(ACME).read_bytes())
    assert crl.is_signature_valid(load_tenant_authority(certs, ACME).cert.public_key())  # type: ignore[arg-type]
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 14
    assert {r.serial_number for r in crl} == {leaf(old).serial_number, leaf(new).serial_number}
    carried = crl.get_revoked_certificate_by_serial_number(leaf(old).serial_number)
    assert carried is not None and carried.revocation_date_utc == OPENSSL_REVOKED_AT
    assert carried.extensions.get_extension_for_class(x509.CRLReason).value.reason is x509.ReasonFlags.key_compromise
    # A fresh poller refuses both; the CA's other certificates still prove.
    assert proof_reason(certs, leaf(old)) is proof_reason(certs, leaf(new)) is Reason.REVOKED
    assert proof_reason(certs, leaf(good)) is None
    assert f"kept 1 revocation(s) of the previous CRL that revoked.json lacked: {old.serial}" in out

    # The carried entry is recorded, so it outlives the crl.pem it came from:
    # an older CRL of this CA put back (#3, listing nothing) loses nothing either.
    state = json.loads(pki.revocation_state_path(layout, ACME).read_text())
    [entry] = [e for e in state["revoked"] if e["serial"] == old.serial]
    assert entry == {
        "serial": old.serial,
        "revoked_at": "2026-01-02T03:04:05Z",
        "reason": "keyCompromise",
        "carried_from": "crl.pem #13",
    }
    layout.tenant_crl(ACME).write_bytes(openssl_style_crl(certs, [], number=3))
    info = pki.write_crl(certs, ACME)
    assert info.number == 15 and set(info.revoked) == {old.serial, new.serial} and info.carried == ()
    assert proof_reason(certs, leaf(old)) is Reason.REVOKED


def test_revoking_a_serial_the_old_crl_already_lists_is_already_revoked(certs: Path) -> None:
    old = issue(certs, "agent-001")
    CertsLayout(certs).tenant_crl(ACME).write_bytes(openssl_style_crl(certs, [leaf(old).serial_number], number=None))
    result = pki.revoke(certs, ACME, old.cert_path)
    assert result.already_revoked and result.carried == (old.serial,)
    crl = x509.load_pem_x509_crl(result.crl_path.read_bytes())
    assert [r.serial_number for r in crl] == [leaf(old).serial_number]
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 1


def _foreign(certs: Path, kind: str) -> bytes:
    acme, xyz = load_tenant_authority(certs, ACME), load_tenant_authority(certs, "xyz-inc")
    serials = [0x1001]
    if kind == "junk":
        return b"-----BEGIN X509 CRL-----\nbm90IGEgQ1JM\n-----END X509 CRL-----\n"
    if kind == "empty":
        return b""
    if kind == "another-tenants-crl":
        return make_crl(xyz.cert, xyz.key, serials, number=13)
    if kind == "acme-name-other-key":  # the issuer name is right, the signature is not
        return make_crl(acme.cert, xyz.key, serials, number=13)
    full = [x509.UniformResourceIdentifier("http://crl.example/acme-1.crl")]
    extension = {
        "delta": x509.DeltaCRLIndicator(12),
        "idp": x509.IssuingDistributionPoint(full, None, False, False, None, False, False),
        "idp-user-certs": x509.IssuingDistributionPoint(None, None, True, False, None, False, False),
    }[kind]
    return make_crl(acme.cert, acme.key, serials, number=13, extensions=[(extension, True)])


@pytest.mark.parametrize(
    ("kind", "why"),
    [
        ("junk", "not a readable PEM or DER CRL"),
        ("empty", "not a readable PEM or DER CRL"),
        ("another-tenants-crl", "not signed by tenant 'acme-corp'"),
        ("acme-name-other-key", "not signed by tenant 'acme-corp'"),
        ("delta", "delta CRL"),
        ("idp", "issuingDistributionPoint"),
        ("idp-user-certs", "issuingDistributionPoint"),
    ],
)
@pytest.mark.parametrize("command", ["revoke", "crl"])
def test_a_crl_pem_that_cannot_be_carried_over_is_refused_and_left_unchanged(
    certs: Path, capsys: pytest.CaptureFixture[str], kind: str, why: str, command: str
) -> None:
    layout = CertsLayout(certs)
    new = issue(certs, "agent-002")
    before = _foreign(certs, kind)
    layout.tenant_crl(ACME).write_bytes(before)
    extra = [str(new.cert_path)] if command == "revoke" else []
    code, out, err = cli(capsys, command, str(certs), "--tenant", ACME, *extra)
    assert code == 2 and out == ""
    assert err.startswith(f"error: {layout.tenant_crl(ACME)}: ") and why in err and "move it away" in err
    assert layout.tenant_crl(ACME).read_bytes() == before
    assert not pki.revocation_state_path(layout, ACME).exists()  # no partial write
    assert sorted(p.name for p in layout.tenant_dir(ACME).iterdir() if p.is_file()) == [
        "ca-chain.pem",
        "ca-key.pem",
        "ca.pem",
        "crl.pem",
    ]


def test_a_regenerated_tenant_ca_replaces_the_old_keys_crl(certs: Path) -> None:
    """`pki tenant --force`: the old crl.pem is signed by the key it replaces; it is replaced, not refused."""
    layout = CertsLayout(certs)
    layout.tenant_crl(ACME).write_bytes(openssl_style_crl(certs, [0x1001]))
    pki.create_tenant_ca(certs, ACME, force=True)
    crl = x509.load_pem_x509_crl(layout.tenant_crl(ACME).read_bytes())
    assert len(crl) == 0 and crl.is_signature_valid(load_tenant_authority(certs, ACME).cert.public_key())  # type: ignore[arg-type]
    assert pki.write_crl(certs, ACME).number == 2
