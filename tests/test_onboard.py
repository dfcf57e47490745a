"""Onboarding packages: what `onboard` writes, and `onboard verify` against a tamperer.

Real PKI (ForgePki over poller.pki) in a temp dir, real archives; each attack
rebuilds the archive the way an attacker would (tarfile, by hand) and checks
the named refusal, and that extraction writes nothing, inside or outside.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import subprocess
import tarfile
from collections.abc import Mapping
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from spawn import cli_argv

from poller.identity.reasons import IdentityRefused, PollerError, Reason
from poller.onboard import (
    MEMBERS,
    PackageRefused,
    create_package,
    extract_package,
    verify_package,
    verify_package_bytes,
    write_package,
)
from poller.pki import revoke
from poller.pki.build import key_pem, new_key
from poller.testing.forge import ForgePki, serviceradar_style_dir
from poller.trust.store import TrustSnapshot, TrustStore

ACME, XYZ = "acme-corp", "xyz-inc"
KEY = "certs/component-key.pem"


@pytest.fixture
def snapshot(pki: ForgePki) -> TrustSnapshot:
    return TrustStore(pki.directory, require_client=False).snapshot


@pytest.fixture
def made(pki: ForgePki) -> bytes:
    return create_package(
        pki.directory, tenant=ACME, component_id="agent-042", partition_id="site-a", component_type="agent"
    ).data


def members(blob: bytes) -> dict[str, tuple[int, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        out = {}
        for m in tar.getmembers():
            f = tar.extractfile(m)
            out[m.name] = (m.mode, f.read() if f else b"")
        return out


def repack(
    blob: bytes,
    *,
    replace: Mapping[str, bytes] = {},
    drop: tuple[str, ...] = (),
    modes: Mapping[str, int] = {},
    extra: tuple[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes], ...] = (),
) -> bytes:
    """The attacker's edit: same members (optionally changed), plus raw extra entries."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, (mode, data) in members(blob).items():
            if name in drop:
                continue
            data = replace.get(name, data)
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), modes.get(name, mode)
            tar.addfile(info, io.BytesIO(data))
        for entry in extra:
            info, data = entry if isinstance(entry, tuple) else (entry, b"")
            info.size = len(data) if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
            tar.addfile(info, io.BytesIO(data) if info.size else None)
    return gzip.compress(raw.getvalue())


