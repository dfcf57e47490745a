"""`serviceradar-poller nats-config` and `tail`'s usage errors (no server needed for these)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from poller.cli.main import main
from poller.nats.creds import load_credentials
from poller.nats.keys import public_key
from poller.testing.forge import ForgePki
from poller.testing.nats_server import find_nats_server


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def nats_server_accepts(conf: Path) -> None:
    check = subprocess.run([str(find_nats_server()), "-c", str(conf), "-t"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def config_doc(conf: Path) -> dict:
    return json.loads("\n".join(line for line in conf.read_text().splitlines() if not line.startswith("#")))


def test_writes_a_tls_config_and_private_nkeys_per_tenant(pki: ForgePki, tmp_path: Path, capsys) -> None:
    out = tmp_path / "nats"
    assert main(["nats-config", "--certs", str(pki.directory), "--out", str(out), "--listen", "127.0.0.1:14222"]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["nats-server.conf", "poller-nats.json", "poller.nk", "tenant-acme-corp.nk", "tenant-xyz-inc.nk", "tls"]
    assert all(mode(out / name) == 0o600 for name in files if name.endswith((".nk", ".conf")))
    assert all(mode(key) == 0o600 for key in (out / "tls").glob("*-key.pem"))
    nats_server_accepts(out / "nats-server.conf")
    doc = config_doc(out / "nats-server.conf")
    assert doc["tls"]["verify"] is True and Path(doc["tls"]["ca_file"]).is_file()  # mTLS
    seeds = {name: load_credentials(out / name).seed for name in files if name.endswith(".nk")}
    assert len(set(seeds.values())) == 3
    text = (out / "nats-server.conf").read_text()
    assert "password" not in text and not any(seed in text for seed in seeds.values())  # public keys only
    assert public_key(seeds["tenant-acme-corp.nk"]) in text
    acme_limits = doc["accounts"]["tenant-acme-corp"]["jetstream"]
    assert all(
        isinstance(acme_limits[k], int) and acme_limits[k] > 0 for k in ("max_memory", "max_file", "max_streams", "max_consumers")
    )
    snippet = json.loads((out / "poller-nats.json").read_text())
    assert snippet["url"] == ["tls://127.0.0.1:14222"] and Path(snippet["tls"]["ca_file"]).is_file()
    printed = capsys.readouterr().out
    assert not any(seed in printed for seed in seeds.values())

    # Re-running (e.g. after adding a tenant) keeps everyone's key.
    assert main(["nats-config", "--certs", str(pki.directory), "--out", str(out), "--listen", "127.0.0.1:14222"]) == 0
    assert {name: load_credentials(out / name).seed for name in seeds} == seeds


def test_plaintext_dev_writes_no_tls_and_only_on_loopback(pki: ForgePki, tmp_path: Path, capsys) -> None:
    out = tmp_path / "nats"
    argv = ["nats-config", "--certs", str(pki.directory), "--out", str(out), "--plaintext-dev"]
    assert main([*argv, "--listen", "127.0.0.1:14223"]) == 0
    assert "tls" not in config_doc(out / "nats-server.conf") and not (out / "tls").exists()
    nats_server_accepts(out / "nats-server.conf")
    assert json.loads((out / "poller-nats.json").read_text())["url"] == ["nats://127.0.0.1:14223"]
    capsys.readouterr()
    for listen in ("0.0.0.0:4222", "10.1.2.3:4222"):
        assert main([*argv, "--out", str(tmp_path / "o2"), "--listen", listen]) == 2
        assert "loopback" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_cluster_writes_one_config_per_server_with_tls_routes(pki: ForgePki, tmp_path: Path) -> None:
    out = tmp_path / "nats"
    argv = ["nats-config", "--certs", str(pki.directory), "--out", str(out), "--listen", "127.0.0.1:14230", "--cluster", "3"]
    assert main([*argv, "--route-port", "16230"]) == 0
    confs = [out / f"nats-server-{i}.conf" for i in (1, 2, 3)]
    docs = [config_doc(c) for c in confs]
    assert [d["server_name"] for d in docs] == ["nats-1", "nats-2", "nats-3"]
    assert [d["listen"] for d in docs] == ["127.0.0.1:14230", "127.0.0.1:14231", "127.0.0.1:14232"]
    assert len({d["jetstream"]["store_dir"] for d in docs}) == 3
    for doc in docs:
        assert doc["cluster"]["tls"]["verify"] is True and len(doc["cluster"]["routes"]) == 2
        assert doc["cluster"]["listen"] not in [r.split("//")[1] for r in doc["cluster"]["routes"]]
    for conf in confs:
        nats_server_accepts(conf)
    snippet = json.loads((out / "poller-nats.json").read_text())
    assert snippet["url"] == [f"tls://127.0.0.1:{p}" for p in (14230, 14231, 14232)]


def test_cluster_on_a_host_list_names_each_host(pki: ForgePki, tmp_path: Path) -> None:
    out = tmp_path / "nats"
    hosts = "nats-a.example,nats-b.example,nats-c.example"
    argv = ["nats-config", "--certs", str(pki.directory), "--out", str(out), "--listen", "0.0.0.0:4222"]
    assert main([*argv, "--cluster", "3", "--hosts", hosts]) == 0
    docs = [config_doc(out / f"nats-server-{i}.conf") for i in (1, 2, 3)]
    assert {d["listen"] for d in docs} == {"0.0.0.0:4222"}
    assert docs[0]["cluster"]["routes"] == ["nats-route://nats-b.example:6222", "nats-route://nats-c.example:6222"]
    snippet = json.loads((out / "poller-nats.json").read_text())
    assert snippet["url"] == [f"tls://{h}:4222" for h in hosts.split(",")]
    assert main([*argv, "--out", str(tmp_path / "o2"), "--cluster", "3", "--hosts", "a,b"]) == 2


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
    creds = tmp_path / "open.nk"
    creds.write_bytes((nats_layout / "tenant-acme-corp.nk").read_bytes())
    creds.chmod(0o644)
    assert main(["tail", "--nats", "nats://127.0.0.1:1", "--creds", str(creds), "--tenant", "acme-corp"]) == 2
    err = capsys.readouterr().err
    assert "readable by others" in err and load_credentials(nats_layout / "tenant-acme-corp.nk").seed not in err


@pytest.mark.parametrize("resolver", ["memory", "full"])
def test_operator_mode_writes_jwts_standard_creds_and_tenant_limits(pki: ForgePki, tmp_path: Path, resolver: str) -> None:
    out = tmp_path / "nats"
    argv = ["nats-config", "--certs", str(pki.directory), "--out", str(out), "--listen", "127.0.0.1:14240"]
    assert main([*argv, "--operator", resolver]) == 0
    nats_server_accepts(out / "nats-server.conf")
    doc = config_doc(out / "nats-server.conf")
    assert "accounts" not in doc and doc["operator"] and doc["system_account"].startswith("A")
    assert (doc["resolver"] == "MEMORY") if resolver == "memory" else (doc["resolver"]["type"] == "full")
    text = (out / "nats-server.conf").read_text()
    for name in ("poller.creds", "tenant-acme-corp.creds", "tenant-xyz-inc.creds"):
        creds = load_credentials(out / name)
        assert creds.kind == "jwt" and mode(out / name) == 0o600 and creds.seed not in text
    assert all(mode(p) == 0o600 for p in [out / "operator.nk", *(out / "accounts").iterdir()])
    # The tenant's account JWT carries finite JetStream limits.
    import base64

    acme = load_credentials(out / "tenant-acme-corp.creds")
    jwts = list(doc["resolver_preload"].values())
    claims = [json.loads(base64.urlsafe_b64decode(j.split(".")[1] + "==")) for j in jwts]
    (tenant,) = [c for c in claims if c["name"] == "tenant-acme-corp"]
    limits = tenant["nats"]["limits"]
    assert all(limits[k] > 0 for k in ("mem_storage", "disk_storage", "streams", "consumer"))
    seed = acme.seed
    assert main([*argv, "--operator", resolver]) == 0  # a re-run keeps every key
    assert load_credentials(out / "tenant-acme-corp.creds").seed == seed
    assert config_doc(out / "nats-server.conf")["system_account"] == doc["system_account"]
