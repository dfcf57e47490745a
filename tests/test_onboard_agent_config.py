"""Onboarding packages the real agents load as is, and `onboard verify` held to what `onboard` writes.

Issue 16 item 8: config.json holds only the agent's own keys (the push agent
decodes it with DisallowUnknownFields), checked against the key lists cited
below from upstream's sources; the tenant identifiers are in identity.json.
Issue 18 item 17: a package whose config.json turns mTLS off and carries the
tenant CA's key as base64 DER is refused; key material is found by parsing.

Real PKI (ForgePki over poller.pki), real archives, the attacker's repacking as
in test_onboard.py. The real Go agents are not run here (CI has no Go); the
key lists are what their decoders accept.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from spawn import cli_argv
from test_onboard import config_of, identity_of, members, refused, repack, with_config

from poller.identity.reasons import Reason
from poller.onboard import create_package, verify_package_bytes
from poller.pki.build import key_pem, new_key
from poller.pki.gateway import issue_gateway_cert
from poller.testing.forge import ForgePki
from poller.trust.store import TrustSnapshot, TrustStore

ACME = "acme-corp"
KEY = "certs/component-key.pem"

# --- upstream's key lists (carverauto/serviceradar), the JSON tags of the structs the agents decode ---------
# pkg/agent/types.go `ServerConfig` at 4cef9e43b (2026-01-03), the last agent that serves AgentService (poll):
POLL_SERVER_CONFIG = {
    "agent_id", "agent_name", "host_ip", "partition", "listen_addr", "security",
    "kv_address", "kv_security", "checkers_dir", "logging",
}  # fmt: skip
# pkg/agent/types.go `ServerConfig` at cac9ec1af (2026-01-11), the push agent; cmd/agent/main.go loadConfig
# decodes it with json.Decoder.DisallowUnknownFields():
PUSH_SERVER_CONFIG = {
    "agent_id", "agent_name", "host_ip", "partition", "security", "kv_address", "kv_security",
    "checkers_dir", "logging", "gateway_addr", "gateway_security", "push_interval", "tenant_id", "tenant_slug",
}  # fmt: skip
# go/pkg/agent/types.go `ServerConfig` at HEAD 1e940288b (2026-05), same decoder:
HEAD_SERVER_CONFIG = {
    "agent_id", "agent_name", "component_type", "host_ip", "partition", "security", "kv_address",
    "kv_security", "checkers_dir", "logging", "gateway_addr", "gateway_security", "push_interval",
    "status_debounce_interval", "status_heartbeat_interval", "sync_runtime_enabled",
}  # fmt: skip
# pkg/models/grpc.go `SecurityConfig` and `TLSConfig` (identical at all three commits):
SECURITY_CONFIG = {"mode", "cert_dir", "server_name", "role", "tls", "trust_domain", "server_spiffe_id", "workload_socket"}
TLS_CONFIG = {"cert_file", "key_file", "ca_file", "client_ca_file"}
# pkg/logger `Config` and `OTelConfig` (cac9ec1af; HEAD the same):
LOGGER_CONFIG = {"level", "debug", "output", "time_format", "otel"}
OTEL_CONFIG = {"enabled", "endpoint", "headers", "service_name", "batch_timeout", "insecure", "tls"}

SECURITY = {"_": SECURITY_CONFIG, "tls": {"_": TLS_CONFIG}}
LOGGING = {"_": LOGGER_CONFIG, "otel": {"_": OTEL_CONFIG}}
POLL_SCHEMA = {"_": POLL_SERVER_CONFIG, "security": SECURITY, "kv_security": SECURITY, "logging": LOGGING}
PUSH_SCHEMA = {"_": PUSH_SERVER_CONFIG & HEAD_SERVER_CONFIG, "gateway_security": SECURITY, "logging": LOGGING}


def unknown_fields(doc: dict[str, Any], schema: dict[str, Any], path: str = "") -> list[str]:
    """What Go's DisallowUnknownFields would stop at: every key the struct (recursively) lacks."""
    bad = [f"{path}{k}" for k in doc if k not in schema["_"]]
    for key, sub in schema.items():
        if key != "_" and isinstance(doc.get(key), dict):
            bad += unknown_fields(doc[key], sub, f"{path}{key}.")
    return bad


@pytest.fixture
def snapshot(pki: ForgePki) -> TrustSnapshot:
    return TrustStore(pki.directory, require_client=False).snapshot


