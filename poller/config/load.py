"""Loading a config file, the checks `config check` and `run` share, and the example config.

>>> parse_config(json.loads(example_config())).poller_id
'poller-1'
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from poller.config.engine import ConfigError, ConfigIssue, index, key, parse_json, show
from poller.config.model import DEFAULT_MAX_CONCURRENT_POLLS, DEFAULT_REASSEMBLY_BUDGET, PollerConfig
from poller.config.sections import parse_config
from poller.delivery.channels import is_token

__all__ = ["check_files", "example_config", "load_config", "unsupported"]


def load_config(path: str | Path) -> PollerConfig:
    """Read, decode and validate a JSON config file.

    Relative paths inside it are resolved against the file's directory.
    Raises ConfigError for an unreadable file, a JSON syntax error (with line
    and column) or invalid content.
    """
    path = Path(path)
    where = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([ConfigIssue(where, "cannot read: no such file")]) from None
    except IsADirectoryError:
        raise ConfigError([ConfigIssue(where, "cannot read: is a directory")]) from None
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise ConfigError([ConfigIssue(where, f"cannot read: {reason}")]) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigIssue(where, f"not UTF-8 text (bad byte at offset {exc.start})")]) from None
    try:
        data = parse_json(text)
    except json.JSONDecodeError as exc:
        raise ConfigError([ConfigIssue(where, f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")]) from None
    except ValueError as exc:  # NaN / Infinity
        raise ConfigError([ConfigIssue(where, f"invalid JSON: {exc}")]) from None
    base_dir = path.absolute().parent
    return replace(parse_config(data, base_dir=base_dir), source=path.absolute())


def unsupported(config: PollerConfig) -> tuple[ConfigIssue, ...]:
    """Valid settings this version cannot run; `config check` and `run`
    both refuse them, so the two always agree.

    With a NATS sink every check's service_type becomes a subject token
    (`<tenant>.agents.results.<service_type>`), so it must be one.
    """
    if config.sink.type != "nats":
        return ()
    issues: list[ConfigIssue] = []
    for agent in config.agents:
        for i, check in enumerate(agent.checks):
            if not is_token(check.service_type):
                issues.append(
                    ConfigIssue(
                        key(index(key(key("agents", agent.name), "checks"), i), "service_type"),
                        f"{show(check.service_type)} cannot be a NATS subject token "
                        "(letters, digits, '_' and '-' only) and the sink is nats",
                    )
                )
    return tuple(issues)


def check_files(config: PollerConfig) -> tuple[ConfigIssue, ...]:
    """Look for the files the config will need (for `config check`); warnings, not errors.

    Reports a missing certs_dir, root.pem, or tenant CA (tenants/<slug>/ca.pem)
    for each tenant an agent names.  The daemon may run on another machine,
    so these never fail validation.
    """
    from poller.trust.layout import CertsLayout

    layout = CertsLayout(config.certs_dir)
    if not config.certs_dir.is_dir():
        return (ConfigIssue("certs_dir", f"{config.certs_dir} is not a directory"),)
    issues: list[ConfigIssue] = []
    if not layout.root_ca.is_file():
        issues.append(ConfigIssue("certs_dir", f"{layout.root_ca} is missing"))
    for tenant in config.tenants:
        ca = layout.tenant_ca(tenant)
        if not ca.is_file():
            issues.append(ConfigIssue("certs_dir", f"{ca} is missing: agents of tenant {tenant} cannot be verified"))
    if config.gateway is not None:
        missing = False
        for name, path in (("gateway.cert", config.gateway.cert), ("gateway.key", config.gateway.key)):
            if not path.is_file():
                missing = True
                issues.append(ConfigIssue(name, f"{path} is missing: the gateway cannot serve push agents"))
        if not missing:
            from poller.trust.serving import serving_problems

            try:
                chain, key = config.gateway.cert.read_bytes(), config.gateway.key.read_bytes()
            except OSError as exc:
                issues.append(ConfigIssue("gateway.cert", f"cannot read {exc.filename}: {exc.strerror}"))
            else:
                served = serving_problems(chain, key, where=str(config.gateway.cert))
                issues.extend(ConfigIssue("gateway.cert", problem) for problem in served)
    creds = config.sink.creds if config.sink.type == "nats" else None
    if creds is not None and not creds.is_file():
        issues.append(ConfigIssue("sink.creds", f"{creds} is missing (write it with `serviceradar-poller nats-config`)"))
    return tuple(issues)


_EXAMPLE: dict[str, Any] = {
    "poller_id": "poller-1",
    "partition": "default",
    "poll_interval": "30s",
    "certs_dir": "certs",
    "sink": {"type": "file", "dir": "data"},
    "metrics_listen": "127.0.0.1:9464",
    "log_format": "auto",
    "log_level": "info",
    "max_concurrent_polls": DEFAULT_MAX_CONCURRENT_POLLS,
    "reassembly_budget": DEFAULT_REASSEMBLY_BUDGET,
    "backoff_initial": "1s",
    "backoff_max": "1m",
    "require_crl": False,
    "crl_state": "crl-state.json",
    # Serves the push agents; cert and key are their defaults (<certs_dir>/gateway.pem, gateway-key.pem).
    "gateway": {"listen": "0.0.0.0:50052", "cert": "certs/gateway.pem", "key": "certs/gateway-key.pem"},
    "agents": {
        "edge-1": {
            "address": "10.0.0.5:50051",
            "tenant": "acme-corp",
            "component_id": "agent-001",
            "partition": "partition-1",
            "strict_labels": False,
            "checks": [
                {"service_type": "process", "service_name": "nginx", "details": "nginx"},
                {"service_type": "port", "service_name": "SSH", "details": "127.0.0.1:22", "port": 22},
                {"service_type": "icmp", "service_name": "ping", "details": "1.1.1.1"},
                {"service_type": "sweep", "service_name": "network_sweep", "results_interval": "5m"},
            ],
        },
        "site-b": {
            "address": "[2001:db8::7]:50051",
            "tenant": "xyz-inc",
            "component_id": "agent-007",
            "partition": "site-b",
            "checks": [
                {"service_type": "grpc", "service_name": "sysmon", "details": "127.0.0.1:50083"},
            ],
        },
        # A push agent: it dials the gateway (no address) and is told its checks and interval.
        "edge-push": {
            "push": True,
            "tenant": "acme-corp",
            "component": "agent-002",
            "partition": "partition-1",
            "interval": "30s",
            "checks": [
                {"service_type": "port", "service_name": "SSH", "details": "127.0.0.1:22"},
                {"service_type": "icmp", "service_name": "ping", "details": "1.1.1.1"},
            ],
        },
    },
}


def example_config() -> str:
    """A complete, valid example config as JSON text (every key spelled out)."""
    return json.dumps(_EXAMPLE, indent=2) + "\n"
