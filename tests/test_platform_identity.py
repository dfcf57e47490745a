"""Platform identities: only `<name>.platform.serviceradar` from the platform CA."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from poller.identity.names import InvalidName
from poller.identity.platform import PlatformIdentity, format_platform_cn, parse_platform_cn
from poller.identity.reasons import IdentityRefused, Reason
from poller.pki.authority import load_authority, write_issued
from poller.pki.build import build_certificate, new_key
from poller.server.interceptor import proof_ends
from poller.trust.platform import (
    PlatformAuthority,
    load_platform_authority,
    local_platform_identity,
    platform_not_after,
    verify_platform_chain,
)
from poller.trust.store import TrustStore

ADMIN_CN = "ops-admin.platform.serviceradar"


def admin(pki, **kw):
    return pki.agent("acme-corp", signed_by="platform", cn=ADMIN_CN, spiffe=None, dns=[ADMIN_CN], **kw)


def test_grammar():
    assert parse_platform_cn(ADMIN_CN) == "ops-admin"
    assert format_platform_cn("ops-admin") == ADMIN_CN
    for bad in ("platform.serviceradar", "a.b.platform.serviceradar", "Ops.platform.serviceradar", "x.platform.serviceradar."):
        with pytest.raises(InvalidName):
            parse_platform_cn(bad)
    with pytest.raises(TypeError):
        PlatformIdentity("x", ADMIN_CN, "1", "0", "0", datetime.now(UTC), datetime.now(UTC))  # no proof


def test_an_admin_certificate_from_the_platform_ca_is_proven(pki):
    platform = load_platform_authority(pki.layout)
    identity = verify_platform_chain([admin(pki).cert], platform)
    assert (identity.name, identity.cn, identity.local) == ("ops-admin", ADMIN_CN, False)
    assert identity.issuer_spki_sha256 == platform.spki_sha256


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda pki: pki.agent("acme-corp", signed_by="root", cn=ADMIN_CN, spiffe=None), Reason.UNTRUSTED_CHAIN),
        (lambda pki: pki.agent("acme-corp", cn=ADMIN_CN, spiffe=None), Reason.UNTRUSTED_CHAIN),  # a tenant CA
        (lambda pki: pki.agent("acme-corp", signed_by="self", cn=ADMIN_CN, spiffe=None), Reason.UNTRUSTED_CHAIN),
        (lambda pki: pki.agent("acme-corp", signed_by="platform"), Reason.INVALID_CN),  # an edge name
        (lambda pki: admin(pki, not_after=datetime(2020, 1, 1, tzinfo=UTC)), Reason.EXPIRED),
        (lambda pki: admin(pki, is_ca=True), Reason.BAD_CERTIFICATE),
    ],
)
def test_anything_else_is_refused_with_a_reason(pki, make, reason):
    with pytest.raises(IdentityRefused) as info:
        verify_platform_chain([make(pki).cert], load_platform_authority(pki.layout))
    assert info.value.reason is reason


def test_without_a_platform_ca_nobody_is_an_admin(pki):
    with pytest.raises(IdentityRefused) as info:
        verify_platform_chain([admin(pki).cert], None)
    assert info.value.reason is Reason.UNTRUSTED_CHAIN


def test_the_pollers_own_identity_is_local(pki):
    identity = local_platform_identity(TrustStore(pki.directory).client)
    assert identity.local and identity.cn == "poller-1.serviceradar"


def test_an_admin_proof_ends_with_the_root_above_a_platform_ca_that_outlives_it(pki):
    """A hand-made platform CA may outlive the root that issued it; the TLS
    handshake validates up to the root, so the proof ends at the root's notAfter."""
    root_end = pki.root.cert.not_valid_after_utc
    later = root_end + timedelta(days=30)
    key = new_key()
    cert = build_certificate(
        subject_key=key,
        subject_cn="platform.ca.serviceradar",
        issuer_cert=pki.root.cert,
        issuer_key=pki.root.key,
        not_after=later,
        is_ca=True,
        pathlen=0,
    )
    layout = pki.layout
    write_issued(layout.platform_ca, layout.platform_key, None, cert, key, pki.root.cert)
    pki.platform = load_authority(layout.platform_ca, layout.platform_key, "platform CA")
    leaf = admin(pki, not_after=later)
    platform = PlatformAuthority.from_certificate(cert)
    snapshot = TrustStore(pki.directory).snapshot
    assert platform_not_after(platform, snapshot.root) == root_end
    assert platform_not_after(platform, None) == later  # no root given: the platform CA alone
    assert verify_platform_chain([leaf.cert], platform, now=root_end, root=snapshot.root).name == "ops-admin"
    with pytest.raises(IdentityRefused) as info:
        verify_platform_chain([leaf.cert], platform, now=root_end + timedelta(seconds=1), root=snapshot.root)
    assert info.value.reason is Reason.UNTRUSTED_CHAIN
    assert "the root that issued the platform CA expired" in info.value.detail
    proven = verify_platform_chain([leaf.cert], platform, root=snapshot.root)
    assert proof_ends(proven, snapshot, platform) == root_end.timestamp()
