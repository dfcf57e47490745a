"""The usage a proof asks of a certificate: an agent the poller dials is a TLS
server, a component calling a service (poller.server) a TLS client."""

from __future__ import annotations

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID as Eku

from poller.identity.reasons import IdentityRefused, Reason
from poller.trust import TrustStore, verify_agent_chain


@pytest.mark.parametrize(
    ("ekus", "purpose", "accepted"),
    [
        ([Eku.SERVER_AUTH, Eku.CLIENT_AUTH], "server", True),
        ([Eku.SERVER_AUTH, Eku.CLIENT_AUTH], "client", True),
        ([Eku.CLIENT_AUTH], "server", False),
        ([Eku.CLIENT_AUTH], "client", True),
        ([Eku.SERVER_AUTH], "client", False),
        (None, "client", True),  # no EKU at all: any usage
    ],
)
def test_extended_key_usage_must_fit_the_purpose(pki, ekus, purpose, accepted):
    forged = pki.agent("acme-corp", eku=ekus)
    snapshot = TrustStore(pki.directory).snapshot
    if accepted:
        assert verify_agent_chain([forged.cert], tenant="acme-corp", trust=snapshot, purpose=purpose).tenant == "acme-corp"
    else:
        with pytest.raises(IdentityRefused) as info:
            verify_agent_chain([forged.cert], tenant="acme-corp", trust=snapshot, purpose=purpose)
        assert info.value.reason is Reason.UNTRUSTED_CHAIN