def entry(name: str, kind: bytes = tarfile.REGTYPE, *, link: str = "", data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info, data


def refused(blob: bytes, snapshot: TrustSnapshot) -> PollerError:
    with pytest.raises((PackageRefused, IdentityRefused)) as caught:
        verify_package_bytes(blob, trust=snapshot)
    return caught.value


def config_of(blob: bytes) -> dict:
    return json.loads(members(blob)["config.json"][1])


def identity_of(blob: bytes) -> dict:
    return json.loads(members(blob)["identity.json"][1])


def with_identity(blob: bytes, **changes: object) -> bytes:
    return repack(blob, replace={"identity.json": json.dumps(identity_of(blob) | changes).encode()})


def with_config(blob: bytes, **changes: object) -> bytes:
    return repack(blob, replace={"config.json": json.dumps(config_of(blob) | changes).encode()})


# --- what a package holds ------------------------------------------------------------


def test_package_holds_exactly_the_tenant_material(pki: ForgePki, made: bytes) -> None:
    files = members(made)
    assert set(files) == set(MEMBERS)
    assert files[KEY][0] == 0o600
    assert all(mode == 0o644 for name, (mode, _) in files.items() if name != KEY)
    # No CA key, and nothing of another tenant: no other PEM holds a key, the key
    # is not a CA's, and xyz-inc's CA appears nowhere.
    assert [name for name, (_, data) in files.items() if b"PRIVATE KEY" in data] == [KEY]
    ca_keys = {key_pem(a.key) for a in (pki.root, pki.platform, *pki.tenants.values())}
    assert files[KEY][1] not in ca_keys
    xyz_ca = pki.tenant_ca_pem(XYZ)
    assert not any(xyz_ca.strip() in data for _, data in files.values())
    assert files["certs/ca.pem"][1] == pki.tenant_ca_pem(ACME)
    assert files["certs/ca-chain.pem"][1] == pki.tenant_ca_pem(ACME) + pki.root_pem


def test_config_is_the_go_agent_shape_and_identity_holds_the_tenant(made: bytes) -> None:
    config, identity = config_of(made), identity_of(made)
    cn = "agent-042.site-a.acme-corp.serviceradar"
    assert config["agent_id"] == identity["component_id"] == "agent-042"
    assert config["partition"] == identity["partition_id"] == "site-a"
    assert config["listen_addr"] == ":50051"
    assert config["security"]["mode"] == "mtls"
    assert config["security"]["server_name"] == cn
    assert config["security"]["role"] == "agent"
    assert config["security"]["tls"] == {
        "cert_file": "component-chain.pem",
        "key_file": "component-key.pem",
        "ca_file": "root.pem",
        "client_ca_file": "root.pem",
    }
    assert (identity["tenant"], identity["tenant_ca"], identity["cn"]) == (ACME, "tenant-acme-corp.ca.serviceradar", cn)
    assert identity["spiffe_id"] == "spiffe://serviceradar.local/agent/acme-corp/site-a/agent-042"
    assert (identity["nats_subject_prefix"], identity["mode"]) == (ACME, "poll")
    # Issue 16 item 8: none of the tenant identifiers in config.json (the agent refuses unknown keys).
    assert not {"tenant", "tenant_ca", "component_id", "cn", "spiffe_id", "nats_subject_prefix"} & set(config)


@pytest.mark.parametrize("kind", ["agent", "checker", "gateway"])
def test_each_component_type_verifies(pki: ForgePki, snapshot: TrustSnapshot, kind: str) -> None:
    package = create_package(pki.directory, tenant=XYZ, component_id="c-1", partition_id="p-1", component_type=kind)
    verified = verify_package_bytes(package.data, trust=snapshot)
    assert (verified.context.tenant, verified.context.component_type) == (XYZ, kind)
    assert config_of(package.data)["security"]["role"] == kind


def test_a_generate_certs_sh_directory_onboards_as_is(tmp_path: Path) -> None:
    # RSA CAs, tenant CAs without name constraints, poller signed by the root.
    style = serviceradar_style_dir(tmp_path / "srs")
    package = create_package(style.layout.root, tenant=ACME, component_id="a1", partition_id="p1")
    snapshot = TrustStore(style.layout.root, require_client=False).snapshot
    assert verify_package_bytes(package.data, trust=snapshot).context.tenant == ACME
    assert members(package.data)["certs/root.pem"][1] == style.layout.root_ca.read_bytes()


def test_write_package_is_private_and_does_not_overwrite(pki: ForgePki, tmp_path: Path) -> None:
    package = create_package(pki.directory, tenant=ACME, component_id="a", partition_id="p")
    out = tmp_path / "a.tar.gz"
    write_package(out, package)
    assert out.stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        write_package(out, package)


# --- the tamperer ------------------------------------------------------------------------


def test_untouched_package_verifies(made: bytes, snapshot: TrustSnapshot) -> None:
    verified = verify_package_bytes(made, trust=snapshot)
    assert (verified.context.tenant, verified.context.component_id, verified.context.partition_id) == (
        ACME,
        "agent-042",
        "site-a",
    )


def test_swapped_key(made: bytes, snapshot: TrustSnapshot) -> None:
    err = refused(repack(made, replace={KEY: key_pem(new_key())}), snapshot)
    assert err.reason is Reason.KEY_MISMATCH


def test_edited_identity_tenant(made: bytes, snapshot: TrustSnapshot) -> None:
    err = refused(with_identity(made, tenant=XYZ), snapshot)
    assert err.reason is Reason.TENANT_MISMATCH
    assert "xyz-inc" in err.detail


@pytest.mark.parametrize(
    ("member", "field", "value", "reason"),
    [
        ("identity.json", "nats_subject_prefix", XYZ, Reason.TENANT_MISMATCH),
        ("identity.json", "tenant_ca", "tenant-xyz-inc.ca.serviceradar", Reason.TENANT_MISMATCH),
        ("identity.json", "component_id", "agent-001", Reason.IDENTITY_MISMATCH),
        ("identity.json", "cn", "agent-001.site-a.acme-corp.serviceradar", Reason.IDENTITY_MISMATCH),
        ("identity.json", "spiffe_id", "spiffe://serviceradar.local/sync/acme-corp/site-a/agent-042", Reason.IDENTITY_MISMATCH),
        ("identity.json", "component_type", "gateway", Reason.IDENTITY_MISMATCH),
        ("identity.json", "tenant", "", Reason.BAD_PACKAGE),
        ("identity.json", "mode", "push", Reason.BAD_PACKAGE),
        ("identity.json", "extra", "x", Reason.BAD_PACKAGE),
        ("config.json", "agent_id", "agent-001", Reason.IDENTITY_MISMATCH),
        ("config.json", "partition", "site-b", Reason.IDENTITY_MISMATCH),
    ],
)
def test_edited_identity_and_config_fields(
    made: bytes, snapshot: TrustSnapshot, member: str, field: str, value: str, reason: Reason
) -> None:
    tampered = with_identity(made, **{field: value}) if member == "identity.json" else with_config(made, **{field: value})
    assert refused(tampered, snapshot).reason is reason


def test_identity_not_json(made: bytes, snapshot: TrustSnapshot) -> None:
    assert refused(repack(made, replace={"identity.json": b"[]"}), snapshot).reason is Reason.BAD_PACKAGE


def test_config_not_json(made: bytes, snapshot: TrustSnapshot) -> None:
    assert refused(repack(made, replace={"config.json": b"{nope"}), snapshot).reason is Reason.BAD_PACKAGE


def test_certificate_from_another_tenants_ca(pki: ForgePki, made: bytes, snapshot: TrustSnapshot) -> None:
    # xyz-inc's CA mints a certificate with the very names of the package.
    forged = pki.agent(ACME, "agent-042", "site-a", issuer_tenant=XYZ, dns=[])
    tampered = repack(
        made,
        replace={"certs/component.pem": forged.leaf_pem, "certs/component-chain.pem": forged.chain_pem, KEY: forged.key_pem},
    )
    err = refused(tampered, snapshot)
    assert err.reason is Reason.TENANT_MISMATCH
    assert "tenant-xyz-inc" in err.detail


def test_certificate_and_key_from_another_tenant_keeping_the_chain_file(
    pki: ForgePki, made: bytes, snapshot: TrustSnapshot
) -> None:
    forged = pki.agent(ACME, "agent-042", "site-a", issuer_tenant=XYZ, dns=[])
    err = refused(repack(made, replace={"certs/component.pem": forged.leaf_pem, KEY: forged.key_pem}), snapshot)
    assert err.reason is Reason.TENANT_MISMATCH


def test_chain_file_that_serves_another_certificate(pki: ForgePki, made: bytes, snapshot: TrustSnapshot) -> None:
    other = pki.agent(ACME, "agent-042", "site-a")  # same tenant, same names, another key
    err = refused(repack(made, replace={"certs/component-chain.pem": other.chain_pem}), snapshot)
    assert err.reason is Reason.IDENTITY_MISMATCH
    xyz_chain = members(made)["certs/component.pem"][1] + pki.tenant_ca_pem(XYZ)
    assert refused(repack(made, replace={"certs/component-chain.pem": xyz_chain}), snapshot).reason is Reason.TENANT_MISMATCH


def test_ca_file_of_another_tenant(pki: ForgePki, made: bytes, snapshot: TrustSnapshot) -> None:
    assert refused(repack(made, replace={"certs/ca.pem": pki.tenant_ca_pem(XYZ)}), snapshot).reason is Reason.TENANT_MISMATCH
    chain = pki.tenant_ca_pem(XYZ) + pki.root_pem
    assert refused(repack(made, replace={"certs/ca-chain.pem": chain}), snapshot).reason is Reason.TENANT_MISMATCH


def test_ca_key_smuggled_into_a_certificate_file(pki: ForgePki, made: bytes, snapshot: TrustSnapshot) -> None:
    chain = members(made)["certs/ca-chain.pem"][1] + key_pem(pki.tenants[ACME].key)
    err = refused(repack(made, replace={"certs/ca-chain.pem": chain}), snapshot)
    assert err.reason is Reason.FORBIDDEN_MATERIAL
    assert "BEGIN" not in str(err)  # the refusal names the file, never the key


def test_second_key_in_the_key_file(pki: ForgePki, made: bytes, snapshot: TrustSnapshot) -> None:
    doubled = members(made)[KEY][1] + key_pem(pki.tenants[ACME].key)
    assert refused(repack(made, replace={KEY: doubled}), snapshot).reason is Reason.KEY_MISMATCH


def test_extra_file(made: bytes, snapshot: TrustSnapshot) -> None:
    assert refused(repack(made, extra=(entry("certs/extra.pem"),)), snapshot).reason is Reason.UNEXPECTED_MEMBER
    assert refused(repack(made, extra=(entry("notes.txt"),)), snapshot).reason is Reason.UNEXPECTED_MEMBER


@pytest.mark.parametrize("name", ["../evil.pem", "certs/../../evil.pem", "/tmp/evil.pem", "./../evil.pem", "certs\\..\\evil"])
def test_path_traversal_member(made: bytes, snapshot: TrustSnapshot, name: str) -> None:
    assert refused(repack(made, extra=(entry(name),)), snapshot).reason is Reason.UNSAFE_MEMBER


@pytest.mark.parametrize(
    ("name", "kind", "link"),
    [
        ("certs/component.pem", tarfile.SYMTYPE, "/etc/passwd"),
        ("certs/evil", tarfile.SYMTYPE, "../../outside"),
        ("certs/evil", tarfile.LNKTYPE, "config.json"),
        ("certs/root.pem", tarfile.LNKTYPE, "/etc/shadow"),
        ("certs/fifo", tarfile.FIFOTYPE, ""),
        ("certs/dev", tarfile.CHRTYPE, ""),
    ],
)
def test_links_and_special_members(made: bytes, snapshot: TrustSnapshot, name: str, kind: bytes, link: str) -> None:
    drop = (name,) if name in MEMBERS else ()
    info, _ = entry(name, kind, link=link)
    assert refused(repack(made, drop=drop, extra=(info,)), snapshot).reason is Reason.UNSAFE_MEMBER


def test_duplicate_member_cannot_override_the_first(made: bytes, snapshot: TrustSnapshot) -> None:
    identity = json.dumps(identity_of(made) | {"tenant": XYZ}).encode()
    assert refused(repack(made, extra=(entry("identity.json", data=identity),)), snapshot).reason is Reason.UNSAFE_MEMBER


def test_world_readable_key(made: bytes, snapshot: TrustSnapshot) -> None:
    assert refused(repack(made, modes={KEY: 0o644}), snapshot).reason is Reason.UNSAFE_MEMBER


def test_repacked_with_default_modes_still_names_the_edit(made: bytes, snapshot: TrustSnapshot) -> None:
    # A tamperer who rebuilds the archive with tarfile's default 0644 everywhere:
    # the refusal names the edited tenant, not the key's mode.
    identity = json.dumps(identity_of(made) | {"tenant": XYZ}).encode()
    all_0644 = dict.fromkeys(MEMBERS, 0o644)
    tampered = repack(made, replace={"identity.json": identity}, modes=all_0644)
    assert refused(tampered, snapshot).reason is Reason.TENANT_MISMATCH


@pytest.mark.parametrize("name", sorted(MEMBERS))
def test_missing_member(made: bytes, snapshot: TrustSnapshot, name: str) -> None:
    err = refused(repack(made, drop=(name,)), snapshot)
    assert err.reason is Reason.INCOMPLETE_PACKAGE
    assert name in err.detail


def test_not_an_archive(snapshot: TrustSnapshot) -> None:
    assert refused(b"hello", snapshot).reason is Reason.BAD_PACKAGE
    assert refused(gzip.compress(b"not a tar"), snapshot).reason is Reason.BAD_PACKAGE


def test_gzip_bomb_is_refused_before_tar_reads_it(snapshot: TrustSnapshot) -> None:
    # 64 MiB of zeros is a ~64 KiB gzip: under the archive limit, far over the tar limit.
    assert refused(gzip.compress(bytes(64 << 20)), snapshot).reason is Reason.BAD_PACKAGE
    assert refused(gzip.compress(b"x" * 100)[:-12], snapshot).reason is Reason.BAD_PACKAGE  # truncated


def test_oversized_member_is_refused_before_it_is_read(made: bytes, snapshot: TrustSnapshot) -> None:
    big = b"A" * (300 << 10)
    assert refused(repack(made, replace={"config.json": big}), snapshot).reason is Reason.BAD_PACKAGE


def test_package_from_another_platform(made: bytes, tmp_path: Path) -> None:
    other = ForgePki.create(tmp_path / "other", tenants=(ACME,))
    err = refused(made, TrustStore(other.directory, require_client=False).snapshot)
    assert err.reason is Reason.UNTRUSTED_CHAIN


def test_revoked_component(pki: ForgePki, made: bytes) -> None:
    serial = verify_package_bytes(made, trust=TrustStore(pki.directory, require_client=False).snapshot).context.serial
    revoke(pki.directory, ACME, serial)
    err = refused(made, TrustStore(pki.directory, require_client=False).snapshot)
    assert err.reason is Reason.REVOKED


def test_repacked_with_directory_entries_still_verifies(made: bytes, snapshot: TrustSnapshot) -> None:
    # `tar czf pkg.tar.gz -C unpacked .` adds "./" prefixes and directory entries.
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name in (".", "certs"):
            info = tarfile.TarInfo(f"./{name}" if name != "." else ".")
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, (mode, data) in members(made).items():
            info = tarfile.TarInfo(f"./{name}")
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    assert verify_package_bytes(gzip.compress(raw.getvalue()), trust=snapshot).context.tenant == ACME


def test_decisions_are_audited_without_key_material(pki: ForgePki, snapshot: TrustSnapshot, log_events) -> None:
    package = create_package(pki.directory, tenant=ACME, component_id="agent-5", partition_id="p")
    verify_package_bytes(package.data, trust=snapshot)
    with pytest.raises(PackageRefused):
        verify_package_bytes(repack(package.data, replace={KEY: key_pem(new_key())}), trust=snapshot)
    logs = [e for e in log_events() if e["logger"] == "poller.audit"]
    events = [(e["event"], e.get("tenant"), e.get("reason")) for e in logs]
    assert events == [("package_issued", ACME, None), ("package_verified", ACME, None), ("package_refused", None, "key_mismatch")]
    assert all(e.get("audit") is True for e in logs)
    assert [e["serial"] for e in logs[:2]] == [package.verified.context.serial] * 2
    assert "PRIVATE KEY" not in repr(logs)


# --- extraction ---------------------------------------------------------------------------


def test_extract_writes_the_files_with_their_modes(made: bytes, snapshot: TrustSnapshot, tmp_path: Path) -> None:
    source = tmp_path / "p.tar.gz"
    source.write_bytes(made)
    target = tmp_path / "install"
    extract_package(source, target, trust=snapshot)
    written = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert written == sorted(MEMBERS)
    assert (target / KEY).stat().st_mode & 0o777 == 0o600
    assert (target / "config.json").read_bytes() == members(made)["config.json"][1]


@pytest.mark.parametrize(
    "bad",
    [
        entry("../escaped.pem"),
        entry("certs/../../escaped.pem"),
        entry("certs/link", tarfile.SYMTYPE, link="../../escaped.pem"),
    ],
)
def test_hostile_package_writes_nothing_anywhere(
    made: bytes, snapshot: TrustSnapshot, tmp_path: Path, bad: tuple[tarfile.TarInfo, bytes]
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    source = tmp_path / "p.tar.gz"
    source.write_bytes(repack(made, extra=(bad,)))
    target = work / "install"
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(PackageRefused):
        extract_package(source, target, trust=snapshot)
    assert sorted(tmp_path.rglob("*")) == before
    assert not target.exists()


def test_extract_refuses_a_non_empty_or_symlinked_target(made: bytes, snapshot: TrustSnapshot, tmp_path: Path) -> None:
    source = tmp_path / "p.tar.gz"
    source.write_bytes(made)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "certs").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError, match="not empty"):
        extract_package(source, busy, trust=snapshot)
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(OSError, match="symlink"):
        extract_package(source, link, trust=snapshot)
    assert not any(real.iterdir())
    assert not (tmp_path / "elsewhere").exists()