@pytest.fixture
def poll(pki: ForgePki) -> bytes:
    return create_package(pki.directory, tenant=ACME, component_id="agent-042", partition_id="site-a").data


@pytest.fixture
def push(pki: ForgePki) -> bytes:
    return create_package(
        pki.directory, tenant=ACME, component_id="agent-043", partition_id="site-a", gateway_addr="gw.example.net:50052"
    ).data


# --- what the agents load ----------------------------------------------------------------------


def test_push_config_holds_exactly_the_push_agents_keys(push: bytes, snapshot: TrustSnapshot) -> None:
    config = config_of(push)
    assert unknown_fields(config, PUSH_SCHEMA) == []
    # Issue 16 item 8's list, nothing more.
    assert set(config) == {
        "agent_id", "partition", "gateway_addr", "push_interval", "gateway_security", "checkers_dir", "host_ip", "logging",
    }  # fmt: skip
    security = config["gateway_security"]
    assert set(security) == {"mode", "cert_dir", "server_name", "role", "tls"}
    assert (security["mode"], security["role"], security["server_name"]) == ("mtls", "agent", "gw.example.net")
    assert security["tls"] == {"cert_file": "component-chain.pem", "key_file": "component-key.pem", "ca_file": "root.pem"}
    assert (config["agent_id"], config["partition"], config["gateway_addr"]) == ("agent-043", "site-a", "gw.example.net:50052")
    assert config["push_interval"] == "30s"
    verified = verify_package_bytes(push, trust=snapshot)
    assert (verified.mode, verified.context.tenant, verified.as_dict()["gateway_addr"]) == ("push", ACME, "gw.example.net:50052")


@pytest.mark.parametrize("kind", ["agent", "checker", "gateway"])
def test_poll_config_holds_only_the_poll_agents_keys(pki: ForgePki, kind: str) -> None:
    config = config_of(
        create_package(pki.directory, tenant=ACME, component_id="c-1", partition_id="p-1", component_type=kind).data
    )
    assert unknown_fields(config, POLL_SCHEMA) == []
    assert config["security"]["mode"] == "mtls"


def test_tenant_identifiers_are_in_identity_json_only(poll: bytes, push: bytes) -> None:
    tenant_keys = {"tenant", "tenant_ca", "component_id", "cn", "spiffe_id", "nats_subject_prefix"}
    for blob in (poll, push):
        assert not tenant_keys & set(config_of(blob))
        identity = identity_of(blob)
        assert tenant_keys <= set(identity)
        assert identity["nats_subject_prefix"] == identity["tenant"] == ACME
    assert identity_of(push)["gateway_server_name"] == "gw.example.net"


def test_unknown_fields_would_stop_the_agent() -> None:
    # The check above can fail: yesterday's poll config.json, with its tenant keys, is what the agent refuses.
    old = {"agent_id": "a", "tenant": ACME, "security": {"mode": "mtls", "tls": {"cert_file": "x", "pin": "y"}}}
    assert unknown_fields(old, POLL_SCHEMA) == ["tenant", "security.tls.pin"]


def test_server_name_must_be_a_san_of_the_gateways_certificate(pki: ForgePki) -> None:
    from poller.pki.errors import PkiError

    issue_gateway_cert(pki.directory, dns=["gw.example.net"], ips=["10.0.0.5"])
    ok = create_package(pki.directory, tenant=ACME, component_id="a1", partition_id="p", gateway_addr="10.0.0.5:50052")
    assert config_of(ok.data)["gateway_security"]["server_name"] == "10.0.0.5"
    named = create_package(
        pki.directory,
        tenant=ACME,
        component_id="a2",
        partition_id="p",
        gateway_addr="10.0.0.9:50052",
        server_name="gw.example.net",
    )
    assert config_of(named.data)["gateway_security"]["server_name"] == "gw.example.net"
    with pytest.raises(PkiError, match=r"gw\.example\.net"):
        create_package(pki.directory, tenant=ACME, component_id="a3", partition_id="p", gateway_addr="other.example.net:50052")
    with pytest.raises(PkiError, match="only an agent"):
        create_package(
            pki.directory, tenant=ACME, component_id="a4", partition_id="p", component_type="checker", gateway_addr="10.0.0.5:1"
        )


