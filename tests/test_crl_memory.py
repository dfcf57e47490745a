"""Revocations are never rolled back (issue 18 items 11 and 12).

11: the newest CRL is remembered per tenant and CA key, across a reload that
    misses ca.pem and, with a state file, across restarts.
12: a CRL signed by the tenant's CA that is refused as older still has its
    revocations applied (the newer CRL's validity stays), and the refusal
    says what was compared.

Real TrustStores over ForgePki directories; CRLs from tests/crls.py.
"""

from __future__ import annotations

import base64
import json
import shutil
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from crls import make_crl, revocation_reason, tenant_crl, write_tenant_crl

from poller.identity.certinfo import utcnow
from poller.identity.reasons import Reason
from poller.pki.authority import create_tenant_ca, load_tenant_authority
from poller.testing.forge import ForgePki
from poller.trust.store import TrustStore, TrustStoreError

ACME = "acme-corp"
PING = {"service_type": "icmp", "service_name": "ping"}


# ---------------------------------------------------------------- item 11


def test_a_reload_without_ca_pem_does_not_forget_the_crl_in_force(pki):
    revoked = pki.agent(ACME)
    write_tenant_crl(pki, ACME, [revoked.cert.serial_number], number=5)
    trust = TrustStore(pki.directory)
    ca = pki.layout.tenant_ca(ACME)
    ca_pem = ca.read_bytes()
    ca.unlink()  # a non-atomic replacement of tenants/acme-corp/
    assert trust.reload().removed == (ACME,)
    ca.write_bytes(ca_pem)
    write_tenant_crl(pki, ACME, [], number=3)  # older, without the revocation
    report = trust.reload()
    assert report.added == (ACME,)
    assert any("rollback" in p and "CRL number 3 is below the CRL in force's number 5" in p for p in report.problems)
    assert trust.tenant(ACME).crl.number == 5
    assert revocation_reason(trust, revoked) is Reason.REVOKED


def test_a_restart_does_not_roll_back_with_a_state_file(pki, tmp_path):
    revoked = pki.agent(ACME)
    state = tmp_path / "state" / "crl-state.json"
    write_tenant_crl(pki, ACME, [revoked.cert.serial_number], number=5)
    TrustStore(pki.directory, crl_state=state)
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    [entry] = json.loads(state.read_text())["crls"]
    assert (entry["tenant"], entry["number"]) == (ACME, 5)

    write_tenant_crl(pki, ACME, [], number=3)  # put back an older CRL, then restart
    restarted = TrustStore(pki.directory, crl_state=state)  # starts: the remembered CRL is in force
    assert restarted.tenant(ACME).crl.number == 5
    assert any("rollback" in p for p in restarted.snapshot.refused)
    assert revocation_reason(restarted, revoked) is Reason.REVOKED
    # Without the state file a fresh store has nothing to compare with (the library default).
    assert revocation_reason(TrustStore(pki.directory), revoked) is None

    pki.layout.tenant_crl(ACME).unlink()  # no crl.pem at all after a restart: still revoked
    assert revocation_reason(TrustStore(pki.directory, crl_state=state), revoked) is Reason.REVOKED


def test_a_newer_crl_and_another_ca_key_are_remembered_separately(pki, tmp_path):
    state = tmp_path / "crl-state.json"
    write_tenant_crl(pki, ACME, [7], number=5)
    trust = TrustStore(pki.directory, crl_state=state)
    write_tenant_crl(pki, ACME, [7, 8], number=6)
    assert not trust.reload().problems
    assert json.loads(state.read_text())["crls"][0]["number"] == 6
    # A new CA key for the tenant starts afresh: its own CRL #1 is not "older" than the old key's #6.
    shutil.rmtree(pki.layout.tenant_dir(ACME))
    create_tenant_ca(pki.layout, ACME)  # the same root, a new key
    rotated = load_tenant_authority(pki.layout, ACME)
    pki.layout.tenant_crl(ACME).write_bytes(make_crl(rotated.cert, rotated.key, [9], number=1))
    report = trust.reload()
    assert not report.problems and trust.tenant(ACME).crl.number == 1
    assert len(json.loads(state.read_text())["crls"]) == 2  # one per (tenant, CA key)


def test_an_unusable_state_file_refuses_the_start_with_its_name(pki, tmp_path):
    state = tmp_path / "crl-state.json"
    state.write_text("{not json")
    with pytest.raises(TrustStoreError) as caught:
        TrustStore(pki.directory, crl_state=state)
    assert str(state) in str(caught.value)
    # An entry whose CRL this tenant's CA did not sign (an edited file) is refused too.
    rogue = ForgePki.create(tmp_path / "rogue", tenants=(ACME,))
    write_tenant_crl(pki, ACME, [7], number=1)
    TrustStore(pki.directory, crl_state=state.with_name("ok.json"))
    doc = json.loads(state.with_name("ok.json").read_text())
    forged = TrustStore.from_pem(tenants={ACME: rogue.tenant_ca_pem(ACME)}, crls={ACME: tenant_crl(rogue, ACME, [], number=99)})
    doc["crls"][0]["crl_der_b64"] = base64.b64encode(forged.tenant(ACME).crl.der).decode()
    state.write_text(json.dumps(doc))
    with pytest.raises(TrustStoreError) as caught:
        TrustStore(pki.directory, crl_state=state)
    assert "not signed" in str(caught.value) and str(state) in str(caught.value)


