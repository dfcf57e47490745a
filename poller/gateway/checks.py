"""From the config's checks to the AgentCheckConfig a push agent runs.

The table of the mapping is in poller.gateway's module docstring (and
docs/gateway.md). `config_version` is a hash of the converted checks, so it
changes exactly when the checks change (their order does not count).

>>> checks = agent_checks([Check("port", "ssh", "127.0.0.1", 22)], interval=30)  # doctest: +SKIP
>>> checks[0].check_type, checks[0].target, checks[0].port  # doctest: +SKIP
('port', '127.0.0.1:22', 22)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Protocol

from poller.address import show_value, split_host_port
from poller.proto import monitoring_pb2 as pb

__all__ = [
    "AGENT_CHECKERS",
    "CHECK_TYPES",
    "CheckSpec",
    "agent_checks",
    "check_timeout",
    "check_type_for",
    "config_version",
    "unrunnable",
]

#: service_type in the config -> the push agent's checker type. Anything else is
#: passed as it is; a push entry's check of a type the agent lacks (AGENT_CHECKERS)
#: is warned of at config parse (unrunnable).
CHECK_TYPES = {
    "port": "port",
    "tcp": "port",  # the Go agent has no "tcp" checker ("no checker found: tcp")
    "icmp": "icmp",
    "ping": "icmp",
    "http": "http",
    "https": "https",
    "grpc": "grpc",
    "process": "process",
    "snmp": "snmp",
}

#: The checker types ServiceRadar's push agent (cac9ec1af) runs a GetConfig check with: its
#: registry's (pkg/agent/registry.go) and its sweep status. For any other type, http included
#: (though Hello lists it among the agent's capabilities), it answers "no checker found" and
#: never reports the check.
AGENT_CHECKERS = frozenset({"port", "icmp", "grpc", "process", "snmp", "mapper_discovery", "sweep"})

#: Types whose target is "host:port" (the config's port is joined to a bare host).
_HOST_PORT = frozenset({"port", "grpc"})

DEFAULT_CHECK_TIMEOUT = 10  # seconds, as the Go agent's default: the most a check is given


def check_timeout(interval: float, count: int) -> int:
    """timeout_sec for each of `count` checks of an agent that pushes every `interval` s.

    The agent runs its checks one after another before each push, and waits the interval
    after the push; the board calls it unreachable once 2 intervals pass without one. So
    the checks together get half the interval (the other half is margin), each an equal
    share in whole seconds: at least 1 (the agent reads 0 as its default, 10), at most 10.

    >>> check_timeout(30, 2), check_timeout(3, 7), check_timeout(300, 1)
    (7, 1, 10)
    """
    return max(1, min(DEFAULT_CHECK_TIMEOUT, int(interval / (2 * max(count, 1)))))


class CheckSpec(Protocol):
    """A check as the config holds it (poller's CheckConfig has these fields)."""

    @property
    def service_type(self) -> str: ...

    @property
    def service_name(self) -> str: ...

    @property
    def details(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def results_interval(self) -> float | None: ...


def check_type_for(service_type: str) -> str:
    """The push agent's checker type for a config service_type."""
    return CHECK_TYPES.get(service_type, service_type)


def _target(check_type: str, details: str, port: int) -> tuple[str, int]:
    if check_type not in _HOST_PORT:
        return details, port
    try:
        _, given = split_host_port(details)
        return details, given  # the agent keeps a target's own port
    except ValueError:
        pass
    host = details or "localhost"  # the agent's own default target
    if not port:
        return host, 0
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    return f"{host}:{port}", port


def unrunnable(check: CheckSpec) -> tuple[str, str] | None:
    """Why the push agent would drop this check once converted, or could not run it, as
    (the check's key at fault, "" for the check as a whole; the reason); None if it runs it.

    >>> unrunnable(CheckConfig("grpc", "sysmon", "10.0.0.9"))  # doctest: +SKIP
    ('', 'the target "10.0.0.9" has no port, and the push agent drops a grpc check without one: ...')
    """
    check_type = check_type_for(check.service_type)
    if check_type not in AGENT_CHECKERS:
        runs = "port (or tcp), icmp (or ping), grpc, process, snmp, mapper_discovery and sweep"
        return "service_type", (
            f"{show_value(check.service_type)}: the push agent has no {check_type} checker (it answers "
            f'"no checker found" and never reports the check); it runs {runs} checks'
        )
    if check_type not in _HOST_PORT:
        return None
    target, port = _target(check_type, check.details, check.port)
    if not port:
        # grpc: protoCheckToCheckerConfig drops it without a word; port: NewPortChecker
        # refuses it at every push, and nothing is reported either way.
        fate = "drops" if check_type == "grpc" else "cannot run"
        return "", (
            f"the target {show_value(target)} has no port, and the push agent {fate} a {check_type} check "
            "without one: give details as host:port, or set port"
        )
    try:
        split_host_port(target)
    except ValueError as exc:
        return "", f"{exc}: not a target the push agent can dial (from details and port)"
    if check_type == "port" and target.startswith("["):
        # NewPortChecker splits its target at every ':' and wants exactly two parts.
        return "", (
            f"{show_value(target)}: the push agent's port checker cannot parse an IPv6 address "
            "(it splits its target at every ':'); use a host name"
        )
    return None


def agent_checks(checks: Iterable[CheckSpec], *, interval: float) -> list[pb.AgentCheckConfig]:
    """The checks as GetConfig answers them. `interval`: the push interval
    (a check's own results_interval, when set, is its interval_sec); timeout_sec
    is check_timeout's share of it."""
    checks = list(checks)
    timeout = check_timeout(interval, len(checks))
    converted = []
    for check in checks:
        check_type = check_type_for(check.service_type)
        details = check.details
        if not details and check_type == "process":
            # The agent reads an empty target as "localhost" (normalizeCheckTarget), so it
            # would look for a process of that name; its poll path falls back to the name.
            details = check.service_name
        target, port = _target(check_type, details, check.port)
        own = check.results_interval
        converted.append(
            pb.AgentCheckConfig(
                check_id=f"{check.service_type}/{check.service_name}",
                check_type=check_type,
                name=check.service_name,
                enabled=True,
                interval_sec=max(1, round(own if own else interval)),
                timeout_sec=timeout,
                target=target,
                port=port,
            )
        )
    return converted


def config_version(checks: Sequence[pb.AgentCheckConfig]) -> str:
    """A stable hash of the checks (sorted by check_id): equal exactly when the checks are."""
    docs = sorted(
        (
            {
                "id": c.check_id,
                "type": c.check_type,
                "name": c.name,
                "enabled": c.enabled,
                "interval": c.interval_sec,
                "timeout": c.timeout_sec,
                "target": c.target,
                "port": c.port,
                "path": c.path,
                "method": c.method,
                "settings": dict(sorted(c.settings.items())),
            }
            for c in checks
        ),
        key=lambda d: str(d["id"]),
    )
    digest = hashlib.sha256(json.dumps(docs, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return f"sha256:{digest[:32]}"
