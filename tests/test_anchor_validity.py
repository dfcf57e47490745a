"""A proof holds only while its whole chain is valid: the leaf, its tenant CA,
and the root above that CA. A CA that does not cap its leaves at its own
notAfter (an external or openssl-made one) issues leaves that outlive it; from
the CA's notAfter on they are refused, as the TLS handshake refuses them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from short_ca import tenant_ca_until

from poller.identity.certinfo import utcnow
from poller.identity.reasons import IdentityRefused, Reason
from poller.trust import TrustStore, verify_agent_chain
from poller.trust.verify import anchor_not_after

SHORT = "short-co"


def test_a_leaf_that_outlives_its_tenant_ca_is_refused_from_the_cas_not_after(pki):
    ca_end = utcnow().replace(microsecond=0) + timedelta(hours=1)
    tenant_ca_until(pki, SHORT, ca_end)
    leaf = pki.agent(SHORT, "agent-001")  # a year: outlives its CA
    snapshot = TrustStore(pki.directory).snapshot
    assert anchor_not_after(snapshot.tenants[SHORT], snapshot) == ca_end
    assert verify_agent_chain([leaf.cert], tenant=SHORT, trust=snapshot, now=ca_end).component_id == "agent-001"
    with pytest.raises(IdentityRefused) as info:
        verify_agent_chain([leaf.cert], tenant=SHORT, trust=snapshot, now=ca_end + timedelta(seconds=1))
    assert info.value.reason is Reason.UNTRUSTED_CHAIN
    assert "tenant-short-co.ca.serviceradar expired" in info.value.detail
    assert info.value.vouched is not None and info.value.vouched.component_id == "agent-001"  # whose it is: logged


def test_a_tenant_ca_that_outlives_the_root_is_refused_from_the_roots_not_after(pki):
    root_end = pki.root.cert.not_valid_after_utc
    tenant_ca_until(pki, SHORT, root_end + timedelta(days=30))
    leaf = pki.agent(SHORT, "agent-001", not_after=root_end + timedelta(days=30))
    snapshot = TrustStore(pki.directory).snapshot
    assert anchor_not_after(snapshot.tenants[SHORT], snapshot) == root_end
    with pytest.raises(IdentityRefused) as info:
        verify_agent_chain([leaf.cert], tenant=SHORT, trust=snapshot, now=root_end + timedelta(seconds=1))
    assert info.value.reason is Reason.UNTRUSTED_CHAIN
    assert "the root that issued tenant-short-co.ca.serviceradar expired" in info.value.detail