# ---------------------------------------------------------------- item 12


def test_a_backdated_numbered_crl_after_an_unnumbered_one_still_revokes(pki):
    """The review's case: the CRL in force has no number; the CA's next one has
    number 2 and a thisUpdate a minute earlier (backdated for clock skew)."""
    now = utcnow()
    revoked = pki.agent(ACME)
    write_tenant_crl(pki, ACME, [], number=None, this_update=now - timedelta(minutes=1), next_update=now + timedelta(days=7))
    trust = TrustStore(pki.directory)
    write_tenant_crl(pki, ACME, [revoked.cert.serial_number], number=2, this_update=now - timedelta(minutes=2))
    report = trust.reload()
    [problem] = report.problems
    assert "thisUpdate" in problem and "the CRL in force has no number, this one 2" in problem, problem
    assert "None" not in problem  # no comparison with a number that does not exist
    assert "1 revoked serial(s) missing from the CRL in force were added" in problem
    crl = trust.tenant(ACME).crl
    assert crl.number is None and crl.next_update.date() == (now + timedelta(days=7)).date()  # the newer one's validity
    assert revocation_reason(trust, revoked) is Reason.REVOKED
    assert report.changed == (ACME,)  # live connections re-check and end


def test_revocations_of_an_older_crl_are_kept_past_newer_crls_and_restarts(pki, tmp_path):
    state = tmp_path / "crl-state.json"
    first, second = pki.agent(ACME, "agent-001"), pki.agent(ACME, "agent-002")
    write_tenant_crl(pki, ACME, [first.cert.serial_number], number=5)
    trust = TrustStore(pki.directory, crl_state=state)
    write_tenant_crl(pki, ACME, [second.cert.serial_number], number=3)  # older, but revokes agent-002
    [problem] = trust.reload().problems
    assert "CRL number 3 is below the CRL in force's number 5" in problem
    assert revocation_reason(trust, first) is revocation_reason(trust, second) is Reason.REVOKED
    write_tenant_crl(pki, ACME, [first.cert.serial_number], number=6)  # newer, without agent-002
    assert not trust.reload().problems and trust.tenant(ACME).crl.number == 6
    assert revocation_reason(trust, second) is Reason.REVOKED  # a revocation signed by the CA is never ignored
    assert revocation_reason(TrustStore(pki.directory, crl_state=state), second) is Reason.REVOKED


def test_an_older_crl_with_nothing_new_says_so(pki):
    write_tenant_crl(pki, ACME, [7, 8], number=5)
    trust = TrustStore(pki.directory)
    write_tenant_crl(pki, ACME, [7], number=4)
    [problem] = trust.reload().problems
    assert "already revokes every serial" in problem
    assert trust.tenant(ACME).revoked_serials == {7, 8}


def test_a_crl_without_a_number_after_a_numbered_one_says_why(pki):
    write_tenant_crl(pki, ACME, [7], number=2)
    trust = TrustStore(pki.directory)
    write_tenant_crl(pki, ACME, [9], number=None)
    [problem] = trust.reload().problems
    assert "has no CRL number and the CRL in force has number 2" in problem
    assert trust.tenant(ACME).revoked_serials == {7, 9}


# ---------------------------------------------------------------- the daemon's crl_state key


def test_config_key_crl_state_defaults_beside_the_outbox_or_the_config(tmp_path):
    from poller.config import parse_config

    base = {"poller_id": "p"}
    assert parse_config(base, base_dir=tmp_path).crl_state == tmp_path / "crl-state.json"
    nats = {"type": "nats", "url": "nats://127.0.0.1:4222", "outbox": "/var/lib/p/outbox.db"}
    assert parse_config({**base, "sink": nats}, base_dir=tmp_path).crl_state == Path("/var/lib/p/crl-state.json")
    assert parse_config({**base, "crl_state": "s/x.json"}, base_dir=tmp_path).crl_state == tmp_path / "s" / "x.json"
    memory_only = parse_config({**base, "crl_state": None}, base_dir=tmp_path)
    assert memory_only.crl_state is None and "crl_state" in [w.path for w in memory_only.warnings]


async def test_a_restarted_daemon_keeps_refusing_a_revoked_agent_after_a_rollback(pki, serve, tmp_path):
    """run --once twice, an older CRL put back in between: the agent stays revoked."""
    from poller.config import load_config
    from poller.daemon.daemon import PollerDaemon
    from poller.testing import MemorySink

    cert = pki.agent(ACME)
    agent = await serve(cert)
    config = tmp_path / "poller.json"
    config.write_text(
        json.dumps(
            {
                "poller_id": "p",
                "certs_dir": str(pki.directory),
                "agents": {"edge": {"address": agent.address, "tenant": ACME, "checks": [PING]}},
            }
        )
    )

    async def once() -> set[str]:
        daemon = PollerDaemon(load_config(config), sink=MemorySink())
        assert daemon.trust.crl_state == tmp_path / "crl-state.json"
        return {str(r.reason) for r in await daemon.run_once()}

    write_tenant_crl(pki, ACME, [cert.cert.serial_number], number=5)
    assert await once() == {"revoked"}
    write_tenant_crl(pki, ACME, [], number=3)
    assert await once() == {"revoked"}