def test_cli_onboard_gateway(pki: ForgePki, tmp_path: Path) -> None:
    out = tmp_path / "push.tar.gz"
    argv = ["onboard", "--certs", str(pki.directory), "--tenant", ACME, "--component", "agent-9", "--partition", "p1"]
    made = subprocess.run(
        cli_argv(*argv, "--gateway", "127.0.0.1:50052", "--push-interval", "5s", "--out", str(out)),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    doc = json.loads(made.stdout)
    assert (doc["created"], doc["mode"], doc["gateway_addr"], doc["component_type"]) == (True, "push", "127.0.0.1:50052", "agent")
    config = config_of(out.read_bytes())
    assert (config["push_interval"], config["gateway_security"]["server_name"]) == ("5s", "127.0.0.1")
    bad = subprocess.run(
        cli_argv(*argv, "--gateway", "127.0.0.1:50052", "--push-interval", "soon", "--out", str(tmp_path / "x.tar.gz")),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert (bad.returncode, json.loads(bad.stdout)["reason"]) == (2, "usage")
    assert not (tmp_path / "x.tar.gz").exists()
    listening = subprocess.run(
        cli_argv(*argv, "--gateway", "127.0.0.1:50052", "--listen", ":50051", "--out", str(tmp_path / "y.tar.gz")),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert (listening.returncode, json.loads(listening.stdout)["reason"]) == (2, "usage")
    assert "--listen" in listening.stderr and not (tmp_path / "y.tar.gz").exists()


# --- issue 18 item 17: verify holds config.json to what onboard writes -------------------------------------


def ca_key_der(pki: ForgePki) -> bytes:
    return pki.tenants[ACME].key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_regression_mtls_off_and_the_ca_key_as_base64_der(pki: ForgePki, poll: bytes, snapshot: TrustSnapshot) -> None:
    # The package the issue describes: mTLS off, tenant CA chain as client CA, every interface, a foreign
    # checkers_dir, and the tenant CA's private key as base64 of its DER. Accepted before the fix.
    config = config_of(poll)
    config["security"]["mode"] = "none"
    config["security"]["tls"]["client_ca_file"] = "ca-chain.pem"
    config |= {"listen_addr": "0.0.0.0:50051", "checkers_dir": "/tmp/attacker/checkers"}
    config["security"]["tls"]["ca_key"] = base64.b64encode(ca_key_der(pki)).decode()
    err = refused(repack(poll, replace={"config.json": json.dumps(config).encode()}), snapshot)
    assert err.reason is Reason.FORBIDDEN_MATERIAL
    assert "config.json" in err.detail and "MII" not in str(err)
    del config["security"]["tls"]["ca_key"]  # without the key, the edits alone are refused
    assert refused(repack(poll, replace={"config.json": json.dumps(config).encode()}), snapshot).reason is Reason.BAD_PACKAGE


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("security.mode", "none"),
        ("security.tls.client_ca_file", "ca-chain.pem"),
        ("security.tls.ca_file", "ca.pem"),
        ("security.cert_dir", "/tmp/elsewhere"),
        ("security.trust_domain", "evil.example"),
        ("listen_addr", "0.0.0.0:50051"),
        ("checkers_dir", "/tmp/attacker/checkers"),
        ("logging.otel.enabled", True),
    ],
)
def test_poll_security_values_must_be_what_onboard_writes(poll: bytes, snapshot: TrustSnapshot, path: str, value: Any) -> None:
    config = config_of(poll)
    *parents, last = path.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[last] = value
    err = refused(repack(poll, replace={"config.json": json.dumps(config).encode()}), snapshot)
    assert err.reason is Reason.BAD_PACKAGE
    assert path in err.detail


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        ("gateway_security.mode", "none", Reason.BAD_PACKAGE),
        ("gateway_security.server_name", "poller-1.serviceradar", Reason.BAD_PACKAGE),
        ("gateway_security.tls.ca_file", "ca-chain.pem", Reason.BAD_PACKAGE),
        ("gateway_security.role", "gateway", Reason.IDENTITY_MISMATCH),
        ("gateway_addr", "attacker.example.net:50052", Reason.BAD_PACKAGE),
        ("push_interval", "1ms", Reason.BAD_PACKAGE),
    ],
)
def test_push_security_values_must_be_what_onboard_writes(
    push: bytes, snapshot: TrustSnapshot, path: str, value: str, reason: Reason
) -> None:
    config = config_of(push)
    *parents, last = path.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[last] = value
    assert refused(repack(push, replace={"config.json": json.dumps(config).encode()}), snapshot).reason is reason


