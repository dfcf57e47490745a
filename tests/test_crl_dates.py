"""A CRL's dates: one issued in the future (thisUpdate later than now, beyond
the clock skew allowed) is not yet valid and is refused, as OpenSSL refuses
it; its revocations still count when a CRL is in force. One without
nextUpdate is never stale.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from crls import revocation_reason, write_tenant_crl
from test_crl_completeness import reload_logged

from poller.identity.certinfo import utcnow
from poller.identity.reasons import Reason
from poller.trust.serving import CLOCK_SKEW
from poller.trust.snapshot import CrlInForce
from poller.trust.store import TrustStore, TrustStoreError

ACME = "acme-corp"


def test_at_start_a_crl_from_the_future_refuses_the_store(pki):
    now = utcnow()
    write_tenant_crl(pki, ACME, [5], this_update=now + timedelta(days=1), next_update=now + timedelta(days=8))
    with pytest.raises(TrustStoreError) as caught:
        TrustStore(pki.directory)
    [problem] = caught.value.problems
    assert "crl.pem: refused, not yet valid: its thisUpdate" in problem and ACME in problem, problem


def test_a_crl_within_the_clock_skew_is_accepted(pki):
    write_tenant_crl(pki, ACME, [5], number=3, this_update=utcnow() + CLOCK_SKEW - timedelta(minutes=1))
    assert TrustStore(pki.directory).tenant(ACME).crl.number == 3


def test_on_a_reload_a_crl_from_the_future_keeps_the_one_in_force_and_adds_its_revocations(pki, log_events):
    revoked, other = pki.agent(ACME, "agent-001"), pki.agent(ACME, "agent-002")
    write_tenant_crl(pki, ACME, [revoked.cert.serial_number], number=4)
    trust = TrustStore(pki.directory)
    now = utcnow()
    future = dict(this_update=now + timedelta(days=1), next_update=now + timedelta(days=8))
    write_tenant_crl(pki, ACME, [other.cert.serial_number], number=5, **future)
    [line] = reload_logged(trust, log_events)
    assert "not yet valid" in line["problem"] and line["level"] == "error"
    assert trust.tenant(ACME).crl.number == 4
    assert revocation_reason(trust, revoked) is revocation_reason(trust, other) is Reason.REVOKED


def test_a_crl_without_next_update_is_never_stale():
    crl = CrlInForce(serials=frozenset(), number=1, this_update=utcnow(), next_update=None, fingerprint="x")
    assert not crl.stale(utcnow() + timedelta(days=3650))
