"""The daemon config: parsing, defaults, every validation rule, and `config check`."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poller.cli.main import main
from poller.config import (
    TOP_KEYS,
    AgentConfig,
    CheckConfig,
    ConfigError,
    ConfigIssue,
    PollerConfig,
    SinkConfig,
    check_files,
    example_config,
    load_config,
    parse_config,
    split_host_port,
)
from poller.config.durations import (
    DurationError,
    format_duration,
    format_duration_ns,
    parse_duration,
    parse_duration_ns,
)

MINIMAL: dict[str, Any] = {
    "poller_id": "poller-1",
    "agents": {"edge-1": {"address": "10.0.0.5:50051", "tenant": "acme-corp"}},
}

FULL: dict[str, Any] = {
    "poller_id": "poller-1",
    "partition": "default",
    "poll_interval": "30s",
    "certs_dir": "certs",
    "sink": {"type": "file", "dir": "data"},
    "metrics_listen": "127.0.0.1:9464",
    "log_format": "auto",
    "agents": {
        "edge-1": {
            "address": "10.0.0.5:50051",
            "tenant": "acme-corp",
            "component_id": "agent-001",
            "partition": "partition-1",
            "checks": [
                {"service_type": "process", "service_name": "nginx", "details": "nginx"},
                {"service_type": "port", "service_name": "SSH", "details": "127.0.0.1:22", "port": 22},
                {"service_type": "sweep", "service_name": "network_sweep", "results_interval": "5m"},
            ],
        }
    },
}


def doc(**top: Any) -> dict[str, Any]:
    """FULL with top-level keys replaced (a deep copy)."""
    data = copy.deepcopy(FULL)
    data.update(top)
    return data


def agent_doc(**fields: Any) -> dict[str, Any]:
    """FULL with fields of agents.edge-1 replaced; a value of None deletes the key."""
    data = copy.deepcopy(FULL)
    agent = data["agents"]["edge-1"]
    for key, value in fields.items():
        if value is None:
            agent.pop(key, None)
        else:
            agent[key] = value
    return data


def check_doc(index: int, **fields: Any) -> dict[str, Any]:
    data = copy.deepcopy(FULL)
    data["agents"]["edge-1"]["checks"][index].update(fields)
    return data


def issues(data: object, **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, **kwargs)
    return [str(issue) for issue in info.value.issues]


def one_issue(data: object) -> ConfigIssue:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert len(info.value.issues) == 1, info.value.issues
    return info.value.issues[0]


def write(tmp_path: Path, data: object, name: str = "poller.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=2))
    return path


# ------------------------------------------------------------------ valid configs


def test_full_config_parses_to_typed_frozen_dataclasses() -> None:
    config = parse_config(FULL)
    assert isinstance(config, PollerConfig)
    assert config.poller_id == "poller-1"
    assert config.poll_interval == 30.0
    assert config.metrics_listen == "127.0.0.1:9464"
    assert config.metrics_address == ("127.0.0.1", 9464)
    (agent,) = config.agents
    assert agent == AgentConfig(
        name="edge-1",
        address="10.0.0.5:50051",
        tenant="acme-corp",
        component_id="agent-001",
        partition="partition-1",
        checks=(
            CheckConfig("process", "nginx", "nginx"),
            CheckConfig("port", "SSH", "127.0.0.1:22", port=22),
            CheckConfig("sweep", "network_sweep", results_interval=300.0),
        ),
    )
    assert agent.host == "10.0.0.5" and agent.port == 50051
    assert agent.expected_cn == "agent-001.partition-1.acme-corp.serviceradar"
    assert config.agents_by_name["edge-1"] is agent
    assert config.tenants == ("acme-corp",)
    assert config.check_count == 3
    assert config.warnings == ()
    with pytest.raises(AttributeError):
        config.poller_id = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        agent.tenant = "xyz-inc"  # type: ignore[misc]


def test_minimal_config_gets_every_default() -> None:
    config = parse_config(MINIMAL)
    assert config.partition == "default"
    assert config.poll_interval == 30.0
    assert config.certs_dir == Path("certs")
    assert config.sink == SinkConfig(type="file", dir=Path("data"), url=None, outbox=None)
    assert config.metrics_listen is None and config.metrics_address is None
    assert config.log_format == "auto"
    assert config.max_concurrent_polls == 500
    assert config.call_timeout == 5.0
    assert config.cycle_timeout == pytest.approx(24.0)
    assert config.backoff_initial == 1.0
    assert config.backoff_max == 60.0
    assert config.source is None
    (agent,) = config.agents
    assert agent.component_id is None and agent.partition is None and agent.expected_cn is None
    assert agent.checks == ()
    assert [str(w) for w in config.warnings] == ["agents.edge-1.checks: no checks configured for this agent"]


def test_cycle_timeout_default_follows_poll_interval() -> None:
    assert parse_config(doc(poll_interval="10s")).cycle_timeout == pytest.approx(8.0)


def test_direct_construction_derives_cycle_timeout() -> None:
    assert PollerConfig(poller_id="p", poll_interval=1.0).cycle_timeout == pytest.approx(0.8)
    assert PollerConfig(poller_id="p").cycle_timeout == pytest.approx(24.0)
    assert PollerConfig(poller_id="p", poll_interval=1.0, cycle_timeout=0.5).cycle_timeout == 0.5


def test_scheduler_knobs_are_read() -> None:
    config = parse_config(
        doc(max_concurrent_polls=7, call_timeout="1500ms", cycle_timeout="20s", backoff_initial="250ms", backoff_max="2m")
    )
    assert (config.max_concurrent_polls, config.call_timeout, config.cycle_timeout) == (7, 1.5, 20.0)
    assert (config.backoff_initial, config.backoff_max) == (0.25, 120.0)


def test_nats_sink_defaults_and_fields(tmp_path: Path) -> None:
    config = parse_config(doc(sink={"type": "nats"}))
    assert config.sink == SinkConfig(type="nats", dir=None, url="nats://127.0.0.1:4222", outbox=Path("outbox.db"))
    assert (config.sink.max_age, config.sink.max_bytes, config.sink.duplicate_window) == (7 * 86400.0, None, 7200.0)
    sink = {
        "type": "nats",
        "url": "tls://nats.example:4443",
        "creds": "nats/poller.creds",
        "outbox": "state/outbox.db",
        "outbox_max_rows": 500,
        "outbox_max_bytes": 1_048_576,
        "max_age": "24h",
        "max_bytes": 1_000_000_000,
        "duplicate_window": "30m",
        "publish_timeout": "2s",
    }
    got = parse_config(doc(sink=sink), base_dir=tmp_path).sink
    assert got.url == "tls://nats.example:4443"
    assert (got.creds, got.outbox) == (tmp_path / "nats/poller.creds", tmp_path / "state/outbox.db")
    assert (got.outbox_max_rows, got.outbox_max_bytes) == (500, 1_048_576)
    assert (got.max_age, got.max_bytes, got.duplicate_window, got.publish_timeout) == (86400.0, 1_000_000_000, 1800.0, 2.0)


@pytest.mark.parametrize(
    ("sink", "path", "fragment"),
    [
        ({"outbox_max_rows": 0}, "sink.outbox_max_rows", "out of range"),
        ({"max_age": 3600}, "sink.max_age", "unit"),
        ({"duplicate_window": "3h", "max_age": "1h"}, "sink.duplicate_window", "longer than the stream's max_age"),
        ({"creds": ""}, "sink.creds", "must not be empty"),
        ({"outbox_dir": "x"}, "sink.outbox_dir", 'did you mean "outbox"'),
        ({"max_byte": 10}, "sink.max_byte", 'did you mean "max_bytes"'),
    ],
)
def test_nats_sink_problems_name_their_key(sink: dict, path: str, fragment: str) -> None:
    issue = one_issue(doc(sink={"type": "nats", **sink}))
    assert issue.path == path and fragment in issue.message, str(issue)


def test_relative_paths_resolve_against_the_config_files_directory(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    path = write(tmp_path / "etc", doc(certs_dir="certs", sink={"type": "file", "dir": "/var/x"}))
    config = load_config(path)
    assert config.certs_dir == tmp_path / "etc" / "certs"
    assert config.sink.dir == Path("/var/x")
    assert config.source == path
    default_sink = load_config(write(tmp_path / "etc", MINIMAL, "min.json")).sink
    assert default_sink.dir == tmp_path / "etc" / "data"


def test_parse_config_without_base_dir_keeps_relative_paths() -> None:
    assert parse_config(FULL).certs_dir == Path("certs")
    assert parse_config(FULL).sink.dir == Path("data")


def test_ipv6_address_in_brackets() -> None:
    config = parse_config(agent_doc(address="[2001:db8::7]:50051"))
    assert config.agents[0].host == "2001:db8::7"
    assert config.agents[0].port == 50051


def test_multiple_agents_and_tenants() -> None:
    data = copy.deepcopy(FULL)
    data["agents"]["b"] = {"address": "agent-b.example:50051", "tenant": "xyz-inc", "checks": []}
    data["agents"]["c"] = {"address": "h:1", "tenant": "acme-corp", "checks": []}
    config = parse_config(data)
    assert [a.name for a in config.agents] == ["edge-1", "b", "c"]
    assert config.tenants == ("acme-corp", "xyz-inc")


# ------------------------------------------------------------------ errors: keys and types


def test_unknown_key_with_did_you_mean() -> None:
    data = agent_doc(adress="10.0.0.5:50051")
    assert one_issue(data) == ConfigIssue("agents.edge-1.adress", 'unknown key (did you mean "address"?)')


def test_unknown_top_level_and_check_keys() -> None:
    found = issues(doc(pol_interval="30s", color="blue"))
    assert found == ['pol_interval: unknown key (did you mean "poll_interval"?)', "color: unknown key"]
    assert str(one_issue(check_doc(0, servce_name="x"))) == (
        'agents.edge-1.checks[0].servce_name: unknown key (did you mean "service_name"?)'
    )


def test_missing_tenant_is_an_error_there_is_no_default() -> None:
    issue = one_issue(agent_doc(tenant=None))
    assert issue.path == "agents.edge-1.tenant"
    assert "required" in issue.message and "no default tenant" in issue.message


@pytest.mark.parametrize(
    "slug", ["Acme-Corp", "acme*", ">", "*", "acme corp", "-acme", "acme-", "", "a" * 64, "acme.corp", "ácme"]
)
def test_bad_tenant_slug(slug: str) -> None:
    issue = one_issue(agent_doc(tenant=slug))
    assert issue.path == "agents.edge-1.tenant"
    assert "not a valid tenant slug" in issue.message


@pytest.mark.parametrize("key", ["component_id", "partition"])
@pytest.mark.parametrize("value", ["Agent-1", "a>", "*", "a.b", ""])
def test_bad_component_and_partition_labels(key: str, value: str) -> None:
    issue = one_issue(agent_doc(**{key: value}))
    assert issue.path == f"agents.edge-1.{key}"
    assert "is not a valid" in issue.message


def test_bad_top_level_partition() -> None:
    assert one_issue(doc(partition="Default")).path == "partition"


@pytest.mark.parametrize(
    "address, fragment",
    [
        ("10.0.0.5", "has no port"),
        ("10.0.0.5:", "is not a number"),
        ("10.0.0.5:http", "is not a number"),
        (":50051", "has no host"),
        ("::1:50051", "needs brackets"),
        ("[::1:50051", "is not [ipv6]:port"),
        ("[not-v6]:50051", "is not an IPv6 address"),
        ("10.0.0.5:50051 ", "whitespace"),
        ("300.1.1.1:50051", "not a valid IPv4 address"),
        ("bad_host!:50051", "not a valid host name"),
        ("", "must not be empty"),
    ],
)
def test_bad_address(address: str, fragment: str) -> None:
    issue = one_issue(agent_doc(address=address))
    assert issue.path == "agents.edge-1.address"
    assert fragment in issue.message


@pytest.mark.parametrize("address", ["h:0", "h:65536", "h:99999", "[::1]:70000"])
def test_bad_address_port(address: str) -> None:
    issue = one_issue(agent_doc(address=address))
    assert issue.path == "agents.edge-1.address"
    assert "out of range (1-65535)" in issue.message


def test_missing_address() -> None:
    issue = one_issue(agent_doc(address=None))
    assert issue.path == "agents.edge-1.address" and issue.message.startswith("required")


def test_split_host_port_listen_allows_empty_host_and_port_zero() -> None:
    assert split_host_port(":9464", listen=True) == ("", 9464)
    assert split_host_port("127.0.0.1:0", listen=True) == ("127.0.0.1", 0)
    assert parse_config(doc(metrics_listen="[::]:9464")).metrics_address == ("::", 9464)
    with pytest.raises(ValueError):
        split_host_port(":9464")


def test_bad_metrics_listen() -> None:
    assert one_issue(doc(metrics_listen="9464")).path == "metrics_listen"


@pytest.mark.parametrize("port", [-1, 65536])
def test_check_port_range(port: int) -> None:
    issue = one_issue(check_doc(1, port=port))
    assert issue.path == "agents.edge-1.checks[1].port"
    assert "out of range (0-65535)" in issue.message


@pytest.mark.parametrize(
    "data, path, fragment",
    [
        (check_doc(1, port="22"), "agents.edge-1.checks[1].port", 'expected an integer, got string "22"'),
        (check_doc(1, port=22.0), "agents.edge-1.checks[1].port", "expected an integer, got number 22.0"),
        (doc(max_concurrent_polls="500"), "max_concurrent_polls", "expected an integer"),
        (doc(max_concurrent_polls=0), "max_concurrent_polls", "out of range (at least 1)"),
        (doc(poller_id=7), "poller_id", "expected a string, got number 7"),
        (agent_doc(tenant=["acme-corp"]), "agents.edge-1.tenant", "expected a string, got an array"),
        (agent_doc(address=50051), "agents.edge-1.address", "expected a string"),
        (agent_doc(checks={"a": 1}), "agents.edge-1.checks", "expected an array of checks"),
        (check_doc(0, details=5), "agents.edge-1.checks[0].details", "expected a string"),
        (check_doc(0, service_name=""), "agents.edge-1.checks[0].service_name", "must not be empty"),
        (doc(sink="file"), "sink", "expected an object"),
        (doc(agents=["edge-1"]), "agents", "expected an object"),
        (doc(log_format="text"), "log_format", "is not one of auto, json, console"),
        (doc(certs_dir=""), "certs_dir", "must not be empty"),
        (doc(partition=None), "partition", "expected a string, got null"),
    ],
)
def test_wrong_types_and_values_name_the_path(data: dict[str, Any], path: str, fragment: str) -> None:
    issue = one_issue(data)
    assert issue.path == path
    assert fragment in issue.message


@pytest.mark.parametrize(
    "data, path",
    [
        (check_doc(1, port=True), "agents.edge-1.checks[1].port"),
        (doc(max_concurrent_polls=True), "max_concurrent_polls"),
    ],
)
def test_bool_is_not_an_int(data: dict[str, Any], path: str) -> None:
    issue = one_issue(data)
    assert issue == ConfigIssue(path, "expected an integer, got boolean true")


def test_check_needs_service_type_and_name() -> None:
    data = copy.deepcopy(FULL)
    data["agents"]["edge-1"]["checks"] = [{"details": "x"}, "not-an-object"]
    assert issues(data) == [
        "agents.edge-1.checks[0].service_type: required",
        "agents.edge-1.checks[0].service_name: required",
        'agents.edge-1.checks[1]: expected an object, got string "not-an-object"',
    ]


def test_poller_id_is_required() -> None:
    data = copy.deepcopy(FULL)
    del data["poller_id"]
    assert one_issue(data).path == "poller_id"
    assert one_issue(doc(poller_id="  ")).message == "must not be empty"


def test_top_level_must_be_an_object() -> None:
    assert issues([1, 2]) == ["(top level): expected an object, got an array"]
    assert issues(None) == ["(top level): expected an object, got null"]


def test_empty_agent_name_is_an_error() -> None:
    data = copy.deepcopy(FULL)
    data["agents"][""] = {"address": "h:1", "tenant": "acme-corp"}
    assert one_issue(data).path == 'agents[""]'


def test_agent_must_be_an_object() -> None:
    assert one_issue(doc(agents={"edge-1": "10.0.0.5:50051"})).path == "agents.edge-1"


def test_keys_that_are_not_plain_words_are_quoted_in_paths() -> None:
    data = {"poller_id": "p", "agents": {"edge.1": {"address": "h:1"}}}
    assert issues(data) == ['agents["edge.1"].tenant: required: every agent names its tenant (there is no default tenant)']


# ------------------------------------------------------------------ durations in the config


def test_bad_duration_message() -> None:
    issue = one_issue(check_doc(2, results_interval="5 minutes"))
    assert str(issue) == ('agents.edge-1.checks[2].results_interval: "5 minutes" is not a duration (use e.g. 30s, 5m, 1h30m)')


@pytest.mark.parametrize("value", [30, 30.5, "30", "0"])
def test_bare_number_duration_is_an_error(value: object) -> None:
    issue = one_issue(doc(poll_interval=value))
    assert issue.path == "poll_interval"
    assert "bare number" in issue.message


@pytest.mark.parametrize("key", ["poll_interval", "call_timeout", "backoff_initial", "backoff_max"])
@pytest.mark.parametrize("value", ["0s", "-5s", "0.1ns"])
def test_zero_or_negative_interval_is_an_error(key: str, value: str) -> None:
    assert one_issue(doc(**{key: value})) == ConfigIssue(key, "must be positive")


def test_zero_results_interval_is_an_error() -> None:
    assert one_issue(check_doc(2, results_interval="0s")) == ConfigIssue(
        "agents.edge-1.checks[2].results_interval", "must be positive"
    )


def test_duration_of_wrong_type() -> None:
    issue = one_issue(doc(call_timeout=True))
    assert issue.path == "call_timeout" and "expected a duration string" in issue.message


@pytest.mark.parametrize("cycle", ["30s", "31s", "1m"])
def test_cycle_timeout_must_be_below_poll_interval(cycle: str) -> None:
    issue = one_issue(doc(cycle_timeout=cycle))
    assert issue.path == "cycle_timeout"
    assert "must be below poll_interval (30s)" in issue.message


def test_cycle_timeout_just_below_poll_interval_is_fine() -> None:
    assert parse_config(doc(cycle_timeout="29.999s")).cycle_timeout == pytest.approx(29.999)


def test_backoff_max_below_initial_is_an_error() -> None:
    issue = one_issue(doc(backoff_initial="10s", backoff_max="5s"))
    assert issue.path == "backoff_max" and "at least backoff_initial (10s)" in issue.message


def test_call_timeout_longer_than_cycle_warns() -> None:
    config = parse_config(doc(call_timeout="25s"))
    assert [w.path for w in config.warnings] == ["call_timeout"]


# ------------------------------------------------------------------ sinks


def test_unknown_sink_type() -> None:
    issue = one_issue(doc(sink={"type": "kafka"}))
    assert issue.path == "sink.type" and "one of: file, nats" in issue.message


def test_sink_keys_are_validated_per_type() -> None:
    assert str(one_issue(doc(sink={"type": "file", "url": "nats://x:4222"}))) == (
        'sink.url: not a key of a "file" sink (file sinks take: type, dir)'
    )
    assert one_issue(doc(sink={"type": "nats", "dir": "data"})).path == "sink.dir"
    assert one_issue(doc(sink={"type": "nats", "urll": "nats://x"})).message == ('unknown key (did you mean "url"?)')


@pytest.mark.parametrize("url", ["http://x:4222", "nats://", "nats://x:notaport", "127.0.0.1:4222"])
def test_bad_nats_url(url: str) -> None:
    assert one_issue(doc(sink={"type": "nats", "url": url})).path == "sink.url"


def test_nats_url_credentials_are_not_echoed() -> None:
    issue = one_issue(doc(sink={"type": "nats", "url": "nats://alice:s3cret@host:notaport"}))
    assert "s3cret" not in issue.message and "***@host" in issue.message
    config = parse_config(doc(sink={"type": "nats", "url": "nats://alice:s3cret@host:4222"}))
    assert config.sink.url == "nats://alice:s3cret@host:4222"


# ------------------------------------------------------------------ many problems at once


def test_every_problem_is_reported_together_with_its_path() -> None:
    data = {
        "poller_id": "poller-1",
        "poll_interval": "0s",
        "log_format": "xml",
        "agents": {
            "edge-1": {
                "adress": "10.0.0.5:50051",
                "tenant": "ACME",
                "checks": [
                    {"service_type": "port", "service_name": "SSH", "port": True},
                    {"service_type": "sweep", "service_name": "s", "results_interval": "5 minutes"},
                ],
            },
            "edge-2": {"address": "10.0.0.6:50051"},
        },
    }
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    paths = [issue.path for issue in info.value.issues]
    assert paths == [
        "poll_interval",
        "log_format",
        "agents.edge-1.adress",
        "agents.edge-1.address",
        "agents.edge-1.tenant",
        "agents.edge-1.checks[0].port",
        "agents.edge-1.checks[1].results_interval",
        "agents.edge-2.tenant",
    ]
    lines = str(info.value).splitlines()
    assert lines == [str(issue) for issue in info.value.issues]
    assert lines[0] == "poll_interval: must be positive"
    assert 'agents.edge-1.adress: unknown key (did you mean "address"?)' in lines


def test_long_values_are_truncated_in_messages() -> None:
    issue = one_issue(agent_doc(tenant="X" * 500))
    assert "X" * 55 in issue.message
    assert "X" * 70 not in issue.message
    assert len(issue.message) < 200


# ------------------------------------------------------------------ Go poller keys


GO_CONFIG: dict[str, Any] = {
    "agents": {
        "docker-agent": {
            "address": "agent:50051",
            "tenant": "acme-corp",
            "security": {
                "server_name": "serviceradar-agent",
                "mode": "mtls",
                "cert_dir": "/etc/serviceradar/certs",
                "tls": {
                    "cert_file": "poller.pem",
                    "key_file": "poller-key.pem",
                    "ca_file": "root.pem",
                    "client_ca_file": "root.pem",
                },
            },
            "checks": [
                {"service_type": "process", "service_name": "serviceradar-agent", "details": "serviceradar-agent"},
                {"service_type": "port", "service_name": "SSH", "details": "agent:22"},
                {"service_type": "sweep", "service_name": "network_sweep", "details": "", "results_interval": "5m"},
            ],
        }
    },
    "core_address": "core:50052",
    "listen_addr": ":50053",
    "poll_interval": "30s",
    "poller_id": "docker-poller",
    "partition": "default",
    "source_ip": "poller",
    "service_name": "PollerService",
    "service_type": "grpc",
    "kv_address": "datasvc:50057",
    "security": {"mode": "mtls", "cert_dir": "/etc/serviceradar/certs", "role": "poller"},
    "logging": {"level": "info", "debug": False, "output": "stdout"},
}


def test_go_poller_config_plus_tenant_is_valid_with_warnings() -> None:
    config = parse_config(GO_CONFIG)
    assert config.poller_id == "docker-poller"
    assert config.agents[0].checks[2].results_interval == 300.0
    warned = {w.path: w.message for w in config.warnings}
    assert set(warned) == {
        "core_address",
        "listen_addr",
        "source_ip",
        "service_name",
        "service_type",
        "kv_address",
        "security",
        "logging",
        "agents.docker-agent.security",
    }
    assert all(message.startswith("ignored") for message in warned.values())


def test_agent_security_block_warns_that_trust_comes_from_certs_dir() -> None:
    config = parse_config(agent_doc(security={"mode": "mtls"}))
    (warning,) = config.warnings
    assert warning.path == "agents.edge-1.security"
    assert "certs_dir" in warning.message


def test_go_keys_are_not_accepted_in_the_wrong_place() -> None:
    # core_address is a Go top-level key, not an agent key.
    assert one_issue(agent_doc(core_address="x:1")).message.startswith("unknown key")


def test_go_config_without_tenant_still_fails() -> None:
    data = copy.deepcopy(GO_CONFIG)
    del data["agents"]["docker-agent"]["tenant"]
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert [i.path for i in info.value.issues] == ["agents.docker-agent.tenant"]
    assert any(w.path == "core_address" for w in info.value.warnings)


def test_empty_agents_is_allowed_with_a_warning() -> None:
    config = parse_config({"poller_id": "p", "agents": {}})
    assert config.agents == ()
    assert [w.path for w in config.warnings] == ["agents"]
    config = parse_config({"poller_id": "p"})
    assert [w.path for w in config.warnings] == ["agents"]


def test_duplicate_check_warns() -> None:
    data = copy.deepcopy(FULL)
    checks = data["agents"]["edge-1"]["checks"]
    checks.append(dict(checks[0]))
    config = parse_config(data)
    assert [str(w) for w in config.warnings] == [
        "agents.edge-1.checks[3]: same service_type and service_name as agents.edge-1.checks[0]"
    ]


# ------------------------------------------------------------------ files


def test_json_syntax_error_reports_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, '{\n  "poller_id": "p",\n  "agents" {}\n}\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (issue,) = info.value.issues
    assert issue.path == str(path)
    assert "line 3, column 12" in issue.message


def test_duplicate_json_keys_are_errors(tmp_path: Path) -> None:
    text = (
        '{"poller_id": "p", "poller_id": "q", "agents": {'
        '"a": {"address": "h:1", "tenant": "acme-corp"},'
        '"a": {"address": "h:2", "tenant": "acme-corp", "tenant": "xyz-inc"}}}'
    )
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert [i.path for i in info.value.issues] == ["poller_id", "agents.a", "agents.a.tenant"]


def test_nan_is_not_json(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="NaN"):
        load_config(write(tmp_path, '{"poller_id": "p", "max_concurrent_polls": NaN}'))


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [str(i) for i in info.value.issues] == [f"{path}: cannot read: no such file"]


def test_directory_and_binary_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(binary)


def test_top_level_array_in_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\(top level\): expected an object"):
        load_config(write(tmp_path, "[]"))


def test_check_files_reports_missing_certificates(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL))
    assert [i.message for i in check_files(config)] == [f"{tmp_path / 'certs'} is not a directory"]
    (tmp_path / "certs" / "tenants" / "acme-corp").mkdir(parents=True)
    (tmp_path / "certs" / "root.pem").write_text("x")
    messages = [i.message for i in check_files(config)]
    assert len(messages) == 1 and "tenant acme-corp cannot be verified" in messages[0]
    (tmp_path / "certs" / "tenants" / "acme-corp" / "ca.pem").write_text("x")
    assert check_files(config) == ()


# ------------------------------------------------------------------ CLI


def test_cli_check_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = copy.deepcopy(GO_CONFIG)
    data["agents"]["other"] = {
        "address": "10.0.0.9:50051",
        "tenant": "xyz-inc",
        "checks": [{"service_type": "icmp", "service_name": "ping"}],
    }
    path = write(tmp_path, data)
    assert main(["config", "check", str(path), "--no-files"]) == 0
    out, err = capsys.readouterr()
    assert out == "ok: 2 agents, 4 checks, tenants: acme-corp, xyz-inc\n"
    err_lines = err.splitlines()
    assert "warning: core_address: ignored: results go to the sink, not to a core service" in err_lines
    assert all(line.startswith("warning: ") for line in err_lines)
    assert any(line.startswith("warning: agents.docker-agent.security: ") for line in err_lines)


def test_cli_check_looks_for_certificates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, FULL)
    assert main(["config", "check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("ok: 1 agent, 3 checks, tenants: acme-corp")
    assert err == f"warning: certs_dir: {tmp_path / 'certs'} is not a directory\n"


def test_cli_check_invalid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = agent_doc(tenant=None, adress="x:1")
    data["poll_interval"] = "30"
    path = write(tmp_path, data)
    assert main(["config", "check", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        'poll_interval: "30" is a bare number, which is ambiguous: a duration needs a unit (use e.g. 30s, 5m, 1h30m)',
        'agents.edge-1.adress: unknown key (did you mean "address"?)',
        "agents.edge-1.tenant: required: every agent names its tenant (there is no default tenant)",
    ]


def test_cli_check_syntax_error_and_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, '{"poller_id": "p",}')
    assert main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{path}: invalid JSON at line 1, column 19")
    assert main(["config", "check", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_cli_config_without_action_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["config"])
    assert info.value.code == 2


def test_cli_example_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "example"]) == 0
    text = capsys.readouterr().out
    assert text == example_config()
    data = json.loads(text)
    # The example spells out every key the parser knows (the real list, not a copy),
    # except the timeouts derived from poll_interval and the optional shard and cluster sections.
    assert set(data) == set(TOP_KEYS) - {"call_timeout", "cycle_timeout", "shard", "cluster"}
    path = write(tmp_path, text)
    assert main(["config", "check", str(path), "--no-files"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("ok: 3 agents, 7 checks, tenants: acme-corp, xyz-inc")
    assert err == ""
    config = load_config(path)
    assert config.warnings == ()
    # A gateway, whose cert and key are the defaults spelled out, and a push entry, read as one.
    assert config.gateway is not None
    assert config.gateway == parse_config(doc(gateway={"listen": "0.0.0.0:50052"}), base_dir=tmp_path).gateway
    assert (config.gateway.listen, config.gateway.cert) == ("0.0.0.0:50052", tmp_path / "certs" / "gateway.pem")
    assert [agent.name for agent in config.dial_agents] == ["edge-1", "site-b"]
    assert [agent.name for agent in config.push_agents] == ["edge-push"]
    push = config.agents_by_name["edge-push"]
    assert (push.address, push.tenant, push.component_id, push.partition) == ("", "acme-corp", "agent-002", "partition-1")
    assert config.push_interval(push) == 30.0
    assert [(check.service_type, check.details) for check in push.checks] == [("port", "127.0.0.1:22"), ("icmp", "1.1.1.1")]


@pytest.mark.parametrize("interval", ["1s", "5s", "10s", "30s", "2m", "1h"])
def test_example_with_only_the_interval_changed_is_valid_without_warnings(interval: str) -> None:
    data = json.loads(example_config())
    data["poll_interval"] = interval
    config = parse_config(data)
    assert config.warnings == ()  # no default warns about another default
    assert config.call_timeout <= config.cycle_timeout < config.poll_interval


def test_call_timeout_defaults_from_a_configured_cycle_timeout() -> None:
    config = parse_config(doc(poll_interval="10s", cycle_timeout="3s"))
    assert (config.cycle_timeout, config.call_timeout, config.warnings) == (3.0, 1.0, ())
    slow = parse_config(doc(poll_interval="5s", call_timeout="10s"))
    assert [w.path for w in slow.warnings] == ["call_timeout"]  # a value the user chose may still warn


# ------------------------------------------------------------------ the duration parser


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("30s", 30.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("2h", 7200.0),
        ("1.5s", 1.5),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        (".5s", 0.5),
        ("1.s", 1.0),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("250μs", 0.00025),
        ("10ns", 1e-8),
        ("+5s", 5.0),
        ("-5s", -5.0),
        ("1h1m1s1ms", 3661.001),
        ("18h30m", 66600.0),
    ],
)
def test_parse_duration_examples(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "s", "5", "0", "5 s", " 5s", "5S", "5sec", "1d", "5m5", "1h-5m", "--5s", ".s", "5.5.5s", "PT5S", "five seconds"]
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(DurationError):
        parse_duration(text)


def test_parse_duration_rejects_non_strings() -> None:
    with pytest.raises(DurationError):
        parse_duration(30)  # type: ignore[arg-type]


def test_parse_duration_overflow() -> None:
    with pytest.raises(DurationError, match="too large"):
        parse_duration("3000000h")


@pytest.mark.parametrize(
    "ns, text",
    [
        (0, "0s"),
        (1, "1ns"),
        (1_500, "1.5us"),
        (1_500_000, "1.5ms"),
        (500_000_000, "500ms"),
        (1_000_000_000, "1s"),
        (90_000_000_000, "1m30s"),
        (5_400_000_000_000, "1h30m"),
        (3_600_000_000_001, "1h0.000000001s"),
        (-2_000_000_000, "-2s"),
    ],
)
def test_format_duration_examples(ns: int, text: str) -> None:
    assert format_duration_ns(ns) == text


def test_format_duration_seconds() -> None:
    assert format_duration(24.0) == "24s"
    assert format_duration(0.25) == "250ms"


@given(st.integers(min_value=-(2**63 - 1), max_value=2**63 - 1))
def test_format_then_parse_round_trips(ns: int) -> None:
    text = format_duration_ns(ns)
    assert parse_duration_ns(text) == ns
    assert text == format_duration_ns(parse_duration_ns(text))


_UNITS = {"ns": 1, "us": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


@given(st.lists(st.tuples(st.integers(min_value=0, max_value=10**4), st.sampled_from(sorted(_UNITS))), min_size=1, max_size=6))
def test_parse_sums_components(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{n}{unit}" for n, unit in parts)
    assert parse_duration_ns(text) == sum(n * _UNITS[unit] for n, unit in parts)


def test_config_check_accepts_a_nats_sink_and_refuses_service_types_that_are_not_subject_tokens(tmp_path, capsys):
    path = tmp_path / "nats.json"
    agent = {"address": "10.0.0.5:50051", "tenant": "acme-corp", "checks": [{"service_type": "icmp", "service_name": "ping"}]}
    path.write_text(json.dumps({"poller_id": "p", "sink": {"type": "nats"}, "agents": {"edge-1": agent}}))
    assert main(["config", "check", str(path), "--no-files"]) == 0
    assert capsys.readouterr().out.startswith("ok: 1 agent,")
    agent["checks"] = [{"service_type": "my.type", "service_name": "x"}, {"service_type": "a>", "service_name": "y"}]
    path.write_text(json.dumps({"poller_id": "p", "sink": {"type": "nats"}, "agents": {"edge-1": agent}}))
    assert main(["config", "check", str(path), "--no-files"]) == 2
    err = capsys.readouterr().err
    assert 'agents.edge-1.checks[0].service_type: "my.type" cannot be a NATS subject token' in err
    assert "agents.edge-1.checks[1].service_type" in err


def test_config_check_warns_about_a_missing_nats_creds_file(tmp_path, capsys):
    from poller.testing.forge import ForgePki

    certs = ForgePki.create(tmp_path / "certs", tenants=("acme-corp",)).directory  # usable, as run needs it
    path = tmp_path / "nats.json"
    path.write_text(
        json.dumps({"poller_id": "p", "certs_dir": str(certs), "sink": {"type": "nats", "creds": "nats/poller.creds"}})
    )
    assert main(["config", "check", str(path)]) == 0
    err = capsys.readouterr().err
    assert f"warning: sink.creds: {tmp_path / 'nats/poller.creds'} is missing" in err


def test_version_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    import poller

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"serviceradar-poller {poller.__version__}\n"


def test_cli_check_says_one_agent_and_one_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path,
        json.dumps(
            {
                **MINIMAL,
                "agents": {"e": {**MINIMAL["agents"]["edge-1"], "checks": [{"service_type": "icmp", "service_name": "ping"}]}},
            }
        ),
    )
    assert main(["config", "check", str(path), "--no-files"]) == 0
    assert capsys.readouterr().out == "ok: 1 agent, 1 check, tenants: acme-corp\n"
