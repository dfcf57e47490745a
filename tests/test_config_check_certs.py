"""`config check` says what `run` would warn about the certs directory it loads:
trust material that refuses agents (a CRL past its nextUpdate, a tenant without
a CRL, a partitioned CRL) is a `warning: certs: ...` line on stderr. The exit
code stays 0: the directory is usable, as `run` would use it.
"""

from __future__ import annotations

import json
from datetime import timedelta

from crls import write_tenant_crl
from cryptography import x509
from test_crl_completeness import idp

from poller.cli.main import main
from poller.identity.certinfo import utcnow

ACME = "acme-corp"


def _config(tmp_path, pki, **top) -> str:
    path = tmp_path / "poller.json"
    agents = {"edge-1": {"address": "127.0.0.1:50051", "tenant": ACME, "checks": []}}
    doc = {"poller_id": "p", "certs_dir": str(pki.directory), "sink": {"type": "file", "dir": str(tmp_path / "data")}}
    path.write_text(json.dumps({**doc, "agents": agents, **top}))
    return str(path)


def _check(config: str, capsys) -> tuple[int, list[str], list[str]]:
    rc = main(["config", "check", config])
    out, err = capsys.readouterr()
    return rc, out.splitlines(), err.splitlines()


def test_a_stale_crl_is_a_warning(pki, tmp_path, capsys):
    now = utcnow()
    write_tenant_crl(pki, ACME, this_update=now - timedelta(days=2), next_update=now - timedelta(days=1))
    for slug in pki.tenants:
        if slug != ACME:
            write_tenant_crl(pki, slug)
    rc, out, err = _check(_config(tmp_path, pki), capsys)
    assert rc == 0 and out[0].startswith("ok: 1 agent"), (out, err)
    [line] = [line for line in err if line.startswith("warning: certs: ")]
    assert "crl.pem: past its nextUpdate" in line and f"agents of {ACME} are refused" in line


def test_a_missing_crl_is_a_warning(pki, tmp_path, capsys):
    for slug in pki.tenants:
        pki.layout.tenant_crl(slug).unlink(missing_ok=True)
    crl = pki.layout.tenant_crl(ACME)
    rc, _, err = _check(_config(tmp_path, pki), capsys)
    assert rc == 0
    assert f"warning: certs: tenant {ACME}: no CRL ({crl} is absent); revocation is not checked for it" in err, err
    rc, _, err = _check(_config(tmp_path, pki, require_crl=True), capsys)
    assert rc == 0
    assert f"warning: certs: tenant {ACME}: no CRL ({crl} is absent); its agents are refused (require_crl)" in err, err


def test_a_partitioned_crl_is_a_warning(pki, tmp_path, capsys):
    scope = idp(full_name=[x509.UniformResourceIdentifier("http://crl.example/acme.crl")])
    write_tenant_crl(pki, ACME, extensions=[(scope, True)])
    rc, _, err = _check(_config(tmp_path, pki), capsys)
    assert rc == 0
    assert any(line.startswith("warning: certs: ") and "http://crl.example/acme.crl" in line for line in err), err


def test_fresh_crls_give_no_certs_warning(pki, tmp_path, capsys):
    for slug in pki.tenants:
        write_tenant_crl(pki, slug)
    rc, _, err = _check(_config(tmp_path, pki), capsys)
    assert rc == 0 and not [line for line in err if line.startswith("warning: certs: ")], err