# --- the command line ---------------------------------------------------------------------


def test_cli_onboard_then_verify(pki: ForgePki, tmp_path: Path) -> None:
    out = tmp_path / "agent.tar.gz"
    made = subprocess.run(
        cli_argv(
            "onboard", "--certs", str(pki.directory), "--tenant", ACME, "--component", "agent-001",
            "--partition", "partition-1", "--type", "checker", "--out", str(out),
        ),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    doc = json.loads(made.stdout)
    assert (doc["created"], doc["package"], doc["tenant"], doc["component_type"]) == (True, str(out), ACME, "checker")
    assert out.stat().st_mode & 0o777 == 0o600

    target = tmp_path / "install"
    ok = subprocess.run(
        cli_argv("onboard", "verify", str(out), "--certs", str(pki.directory), "--extract", str(target)),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert len(ok.stdout.splitlines()) == 1
    verdict = json.loads(ok.stdout)
    assert (verdict["valid"], verdict["tenant"], verdict["serial"]) == (True, ACME, doc["serial"])
    assert (target / KEY).stat().st_mode & 0o777 == 0o600


def test_cli_verify_refusal_is_exit_3_with_one_json_object(made: bytes, pki: ForgePki, tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(repack(made, extra=(entry("../evil"),)))
    target = tmp_path / "install"
    result = subprocess.run(
        cli_argv("onboard", "verify", str(bad), "--certs", str(pki.directory), "--extract", str(target)),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 3
    assert len(result.stdout.splitlines()) == 1
    verdict = json.loads(result.stdout)
    assert (set(verdict), verdict["valid"], verdict["reason"]) == ({"valid", "reason", "detail"}, False, "unsafe_member")
    assert "../evil" in verdict["detail"]
    assert not target.exists() and not (tmp_path / "evil").exists()


@pytest.mark.parametrize(
    "args",
    [
        ("onboard", "verify", "{tmp}/missing.tar.gz", "--certs", "{certs}"),
        ("onboard", "verify", "{tmp}/missing.tar.gz", "--certs", "{tmp}/no-such-dir"),
        ("onboard", "verify", "--certs", "{certs}"),
        ("onboard", "--certs", "{certs}", "--tenant", "nobody", "--component", "a", "--partition", "p", "--type", "agent",
         "--out", "{tmp}/x.tar.gz"),
        ("onboard", "--certs", "{certs}", "--tenant", ACME, "--component", "Bad_Name", "--partition", "p", "--type", "agent",
         "--out", "{tmp}/x.tar.gz"),
        ("onboard", "--certs", "{certs}", "--tenant", ACME, "--component", "a", "--partition", "p", "--type", "poller",
         "--out", "{tmp}/x.tar.gz"),
        ("onboard", "--certs", "{certs}", "--tenant", ACME, "--component", "a", "--partition", "p", "--type", "agent"),
    ],
)  # fmt: skip
def test_cli_usage_and_unreadable_input_exit_2(pki: ForgePki, tmp_path: Path, args: tuple[str, ...]) -> None:
    argv = [a.format(tmp=tmp_path, certs=pki.directory) for a in args]
    result = subprocess.run(cli_argv(*argv), capture_output=True, text=True, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stdout.splitlines()) == 1  # one JSON object, as probe prints
    verdict = json.loads(result.stdout)
    assert (verdict.get("valid", verdict.get("created")), verdict["reason"]) == (False, "usage")
    assert "valid" in verdict if "verify" in args else "created" in verdict
    assert result.stderr.strip()
    assert not (tmp_path / "x.tar.gz").exists()


def test_cli_refuses_to_overwrite(pki: ForgePki, tmp_path: Path) -> None:
    out = tmp_path / "x.tar.gz"
    out.write_bytes(b"keep me")
    argv = ["onboard", "--certs", str(pki.directory), "--tenant", ACME, "--component", "a", "--partition", "p"]
    result = subprocess.run(cli_argv(*argv, "--type", "agent", "--out", str(out)), capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert out.read_bytes() == b"keep me"


# --- end to end: onboard, start a mock agent from the package, probe it ---------------------


async def _run(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*cli_argv(*args), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_onboard_start_and_probe_end_to_end(pki: ForgePki, tmp_path: Path) -> None:
    out = tmp_path / "agent-007.tar.gz"
    certs = str(pki.directory)
    code, _, err = await _run(
        "onboard", "--certs", certs, "--tenant", XYZ, "--component", "agent-007", "--partition", "site-b",
        "--type", "agent", "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    agent = await asyncio.create_subprocess_exec(
        *cli_argv("mock-agent", "--package", str(out), "--certs", certs),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert agent.stdout is not None
        async with asyncio.timeout(30):
            port = int((await agent.stdout.readline()).decode())
        address = f"127.0.0.1:{port}"
        code, stdout, err = await _run("probe", address, "--certs", certs, "--tenant", XYZ, "--component", "agent-007")
        assert code == 0, err
        accepted = json.loads(stdout)
        assert (accepted["accepted"], accepted["tenant"], accepted["partition_id"]) == (True, XYZ, "site-b")
        code, stdout, _ = await _run("probe", address, "--certs", certs, "--tenant", ACME)
        assert (code, json.loads(stdout)["reason"]) == (3, "tenant_mismatch")
    finally:
        agent.terminate()
        await agent.wait()
    assert agent.returncode == 0


async def test_mock_agent_refuses_a_tampered_package(made: bytes, tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(repack(made, replace={KEY: key_pem(new_key())}))
    code, stdout, err = await _run("mock-agent", "--package", str(bad))
    assert code == 3
    assert stdout == ""
    assert "key_mismatch" in err


def test_package_key_is_the_components_not_a_cas(pki: ForgePki, made: bytes) -> None:
    key = serialization.load_pem_private_key(members(made)[KEY][1], password=None)
    leaf_public = verify_package_bytes(made, trust=TrustStore(pki.directory, require_client=False).snapshot)
    assert leaf_public.context.component_id == "agent-042"
    for authority in (pki.root, pki.platform, *pki.tenants.values()):
        assert key.public_key() != authority.cert.public_key()


def test_verify_package_reads_a_file(made: bytes, snapshot: TrustSnapshot, tmp_path: Path) -> None:
    path = tmp_path / "p.tar.gz"
    path.write_bytes(made)
    assert verify_package(path, trust=snapshot).identity["tenant"] == ACME
    with pytest.raises(OSError):
        verify_package(tmp_path / "missing.tar.gz", trust=snapshot)


def test_onboard_help_shows_the_action_as_optional():
    shown = subprocess.run(cli_argv("onboard", "--help"), capture_output=True, text=True, check=False)
    assert shown.returncode == 0
    usage = shown.stdout.split("\n\n")[0]
    assert "ACTION" not in usage and "onboard verify FILE.tar.gz --certs DIR" in usage
    assert "optional: check a package instead of creating one" in shown.stdout


def test_onboard_verify_help_has_its_own_usage_line():
    # Its usage was the parent's three forms followed by "verify [-h] ...".
    shown = subprocess.run(cli_argv("onboard", "verify", "--help"), capture_output=True, text=True, check=False)
    assert shown.returncode == 0
    usage = shown.stdout.split("\n\n")[0]
    assert usage.startswith("usage: serviceradar-poller onboard verify [-h] --certs DIR") and "--out" not in usage


def test_onboard_without_type_names_the_push_agent_form_too(pki: ForgePki, tmp_path: Path) -> None:
    argv = ["onboard", "--certs", str(pki.directory), "--tenant", ACME, "--component", "a", "--partition", "p"]
    result = subprocess.run(cli_argv(*argv, "--out", str(tmp_path / "x.tar.gz")), capture_output=True, text=True, check=False)
    assert result.returncode == 2
    detail = json.loads(result.stdout)["detail"]
    assert "--type agent|checker|gateway (a polled component's package) or --gateway HOST:PORT (a push agent's)" in detail
    assert "onboard verify FILE --certs DIR" in detail


def test_onboard_help_tells_type_gateway_from_gateway():
    shown = subprocess.run(cli_argv("onboard", "--help"), capture_output=True, text=True, check=False)
    text = " ".join(shown.stdout.split())  # argparse wraps the help
    assert "`gateway` is a gateway component's own certificate, not a push agent's package (that is --gateway HOST:PORT)" in text
    assert "make a push agent's package" in text and "not --type gateway, which is a gateway component's own" in text


@pytest.mark.parametrize(("gateway", "verifies"), [("127.0.0.1:50052", True), (None, False)], ids=["push", "poll"])
def test_a_push_agents_certificate_is_proven_as_the_tls_client_it_is(
    pki: ForgePki, snapshot: TrustSnapshot, gateway: str | None, verifies: bool
) -> None:
    # A push agent dials the gateway: another PKI may issue it a clientAuth-only
    # certificate. Its package was proven for a TLS server, and refused for that.
    from cryptography.x509.oid import ExtendedKeyUsageOID

    blob = create_package(pki.directory, tenant=ACME, component_id="agent-042", partition_id="site-a", gateway_addr=gateway).data
    client_only = pki.agent(ACME, "agent-042", "site-a", eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    swapped = repack(
        blob,
        replace={
            "certs/component.pem": client_only.leaf_pem,
            "certs/component-chain.pem": client_only.chain_pem,
            KEY: client_only.key_pem,
        },
    )
    if verifies:
        assert verify_package_bytes(swapped, trust=snapshot).context.component_id == "agent-042"
    else:  # a polled agent serves TLS: clientAuth alone is not enough
        assert refused(swapped, snapshot).reason is Reason.UNTRUSTED_CHAIN


def test_a_package_whose_self_check_refuses_it_is_refused_with_the_reason(
    pki: ForgePki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A stale CRL: every new certificate of the tenant is refused crl_expired, and so is the
    # package made with one. It exited 2 `usage`, as if the command line were wrong.
    from datetime import timedelta

    from crls import write_tenant_crl

    from poller.cli.main import main
    from poller.identity.certinfo import utcnow

    now = utcnow()
    write_tenant_crl(pki, ACME, this_update=now - timedelta(days=2), next_update=now - timedelta(days=1))
    out = tmp_path / "x.tar.gz"
    argv = ["onboard", "--certs", str(pki.directory), "--tenant", ACME, "--component", "a", "--partition", "p"]
    assert main([*argv, "--type", "agent", "--out", str(out)]) == 3
    verdict = json.loads(capsys.readouterr().out)
    assert (verdict["created"], verdict["reason"]) == (False, "crl_expired")
    assert "does not verify" in verdict["detail"] and not out.exists()