@pytest.mark.parametrize(
    "extra",
    [
        {"tenant_id": "00000000-0000-0000-0000-000000000001"},
        {"tenant_slug": "xyz-inc"},
        {"kv_address": "10.0.0.1:50057"},
        {"security": {"mode": "none"}},
    ],
)
def test_unknown_and_missing_keys_are_refused(push: bytes, snapshot: TrustSnapshot, extra: dict[str, Any]) -> None:
    err = refused(with_config(push, **extra), snapshot)
    assert err.reason is Reason.BAD_PACKAGE
    assert next(iter(extra)) in err.detail
    config = config_of(push)
    del config["gateway_security"]
    assert refused(repack(push, replace={"config.json": json.dumps(config).encode()}), snapshot).reason is Reason.BAD_PACKAGE


def test_host_ip_is_the_one_free_value(poll: bytes, snapshot: TrustSnapshot) -> None:
    assert verify_package_bytes(with_config(poll, host_ip="10.1.2.3"), trust=snapshot).context.tenant == ACME
    assert verify_package_bytes(with_config(poll, host_ip=""), trust=snapshot).context.tenant == ACME
    assert refused(with_config(poll, host_ip="$(reboot)"), snapshot).reason is Reason.BAD_PACKAGE
    # What onboard wrote before (the agent sends it verbatim as its source_ip): a package
    # an earlier release made still verifies; onboard itself no longer writes it.
    assert verify_package_bytes(with_config(poll, host_ip="PLACEHOLDER_HOST_IP"), trust=snapshot).context.tenant == ACME
    assert refused(with_config(poll, host_ip="PLACEHOLDER_HOST_IP_2"), snapshot).reason is Reason.BAD_PACKAGE
    # ipaddress takes an int (10.0.0.1 here), the agent's string field does not; Go's ParseIP takes no zone.
    for bad in (167772161, "fe80::1%eth0"):
        assert refused(with_config(poll, host_ip=bad), snapshot).reason is Reason.BAD_PACKAGE


def test_host_ip_is_empty_for_the_agent_to_find_unless_given(pki: ForgePki, poll: bytes, push: bytes) -> None:
    # The push agent detects its address only when host_ip is empty (cac9ec1af push_loop.go getSourceIP);
    # the placeholder onboard wrote went out as source_ip and into device ids.
    assert config_of(poll)["host_ip"] == config_of(push)["host_ip"] == ""
    given = create_package(
        pki.directory, tenant=ACME, component_id="a1", partition_id="p", gateway_addr="gw.example.net:1", host_ip="2001:DB8::7"
    )
    assert config_of(given.data)["host_ip"] == "2001:db8::7"  # canonical, as the agent would find it
    from poller.pki.errors import PkiError

    with pytest.raises(PkiError, match=r"host_ip .* is not an IP address"):
        create_package(pki.directory, tenant=ACME, component_id="a2", partition_id="p", host_ip="PLACEHOLDER_HOST_IP")


def test_cli_onboard_host_ip(pki: ForgePki, tmp_path: Path) -> None:
    argv = ["onboard", "--certs", str(pki.directory), "--tenant", ACME, "--component", "agent-9", "--partition", "p1"]
    for mode in (["--type", "agent"], ["--gateway", "127.0.0.1:50052"]):
        out = tmp_path / f"{mode[0]}.tar.gz"
        made = subprocess.run(cli_argv(*argv, *mode, "--host-ip", "10.0.0.7", "--out", str(out)), capture_output=True, text=True)
        assert made.returncode == 0, made.stderr
        assert config_of(out.read_bytes())["host_ip"] == "10.0.0.7"
    bad = subprocess.run(
        cli_argv(*argv, "--gateway", "127.0.0.1:50052", "--host-ip", "my-host", "--out", str(tmp_path / "x.tar.gz")),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert (bad.returncode, json.loads(bad.stdout)["reason"]) == (2, "usage")
    assert '--host-ip: host_ip "my-host" is not an IP address' in bad.stderr
    assert not (tmp_path / "x.tar.gz").exists()


def test_identity_and_config_move_together_or_not_at_all(push: bytes, snapshot: TrustSnapshot) -> None:
    # Moving the gateway needs both members: the edited pair verifies and shows the new gateway to the operator.
    identity = identity_of(push) | {"gateway_addr": "gw2.example.net:50052", "gateway_server_name": "gw2.example.net"}
    config = config_of(push) | {"gateway_addr": "gw2.example.net:50052"}
    config["gateway_security"]["server_name"] = "gw2.example.net"
    both = repack(push, replace={"identity.json": json.dumps(identity).encode(), "config.json": json.dumps(config).encode()})
    assert verify_package_bytes(both, trust=snapshot).as_dict()["gateway_server_name"] == "gw2.example.net"
    only_identity = repack(push, replace={"identity.json": json.dumps(identity).encode()})
    assert refused(only_identity, snapshot).reason is Reason.BAD_PACKAGE


# --- key material by parsing, not by label ------------------------------------------------------------------


def _forms(der: bytes) -> dict[str, bytes]:
    b64 = base64.b64encode(der)
    return {
        "base64 DER in a JSON value": b64,
        "URL-safe base64 without padding": base64.urlsafe_b64encode(der).rstrip(b"="),
        "base64 split by JSON newline escapes": b"\\n".join(b64[i : i + 64] for i in range(0, len(b64), 64)),
        "hex of DER": der.hex().encode(),
        "base64 of the PEM text": base64.b64encode(serialization.load_der_private_key(der, None).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )),
    }  # fmt: skip


