"""Platform identities: only `<name>.platform.serviceradar` from the platform CA."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from poller.identity.names import InvalidName
from poller.identity.platform import PlatformIdentity, format_platform_cn, parse_platform_cn
from poller.identity.reasons import IdentityRefused, Reason
from poller.trust.platform import load_platform_authority, local_platform_identity, verify_platform_chain
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
