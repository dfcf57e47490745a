"""The `cluster` section of the daemon config (dynamic membership, issue 11)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from poller.cli.main import main
from poller.config import DEFAULT_CLUSTER_BUCKET, ClusterConfig, ConfigError, load_config, parse_config


def _config(cluster: object, **top: Any) -> dict[str, Any]:
    return {
        "poller_id": "poller-1",
        "cluster": cluster,
        "agents": {
            "edge-1": {"address": "10.0.0.1:50051", "tenant": "acme-corp"},
            "edge-2": {"address": "10.0.0.2:50051", "tenant": "xyz-inc"},
        },
        **top,
    }


def _issues(doc: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    return [(issue.path, issue.message) for issue in info.value.issues]


def test_a_dynamic_cluster_section_is_read_with_its_defaults(tmp_path: Path) -> None:
    path = tmp_path / "poller.json"
    cluster = {"mode": "dynamic", "nats": "nats://nats:4222", "creds": "poller.creds", "tenants": ["acme-corp"], "capacity": 2}
    path.write_text(json.dumps(_config(cluster)))
    config = load_config(path)
    assert config.cluster == ClusterConfig(
        nats="nats://nats:4222",
        creds=tmp_path / "poller.creds",  # relative to the config file, like every path
        bucket=DEFAULT_CLUSTER_BUCKET,
        capacity=2.0,
        tenants=("acme-corp",),
    )
    assert config.polled_agents == config.agents  # the leases decide, slot by slot


def test_the_nats_url_defaults_to_the_nats_sink() -> None:
    config = parse_config(_config({"mode": "dynamic"}, sink={"type": "nats", "url": "tls://bus:4222"}))
    assert config.cluster is not None and config.cluster.nats == "tls://bus:4222"


@pytest.mark.parametrize(
    ("cluster", "path", "message"),
    [
        ({"mode": "dynamic"}, "cluster.nats", "required"),
        ({"nats": "nats://n:4222"}, "cluster.mode", "required"),
        ({"mode": "static", "nats": "nats://n:4222"}, "cluster.mode", "`shard` key"),
        ({"mode": "dynamic", "nats": "http://n:4222"}, "cluster.nats", "scheme"),
        ({"mode": "dynamic", "nats": "nats://n:4222", "tenant": ["acme-corp"]}, "cluster.tenant", 'did you mean "tenants"'),
        ({"mode": "dynamic", "nats": "nats://n:4222", "tenants": []}, "cluster.tenants", "non-empty array"),
        ({"mode": "dynamic", "nats": "nats://n:4222", "tenants": ["Acme"]}, "cluster.tenants[0]", "not a valid tenant slug"),
        ({"mode": "dynamic", "nats": "nats://n:4222", "tenants": ["acme-corp", "acme-corp"]}, "cluster.tenants[1]", "twice"),
        ({"mode": "dynamic", "nats": "nats://n:4222", "capacity": 0}, "cluster.capacity", "positive number"),
        ({"mode": "dynamic", "nats": "nats://n:4222", "capacity": True}, "cluster.capacity", "positive number"),
        ({"mode": "dynamic", "nats": "nats://n:4222", "bucket": "a.b"}, "cluster.bucket", "not a bucket name"),
        ("dynamic", "cluster", "expected an object"),
    ],
)
def test_bad_cluster_settings_are_named_with_their_path(cluster: object, path: str, message: str) -> None:
    issues = _issues(_config(cluster))
    assert any(p == path and message in m for p, m in issues), issues


def test_cluster_and_static_shards_are_two_answers_to_one_question() -> None:
    issues = _issues(_config({"mode": "dynamic", "nats": "nats://n:4222"}, shard={"index": 0, "count": 2}))
    assert any(p == "cluster" and "shard" in m for p, m in issues), issues


def test_a_password_in_the_url_is_never_echoed() -> None:
    issues = _issues(_config({"mode": "dynamic", "nats": "http://user:s3cret@n:4222"}))
    assert issues and not any("s3cret" in m for _, m in issues)


def test_a_restriction_to_a_tenant_no_agent_names_is_a_warning_with_a_suggestion() -> None:
    config = parse_config(_config({"mode": "dynamic", "nats": "nats://n:4222", "tenants": ["acme-crop"]}))
    assert any(w.path == "cluster.tenants[0]" and '"acme-corp"' in w.message for w in config.warnings), config.warnings


def test_config_check_shows_the_cluster_and_run_once_refuses_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "poller.json"
    path.write_text(json.dumps(_config({"mode": "dynamic", "nats": "nats://u:pw@nats:4222", "tenants": ["acme-corp"]})))
    assert main(["config", "check", "--no-files", str(path)]) == 0
    out = capsys.readouterr().out
    assert "cluster: dynamic" in out and "acme-corp" in out and "pw" not in out
    assert main(["run", "--config", str(path), "--once"]) == 2
    assert "run --once" in capsys.readouterr().err


@pytest.mark.parametrize(("interval", "warned"), [("2s", True), ("10s", False)])
def test_dynamic_mode_under_ten_seconds_is_warned_of(interval: str, warned: bool) -> None:
    config = parse_config(_config({"mode": "dynamic", "nats": "nats://n:4222"}, poll_interval=interval))
    assert any(w.path == "poll_interval" and "leader election" in w.message for w in config.warnings) is warned


@pytest.mark.parametrize(
    ("cluster", "path"),
    [
        ({"mode": "dynamic", "nats": "nats://a:4222,,nats://b:4222"}, "cluster.nats"),
        ({"mode": "dynamic", "nats": ["tls://a:4222", "nats://b:4222"]}, "cluster.nats"),
        ({"mode": "dynamic", "nats": "nats://a:4222", "tls": {"ca_file": "ca.pem"}}, "cluster.tls"),
        ({"mode": "dynamic", "nats": "tls://a:4222", "tls": {"cert_file": "c.pem"}}, "cluster.tls"),
        ({"mode": "dynamic", "nats": "tls://a:4222", "replicas": 7}, "cluster.replicas"),
        ({"mode": "dynamic", "nats": "tls://a:4222", "capacity": 1000}, "cluster.capacity"),
    ],
)
def test_bad_urls_tls_replicas_and_capacity_are_config_errors(cluster: dict[str, Any], path: str) -> None:
    assert any(p == path for p, _ in _issues(_config(cluster))), _issues(_config(cluster))


def test_url_lists_tls_and_replicas_are_read_and_the_cluster_takes_the_sinks() -> None:
    sink = {"type": "nats", "url": ["tls://a:4222", "tls://b:4222"], "tls": {"ca_file": "/ca.pem"}, "replicas": 3}
    config = parse_config(_config({"mode": "dynamic"}, sink=sink))
    assert config.sink.url == "tls://a:4222,tls://b:4222" and config.sink.replicas == 3
    assert config.cluster is not None and config.cluster.nats == config.sink.url and config.cluster.tls == config.sink.tls
    assert config.sink.tls is not None and str(config.sink.tls.ca_file) == "/ca.pem"
