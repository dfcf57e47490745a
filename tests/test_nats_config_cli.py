"""`serviceradar-poller nats-config` and `tail`'s usage errors (no server needed for these)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from poller.cli.main import main
from poller.testing.forge import ForgePki
from poller.testing.nats_server import find_nats_server


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_writes_a_loadable_config_and_private_creds_per_tenant(pki: ForgePki, tmp_path: Path, capsys) -> None:
    out = tmp_path / "nats"
    assert main(["nats-config", "--certs", str(pki.directory), "--out", str(out), "--listen", "127.0.0.1:14222"]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["nats-server.conf", "poller.creds", "tenant-acme-corp.creds", "tenant-xyz-inc.creds"]
    assert all(mode(out / name) == 0o600 for name in files)
    check = subprocess.run([str(find_nats_server()), "-c", str(out / "nats-server.conf"), "-t"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    acme = json.loads((out / "tenant-acme-corp.creds").read_text())
    assert (acme["role"], acme["tenant"], acme["stream"], acme["url"]) == (
        "tenant",
        "acme-corp",
        "tenant-acme-corp",
        "nats://127.0.0.1:14222",
    )
    poller = json.loads((out / "poller.creds").read_text())
    assert poller["role"] == "poller" and poller["tenant"] is None and poller["password"] != acme["password"]
    printed = capsys.readouterr().out
    assert acme["password"] not in printed and poller["password"] not in printed

    # Re-running (e.g. after adding a tenant) keeps everyone's password.
    assert main(["nats-config", "--certs", str(pki.directory), "--out", str(out), "--listen", "127.0.0.1:14222"]) == 0
    assert json.loads((out / "tenant-acme-corp.creds").read_text())["password"] == acme["password"]
    assert json.loads((out / "poller.creds").read_text())["password"] == poller["password"]


def test_a_store_directory_can_be_named(pki: ForgePki, tmp_path: Path) -> None:
    out = tmp_path / "nats"
    assert main(["nats-config", "--certs", str(pki.directory), "--out", str(out), "--store", str(tmp_path / "store")]) == 0
    assert str(tmp_path / "store") in (out / "nats-server.conf").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--listen", "nonsense"], "--listen"),
        (["--certs", "/nonexistent"], "not a directory"),
    ],
)
def test_bad_usage_exits_2(pki: ForgePki, tmp_path: Path, capsys, args: list[str], message: str) -> None:
    base = {"--certs": str(pki.directory), "--out": str(tmp_path / "o")}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    argv = ["nats-config", *[x for kv in base.items() for x in kv]]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_certs_directory_without_tenants_exits_2(tmp_path: Path, capsys) -> None:
    (tmp_path / "certs").mkdir()
    assert main(["nats-config", "--certs", str(tmp_path / "certs"), "--out", str(tmp_path / "o")]) == 2
    assert "no tenants" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tenant", "Acme"], "not a tenant slug"),
        (["--tenant", "acme-corp", "--channel", "agents.>.x"], "not a channel"),
        (["--tenant", "acme-corp", "--count", "0"], "--count"),
    ],
)
def test_tail_usage_errors_exit_2(tmp_path: Path, capsys, extra: list[str], message: str) -> None:
    creds = tmp_path / "c.creds"
    creds.write_text("{}")
    creds.chmod(0o600)
    assert main(["tail", "--nats", "nats://127.0.0.1:1", "--creds", str(creds), *extra]) == 2
    assert message in capsys.readouterr().err


def test_tail_refuses_a_creds_file_others_can_read(nats_layout: Path, tmp_path: Path, capsys) -> None:
    creds = tmp_path / "open.creds"
    creds.write_bytes((nats_layout / "tenant-acme-corp.creds").read_bytes())
    creds.chmod(0o644)
    assert main(["tail", "--nats", "nats://127.0.0.1:1", "--creds", str(creds), "--tenant", "acme-corp"]) == 2
    err = capsys.readouterr().err
    assert "readable by others" in err and json.loads((nats_layout / "tenant-acme-corp.creds").read_text())["password"] not in err