@pytest.mark.parametrize(
    "form", ["base64 DER in a JSON value", "URL-safe base64 without padding", "base64 split by JSON newline escapes",
             "hex of DER", "base64 of the PEM text"]
)  # fmt: skip
@pytest.mark.parametrize("member", ["config.json", "identity.json"])
def test_key_in_a_json_member(pki: ForgePki, push: bytes, snapshot: TrustSnapshot, form: str, member: str) -> None:
    hidden = _forms(ca_key_der(pki))[form].decode()
    doc = json.loads(members(push)[member][1])
    raw = json.dumps(doc | {"note": "@@"}).replace("@@", hidden).encode()  # raw: JSON escapes stay as written
    err = refused(repack(push, replace={member: raw}), snapshot)
    assert err.reason is Reason.FORBIDDEN_MATERIAL
    assert member in err.detail


def test_key_under_a_certificate_label(pki: ForgePki, poll: bytes, snapshot: TrustSnapshot) -> None:
    body = base64.encodebytes(ca_key_der(pki))
    disguised = b"-----BEGIN CERTIFICATE-----\n" + body + b"-----END CERTIFICATE-----\n"
    chain = members(poll)["certs/ca-chain.pem"][1] + disguised
    assert refused(repack(poll, replace={"certs/ca-chain.pem": chain}), snapshot).reason is Reason.FORBIDDEN_MATERIAL


def test_raw_der_key_appended_to_a_certificate_file(pki: ForgePki, poll: bytes, snapshot: TrustSnapshot) -> None:
    root = members(poll)["certs/root.pem"][1] + ca_key_der(pki)
    assert refused(repack(poll, replace={"certs/root.pem": root}), snapshot).reason is Reason.FORBIDDEN_MATERIAL


def test_encrypted_and_sec1_keys_are_key_material(pki: ForgePki, poll: bytes, snapshot: TrustSnapshot) -> None:
    key = pki.tenants[ACME].key
    for der in (
        key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
        ),
        key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ),
    ):
        tampered = with_config(poll, host_ip=base64.b64encode(der).decode())
        assert refused(tampered, snapshot).reason is Reason.FORBIDDEN_MATERIAL


def test_a_second_key_beside_the_key_files_block(pki: ForgePki, poll: bytes, snapshot: TrustSnapshot) -> None:
    own = members(poll)[KEY][1]
    smuggled = own + base64.b64encode(ca_key_der(pki)) + b"\n"
    assert refused(repack(poll, replace={KEY: smuggled}), snapshot).reason is Reason.FORBIDDEN_MATERIAL
    assert refused(repack(poll, replace={KEY: own + key_pem(new_key())}), snapshot).reason is Reason.KEY_MISMATCH


def test_certificates_and_public_keys_are_not_key_material(pki: ForgePki, poll: bytes, snapshot: TrustSnapshot) -> None:
    from poller.onboard.material import find_private_key

    public = (
        pki.tenants[ACME]
        .cert.public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert find_private_key(public) is None
    assert find_private_key(base64.b64encode(public)) is None
    assert all(find_private_key(data) is None for name, (_, data) in members(poll).items() if name != KEY)
    assert find_private_key(b"0" * 200_000) is None
