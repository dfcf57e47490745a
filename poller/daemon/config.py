"""The daemon's configuration: JSON in the shape of ServiceRadar's Go poller config.

An existing Go poller config migrates by adding `tenant` to every agent.  Keys
the Go poller uses and this poller does not (core_address, listen_addr,
security, logging, ...) are accepted and reported as warnings; any other
unknown key is an error.  Validation collects every problem before it fails:

>>> try:
...     parse_config({"poller_id": "p", "agents": {"a": {"address": "h:1"}}})
... except ConfigError as exc:
...     print(exc)
agents.a.tenant: required: every agent names its tenant (there is no default tenant)

Durations are float seconds throughout.  Paths in issues are dotted keys with
list indices in brackets (`agents.edge-1.checks[2].results_interval`); a key
that is not a plain word is quoted (`agents["edge.1"].tenant`).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from poller.address import show_value, split_host_port
from poller.agent.budget import DEFAULT_REASSEMBLY_BUDGET
from poller.daemon.durations import (
    BARE_NUMBER_REASON,
    DurationError,
    format_duration,
    parse_duration,
)
from poller.identity.names import format_edge_cn, is_label
from poller.identity.reasons import PollerError

__all__ = [
    "DEFAULT_BACKOFF_INITIAL",
    "DEFAULT_BACKOFF_MAX",
    "DEFAULT_CALL_TIMEOUT",
    "DEFAULT_CERTS_DIR",
    "DEFAULT_CLUSTER_BUCKET",
    "DEFAULT_CYCLE_FRACTION",
    "DEFAULT_LOG_FORMAT",
    "DEFAULT_MAX_CONCURRENT_POLLS",
    "DEFAULT_NATS_URL",
    "DEFAULT_PARTITION",
    "DEFAULT_POLL_INTERVAL",
    "DEFAULT_REASSEMBLY_BUDGET",
    "DEFAULT_SINK_DIR",
    "LOG_FORMATS",
    "SINK_TYPES",
    "AgentConfig",
    "CheckConfig",
    "ClusterConfig",
    "ConfigError",
    "ConfigIssue",
    "PollerConfig",
    "ShardConfig",
    "SinkConfig",
    "check_files",
    "example_config",
    "load_config",
    "parse_config",
    "redact_url",
    "split_host_port",
    "unsupported",
]

DEFAULT_PARTITION = "default"
DEFAULT_POLL_INTERVAL = 30.0
DEFAULT_CERTS_DIR = "certs"
DEFAULT_SINK_DIR = "data"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_OUTBOX = "outbox.db"
DEFAULT_OUTBOX_MAX_ROWS = 100_000
DEFAULT_OUTBOX_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_STREAM_MAX_AGE = 7 * 24 * 3600.0
DEFAULT_DUPLICATE_WINDOW = 2 * 3600.0
DEFAULT_PUBLISH_TIMEOUT = 5.0
DEFAULT_LOG_FORMAT = "auto"
DEFAULT_MAX_CONCURRENT_POLLS = 500
MIN_REASSEMBLY_BUDGET = 1024 * 1024
DEFAULT_CALL_TIMEOUT = 5.0  # the most call_timeout defaults to (see default_call_timeout)
DEFAULT_CYCLE_FRACTION = 0.8  # cycle_timeout defaults to this share of poll_interval
DEFAULT_BACKOFF_INITIAL = 1.0
DEFAULT_BACKOFF_MAX = 60.0
DEFAULT_CLUSTER_BUCKET = "serviceradar-poller"
CLUSTER_MODES = ("dynamic",)

LOG_FORMATS = ("auto", "json", "console")
SINK_TYPES = ("file", "nats")
NATS_SCHEMES = ("nats", "tls", "ws", "wss")

LogFormat = Literal["auto", "json", "console"]
SinkType = Literal["file", "nats"]

_TRUNCATE = 60
_SUBJECT_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a channel token, as poller.handlers.channel_for requires
_TOP = "(top level)"

_TRUST_NOTE = "ignored: trust comes from certs_dir (root.pem, tenants/<slug>/ca.pem), not from a security block"
_GO_NOTE = "ignored: a Go poller key this poller does not use"

# Keys the Go poller's config carries that have no meaning here.  Accepted so
# that an existing config migrates by adding `tenant`, reported as warnings.
GO_TOP_KEYS: Mapping[str, str] = MappingProxyType(
    {
        "core_address": "ignored: results go to the sink, not to a core service",
        "listen_addr": "ignored: this poller serves no gRPC API (see metrics_listen)",
        "service_name": _GO_NOTE,
        "service_type": _GO_NOTE,
        "source_ip": _GO_NOTE,
        "kv_address": "ignored: replicas share agents through NATS JetStream KV (the cluster section)",
        "logging": "ignored: use log_format",
        "security": _TRUST_NOTE,
    }
)
GO_AGENT_KEYS: Mapping[str, str] = MappingProxyType({"security": _TRUST_NOTE})
GO_CHECK_KEYS: Mapping[str, str] = MappingProxyType(
    {
        "config_interval": "ignored: GetConfig polling is not supported",
    }
)

TOP_KEYS = (
    "poller_id",
    "partition",
    "poll_interval",
    "certs_dir",
    "sink",
    "metrics_listen",
    "log_format",
    "max_concurrent_polls",
    "reassembly_budget",
    "call_timeout",
    "cycle_timeout",
    "backoff_initial",
    "backoff_max",
    "shard",
    "cluster",
    "require_crl",
    "agents",
)
AGENT_KEYS = ("address", "tenant", "component_id", "partition", "strict_labels", "checks")
CHECK_KEYS = ("service_type", "service_name", "details", "port", "results_interval")
CLUSTER_KEYS = ("mode", "nats", "creds", "bucket", "capacity", "tenants")
SINK_KEYS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "file": ("type", "dir"),
        "nats": (
            "type",
            "url",
            "creds",
            "outbox",
            "outbox_max_rows",
            "outbox_max_bytes",
            "max_age",
            "max_bytes",
            "duplicate_window",
            "publish_timeout",
        ),
    }
)


# --------------------------------------------------------------------------- types


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem (or warning) at a path in the config, e.g. `poll_interval`."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ConfigError(PollerError, ValueError):
    """The config is invalid; `issues` lists every problem found, in document order.

    `warnings` holds what would have been warnings had the config been valid.
    """

    def __init__(
        self, issues: list[ConfigIssue] | tuple[ConfigIssue, ...], warnings: list[ConfigIssue] | tuple[ConfigIssue, ...] = ()
    ) -> None:
        self.issues: tuple[ConfigIssue, ...] = tuple(issues)
        self.warnings: tuple[ConfigIssue, ...] = tuple(warnings)
        super().__init__("\n".join(str(issue) for issue in self.issues))

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.issues)


@dataclass(frozen=True, slots=True)
class SinkConfig:
    """Where results go.

    type "file": `dir` is set (absolute when loaded from a file); the nats fields keep their defaults.
    type "nats": `url` is set, `outbox` is the SQLite outbox file, dir None; `creds` is a
    credentials file from `nats-config` (None: no authentication); max_age / max_bytes
    (None: unlimited) / duplicate_window are the tenant streams' limits.
    """

    type: SinkType = "file"
    dir: Path | None = Path(DEFAULT_SINK_DIR)
    url: str | None = None
    creds: Path | None = None
    outbox: Path | None = None
    outbox_max_rows: int = DEFAULT_OUTBOX_MAX_ROWS
    outbox_max_bytes: int = DEFAULT_OUTBOX_MAX_BYTES
    max_age: float = DEFAULT_STREAM_MAX_AGE
    max_bytes: int | None = None
    duplicate_window: float = DEFAULT_DUPLICATE_WINDOW
    publish_timeout: float = DEFAULT_PUBLISH_TIMEOUT


@dataclass(frozen=True, slots=True)
class CheckConfig:
    """One service check; `results_interval` None means a GetStatus every poll interval."""

    service_type: str
    service_name: str
    details: str = ""
    port: int = 0
    results_interval: float | None = None


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """One agent: where to dial it and which tenant's CA must have issued its certificate.

    component_id / partition, when set, pin the agent's certificate name to
    `<component_id>.<partition>.<tenant>.serviceradar`; when None, any
    component or partition issued by the tenant's CA is accepted.
    """

    name: str
    address: str
    tenant: str
    component_id: str | None = None
    partition: str | None = None
    checks: tuple[CheckConfig, ...] = ()
    # Refuse (label_mismatch) results whose reported agent_id / partition
    # differ from the certificate's component / partition, instead of only
    # counting and logging the disagreement.
    strict_labels: bool = False

    @property
    def host(self) -> str:
        """The host part of address (an IPv6 address without brackets)."""
        return split_host_port(self.address)[0]

    @property
    def port(self) -> int:
        return split_host_port(self.address)[1]

    @property
    def expected_cn(self) -> str | None:
        """The exact certificate CN expected, if component_id and partition are both set."""
        if self.component_id is None or self.partition is None:
            return None
        return format_edge_cn(self.component_id, self.partition, self.tenant)


@dataclass(frozen=True, slots=True)
class ShardConfig:
    """Static sharding: this replica polls the agents that rendezvous hashing on
    the agent name assigns to shard `index` of `count` (poller.cluster.assign)."""

    index: int
    count: int


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Dynamic membership: replicas share the agents through leases in a
    JetStream KV bucket (poller.cluster). `capacity` weighs this replica's
    share; `tenants`, when set, restricts it to those tenants' agents."""

    nats: str
    creds: Path | None = None
    bucket: str = DEFAULT_CLUSTER_BUCKET
    capacity: float = 1.0
    tenants: tuple[str, ...] | None = None
    mode: Literal["dynamic"] = "dynamic"


@dataclass(frozen=True, slots=True)
class PollerConfig:
    """The whole daemon configuration.  Durations are float seconds.

    Built directly (as tests do), cycle_timeout 0 means the default share of
    poll_interval and call_timeout 0 the default for that cycle_timeout;
    parse_config always fills them in.
    """

    poller_id: str
    agents: tuple[AgentConfig, ...] = ()
    partition: str = DEFAULT_PARTITION
    poll_interval: float = DEFAULT_POLL_INTERVAL
    certs_dir: Path = Path(DEFAULT_CERTS_DIR)
    sink: SinkConfig = field(default_factory=SinkConfig)
    metrics_listen: str | None = None
    log_format: LogFormat = "auto"
    max_concurrent_polls: int = DEFAULT_MAX_CONCURRENT_POLLS
    reassembly_budget: int = DEFAULT_REASSEMBLY_BUDGET  # bytes, all streams being reassembled together
    call_timeout: float = 0.0
    cycle_timeout: float = 0.0
    backoff_initial: float = DEFAULT_BACKOFF_INITIAL
    backoff_max: float = DEFAULT_BACKOFF_MAX
    shard: ShardConfig | None = None
    cluster: ClusterConfig | None = None
    require_crl: bool = False  # refuse agents of tenants without a CRL (crl_expired)
    warnings: tuple[ConfigIssue, ...] = ()
    source: Path | None = None  # the file it was loaded from, if any

    def __post_init__(self) -> None:
        if self.cycle_timeout <= 0:
            object.__setattr__(self, "cycle_timeout", self.poll_interval * DEFAULT_CYCLE_FRACTION)
        if self.call_timeout <= 0:
            object.__setattr__(self, "call_timeout", default_call_timeout(self.cycle_timeout))

    @property
    def agents_by_name(self) -> Mapping[str, AgentConfig]:
        return MappingProxyType({agent.name: agent for agent in self.agents})

    @property
    def polled_agents(self) -> tuple[AgentConfig, ...]:
        """The agents this replica polls: all of them, or its shard's share."""
        if self.shard is None:
            return self.agents
        from poller.cluster.assign import shard_of

        shards = shard_of((agent.name for agent in self.agents), self.shard.count)
        return tuple(agent for agent in self.agents if shards[agent.name] == self.shard.index)

    @property
    def tenants(self) -> tuple[str, ...]:
        """Every tenant named by an agent, sorted, without repeats."""
        return tuple(sorted({agent.tenant for agent in self.agents}))

    @property
    def check_count(self) -> int:
        return sum(len(agent.checks) for agent in self.agents)

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """metrics_listen split into (host, port); host "" means every interface."""
        if self.metrics_listen is None:
            return None
        return split_host_port(self.metrics_listen, listen=True)


# --------------------------------------------------------------------------- helpers


def default_call_timeout(cycle_timeout: float) -> float:
    """call_timeout when none is configured: 5s, or a third of cycle_timeout if
    that is less, so a dial, the health check and a check fit in one cycle
    and a default never warns about another default.

    >>> default_call_timeout(24.0), default_call_timeout(4.0)
    (5.0, 1.333)
    """
    return min(DEFAULT_CALL_TIMEOUT, round(cycle_timeout / 3, 3))


_show = show_value


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {_show(value)}"
    if isinstance(value, (int, float)):
        return f"number {_show(value)}"
    if isinstance(value, str):
        return f"string {_show(value)}"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(path: str, key: str) -> str:
    if path == _TOP:
        path = ""
    if not _PLAIN_KEY.fullmatch(key):
        return f"{path}[{json.dumps(key, ensure_ascii=False)}]"
    return f"{path}.{key}" if path else key


def _index(path: str, i: int) -> str:
    return f"{path}[{i}]"


class _JSONObject(dict):  # type: ignore[type-arg]
    """A decoded JSON object that remembers keys it saw more than once."""

    __slots__ = ("duplicates",)

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__()
        self.duplicates: list[str] = []
        for key, value in pairs:
            if key in self and key not in self.duplicates:
                self.duplicates.append(key)
            self[key] = value


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


_MISSING: Any = object()


# --------------------------------------------------------------------------- checker


class _Checker:
    """Collects issues and warnings while it reads a decoded JSON document."""

    def __init__(self) -> None:
        self.errors: list[ConfigIssue] = []
        self.warnings: list[ConfigIssue] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(ConfigIssue(path, message))

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(ConfigIssue(path, message))

    # -- shapes

    def object(
        self,
        value: object,
        path: str,
        known: tuple[str, ...],
        go_keys: Mapping[str, str] = MappingProxyType({}),
    ) -> Mapping[str, Any] | None:
        """Check that value is an object with only known keys; None if it is not an object."""
        if not isinstance(value, Mapping):
            self.error(path, f"expected an object, got {_kind(value)}")
            return None
        for key in getattr(value, "duplicates", ()):
            self.error(_key(path, key), "duplicate key (JSON keeps only the last one)")
        for key in value:
            if not isinstance(key, str):
                self.error(path, f"key {_show(key)} is not a string")
            elif key in known:
                continue
            elif key in go_keys:
                self.warn(_key(path, key), go_keys[key])
            else:
                self.error(_key(path, key), "unknown key" + _did_you_mean(key, known))
        return value

    def string(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        *,
        default: Any = _MISSING,
        required: str | None = None,
        allow_empty: bool = False,
    ) -> str | None:
        """obj[key] as a string; default when absent; None (and an issue) when invalid."""
        where = _key(path, key)
        value = obj.get(key, _MISSING)
        if value is _MISSING or (value is None and default is None):
            if default is _MISSING:
                self.error(where, required or "required")
                return None
            return cast("str | None", default)
        if not isinstance(value, str):
            self.error(where, f"expected a string, got {_kind(value)}")
            return None
        if not allow_empty and not value.strip():
            self.error(where, "must not be empty")
            return None
        return value

    def label(
        self, obj: Mapping[str, Any], key: str, path: str, what: str, *, default: Any = _MISSING, required: str | None = None
    ) -> str | None:
        value = self.string(obj, key, path, default=default, required=required, allow_empty=True)
        if value is None or key not in obj:
            return value
        if not is_label(value):
            self.error(
                _key(path, key),
                f"{_show(value)} is not a valid {what} "
                "(lowercase a-z, 0-9 and '-', 1 to 63 characters, "
                "no leading or trailing '-')",
            )
            return None
        return value

    def integer(
        self, obj: Mapping[str, Any], key: str, path: str, *, default: int, low: int, high: int | None = None
    ) -> int | None:
        where = _key(path, key)
        value = obj.get(key, _MISSING)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(where, f"expected an integer, got {_kind(value)}")
            return None
        if value < low or (high is not None and value > high):
            bound = f"{low}-{high}" if high is not None else f"at least {low}"
            self.error(where, f"{value} is out of range ({bound})")
            return None
        return value

    def boolean(self, obj: Mapping[str, Any], key: str, path: str, *, default: bool) -> bool | None:
        """obj[key] as true/false; default when absent; None (and an issue) when not a JSON boolean."""
        value = obj.get(key, _MISSING)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            self.error(_key(path, key), f"expected true or false, got {_kind(value)}")
            return None
        return value

    def duration(self, obj: Mapping[str, Any], key: str, path: str, *, default: float | None) -> float | None:
        """A positive duration in seconds; default when absent; None when invalid."""
        where = _key(path, key)
        value = obj.get(key, _MISSING)
        if value is _MISSING or (value is None and default is None):
            return default
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self.error(where, f"{_show(value)} {BARE_NUMBER_REASON}")
            return None
        if not isinstance(value, str):
            self.error(where, f'expected a duration string like "30s", got {_kind(value)}')
            return None
        try:
            seconds = parse_duration(value)
        except DurationError as exc:
            self.error(where, f"{_show(value)} {exc.reason}")
            return None
        if seconds <= 0:
            self.error(where, "must be positive")
            return None
        return seconds

    def path(self, obj: Mapping[str, Any], key: str, path: str, *, default: Any, base_dir: Path | None) -> Path | None:
        text = self.string(obj, key, path, default=default)
        if text is None:
            return None
        return _resolve(text, base_dir)

    def address(
        self, obj: Mapping[str, Any], key: str, path: str, *, listen: bool, default: Any = _MISSING, required: str | None = None
    ) -> str | None:
        value = self.string(obj, key, path, default=default, required=required)
        if value is None:
            return None
        try:
            split_host_port(value, listen=listen)
        except ValueError as exc:
            self.error(_key(path, key), str(exc))
            return None
        return value


def _did_you_mean(key: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _resolve(text: str, base_dir: Path | None) -> Path:
    path = Path(text).expanduser()
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    return path


# --------------------------------------------------------------------------- parsing


def parse_config(data: object, *, base_dir: Path | None = None) -> PollerConfig:
    """Validate a decoded JSON document and build the config.

    Relative certs_dir / sink paths are joined to base_dir (the config file's
    directory) when it is given, else left relative.  Raises ConfigError with
    every problem found.
    """
    c = _Checker()
    top = c.object(data, _TOP, TOP_KEYS, GO_TOP_KEYS)
    if top is None:
        raise ConfigError(c.errors, c.warnings)

    poller_id = c.string(top, "poller_id", "", required="required (a non-empty string naming this poller)")
    partition = c.label(top, "partition", "", "partition id", default=DEFAULT_PARTITION)
    poll_interval = c.duration(top, "poll_interval", "", default=DEFAULT_POLL_INTERVAL)
    certs_dir = c.path(top, "certs_dir", "", default=DEFAULT_CERTS_DIR, base_dir=base_dir)
    sink = _parse_sink(c, top.get("sink", _MISSING), base_dir)
    metrics_listen = c.address(top, "metrics_listen", "", listen=True, default=None)
    log_format = c.string(top, "log_format", "", default=DEFAULT_LOG_FORMAT)
    if log_format is not None and log_format not in LOG_FORMATS:
        c.error("log_format", f"{_show(log_format)} is not one of {', '.join(LOG_FORMATS)}")
    max_polls = c.integer(top, "max_concurrent_polls", "", default=DEFAULT_MAX_CONCURRENT_POLLS, low=1)
    budget = c.integer(top, "reassembly_budget", "", default=DEFAULT_REASSEMBLY_BUDGET, low=MIN_REASSEMBLY_BUDGET)
    call_timeout = c.duration(top, "call_timeout", "", default=None)
    cycle_timeout = c.duration(top, "cycle_timeout", "", default=None)
    if top.get("cycle_timeout") is None and poll_interval is not None:
        cycle_timeout = poll_interval * DEFAULT_CYCLE_FRACTION
    elif cycle_timeout is not None and poll_interval is not None and cycle_timeout >= poll_interval:
        c.error(
            "cycle_timeout",
            f"{format_duration(cycle_timeout)} must be below poll_interval "
            f"({format_duration(poll_interval)}), or cycles would overlap",
        )
        cycle_timeout = None
    if top.get("call_timeout") is None and cycle_timeout is not None:
        call_timeout = default_call_timeout(cycle_timeout)
    if call_timeout is not None and cycle_timeout is not None and call_timeout > cycle_timeout:
        c.warn(
            "call_timeout",
            f"{format_duration(call_timeout)} is longer than cycle_timeout "
            f"({format_duration(cycle_timeout)}); the cycle deadline will cut calls short",
        )
    backoff_initial = c.duration(top, "backoff_initial", "", default=DEFAULT_BACKOFF_INITIAL)
    backoff_max = c.duration(top, "backoff_max", "", default=DEFAULT_BACKOFF_MAX)
    if backoff_initial is not None and backoff_max is not None and backoff_max < backoff_initial:
        c.error(
            "backoff_max", f"{format_duration(backoff_max)} must be at least backoff_initial ({format_duration(backoff_initial)})"
        )
    shard = _parse_shard(c, top.get("shard"))
    require_crl = c.boolean(top, "require_crl", "", default=False)
    agents = _parse_agents(c, top.get("agents", _MISSING))
    cluster = _parse_cluster(c, top.get("cluster"), sink, agents, base_dir)
    if cluster is not None and shard is not None:
        c.error(
            "cluster",
            "cannot be combined with shard: static sharding and dynamic membership are two ways to split the agents; keep one",
        )

    if c.errors:
        raise ConfigError(c.errors, c.warnings)
    return PollerConfig(
        poller_id=cast(str, poller_id),
        agents=agents,
        partition=cast(str, partition),
        poll_interval=cast(float, poll_interval),
        certs_dir=cast(Path, certs_dir),
        sink=cast(SinkConfig, sink),
        metrics_listen=metrics_listen,
        log_format=cast(LogFormat, log_format),
        max_concurrent_polls=cast(int, max_polls),
        reassembly_budget=cast(int, budget),
        call_timeout=cast(float, call_timeout),
        cycle_timeout=cast(float, cycle_timeout),
        backoff_initial=cast(float, backoff_initial),
        backoff_max=cast(float, backoff_max),
        shard=shard,
        cluster=cluster,
        require_crl=bool(require_crl),
        warnings=tuple(c.warnings),
    )


def _parse_shard(c: _Checker, value: object) -> ShardConfig | None:
    """`shard: {"index": i, "count": n}`, 0 <= i < n; absent or null: poll every agent."""
    if value is None:
        return None
    obj = c.object(value, "shard", ("index", "count"))
    if obj is None:
        return None
    for key in ("index", "count"):
        if key not in obj:
            c.error(_key("shard", key), "required (an integer)")
    if "index" not in obj or "count" not in obj:
        return None
    count = c.integer(obj, "count", "shard", default=1, low=1)
    index = c.integer(obj, "index", "shard", default=0, low=0)
    if count is None or index is None:
        return None
    if index >= count:
        c.error("shard.index", f"{index} is not below shard.count ({count}); shards are numbered 0 to {count - 1}")
        return None
    return ShardConfig(index=index, count=count)


_BUCKET = re.compile(r"[A-Za-z0-9_-]+")


def _parse_cluster(
    c: _Checker, value: object, sink: SinkConfig | None, agents: tuple[AgentConfig, ...], base_dir: Path | None
) -> ClusterConfig | None:
    """`cluster: {"mode": "dynamic", "nats": URL, ...}`; absent or null: no dynamic membership.

    The NATS URL (and creds) default to the NATS sink's, so one connection
    setting serves both.
    """
    if value is None:
        return None
    obj = c.object(value, "cluster", CLUSTER_KEYS)
    if obj is None:
        return None
    errors_before = len(c.errors)
    mode = c.string(obj, "mode", "cluster", required='required: "dynamic" (static sharding is the `shard` key)')
    if mode is not None and mode not in CLUSTER_MODES:
        hint = " (static sharding is the top-level `shard` key)" if mode == "static" else ""
        c.error("cluster.mode", f"{_show(mode)} is not a cluster mode (one of: {', '.join(CLUSTER_MODES)}){hint}")
    sink_url = sink.url if sink is not None and sink.type == "nats" else None
    url = c.string(
        obj,
        "nats",
        "cluster",
        default=sink_url if sink_url is not None else _MISSING,
        required="required (a NATS URL, e.g. nats://nats:4222), unless the sink is NATS",
    )
    if url is not None and (problem := _nats_url_problem(url)):
        c.error("cluster.nats", problem)
    sink_creds = sink.creds if sink is not None and sink.type == "nats" else None
    creds = c.path(obj, "creds", "cluster", default=None, base_dir=base_dir) if obj.get("creds") is not None else sink_creds
    bucket = c.string(obj, "bucket", "cluster", default=DEFAULT_CLUSTER_BUCKET)
    if bucket is not None and not _BUCKET.fullmatch(bucket):
        c.error("cluster.bucket", f"{_show(bucket)} is not a bucket name (letters, digits, '_' and '-')")
    capacity = obj.get("capacity", 1)
    if isinstance(capacity, bool) or not isinstance(capacity, (int, float)) or not 0 < capacity < 1e9:
        c.error("cluster.capacity", f"expected a positive number (this replica's relative share), got {_kind(capacity)}")
    tenants = _parse_cluster_tenants(c, obj.get("tenants"), agents)
    if len(c.errors) > errors_before or url is None or bucket is None:
        return None
    return ClusterConfig(nats=url, creds=creds, bucket=bucket, capacity=float(capacity), tenants=tenants)


def _parse_cluster_tenants(c: _Checker, value: object, agents: tuple[AgentConfig, ...]) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        c.error("cluster.tenants", f"expected a non-empty array of tenant slugs, got {_kind(value)}")
        return None
    known = tuple(sorted({agent.tenant for agent in agents}))
    tenants: list[str] = []
    for i, tenant in enumerate(value):
        where = _index("cluster.tenants", i)
        if not isinstance(tenant, str) or not is_label(tenant):
            c.error(where, f"{_show(tenant)} is not a valid tenant slug")
        elif tenant in tenants:
            c.error(where, f"{_show(tenant)} is listed twice")
        else:
            tenants.append(tenant)
            if tenant not in known:
                c.warn(where, f"no agent names tenant {_show(tenant)}" + _did_you_mean(tenant, known))
    return tuple(tenants)


def _parse_sink(c: _Checker, value: object, base_dir: Path | None) -> SinkConfig | None:
    if value is _MISSING:
        return SinkConfig(type="file", dir=_resolve(DEFAULT_SINK_DIR, base_dir))
    if not isinstance(value, Mapping):
        c.error("sink", f"expected an object, got {_kind(value)}")
        return None
    kind = c.string(value, "type", "sink", default="file")
    if kind is None:
        return None
    if kind not in SINK_TYPES:
        c.error("sink.type", f"{_show(kind)} is not a sink type (one of: {', '.join(SINK_TYPES)})")
        return None
    keys = SINK_KEYS[kind]
    others = {k for t, ks in SINK_KEYS.items() if t != kind for k in ks} - set(keys)
    for dup in getattr(value, "duplicates", ()):
        c.error(_key("sink", dup), "duplicate key (JSON keeps only the last one)")
    for key in value:
        if key in keys:
            continue
        if key in others:
            c.error(_key("sink", key), f'not a key of a "{kind}" sink ({kind} sinks take: {", ".join(keys)})')
        else:
            c.error(_key("sink", str(key)), "unknown key" + _did_you_mean(str(key), keys))
    if kind == "file":
        directory = c.path(value, "dir", "sink", default=DEFAULT_SINK_DIR, base_dir=base_dir)
        return SinkConfig(type="file", dir=directory) if directory is not None else None
    return _parse_nats_sink(c, value, base_dir)


def _parse_nats_sink(c: _Checker, value: Mapping[str, Any], base_dir: Path | None) -> SinkConfig | None:
    errors_before = len(c.errors)
    url = c.string(value, "url", "sink", default=DEFAULT_NATS_URL)
    if url is not None:
        problem = _nats_url_problem(url)
        if problem:
            c.error("sink.url", problem)
            url = None
    creds = c.path(value, "creds", "sink", default=None, base_dir=base_dir)
    outbox = c.path(value, "outbox", "sink", default=DEFAULT_OUTBOX, base_dir=base_dir)
    max_rows = c.integer(value, "outbox_max_rows", "sink", default=DEFAULT_OUTBOX_MAX_ROWS, low=1)
    max_outbox_bytes = c.integer(value, "outbox_max_bytes", "sink", default=DEFAULT_OUTBOX_MAX_BYTES, low=1024)
    max_age = c.duration(value, "max_age", "sink", default=DEFAULT_STREAM_MAX_AGE)
    max_bytes = c.integer(value, "max_bytes", "sink", default=-1, low=1024) if value.get("max_bytes") is not None else -1
    window = c.duration(value, "duplicate_window", "sink", default=DEFAULT_DUPLICATE_WINDOW)
    publish_timeout = c.duration(value, "publish_timeout", "sink", default=DEFAULT_PUBLISH_TIMEOUT)
    if max_age is not None and window is not None and window > max_age:
        c.error(
            "sink.duplicate_window",
            f"{format_duration(window)} is longer than the stream's max_age ({format_duration(max_age)}); "
            "JetStream refuses such a stream",
        )
    if len(c.errors) > errors_before:
        return None
    return SinkConfig(
        type="nats",
        dir=None,
        url=url,
        creds=creds,
        outbox=outbox,
        outbox_max_rows=cast(int, max_rows),
        outbox_max_bytes=cast(int, max_outbox_bytes),
        max_age=cast(float, max_age),
        max_bytes=None if max_bytes == -1 else max_bytes,
        duplicate_window=cast(float, window),
        publish_timeout=cast(float, publish_timeout),
    )


def redact_url(url: str) -> str:
    """The URL without its user:password@ part (a NATS URL may carry one)."""
    return re.sub(r"(?<=//)[^/@]*@", "***@", url)


def _nats_url_problem(url: str) -> str | None:
    shown = _show(redact_url(url))
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return f"{shown} is not a URL (expected e.g. {DEFAULT_NATS_URL})"
    if parts.scheme not in NATS_SCHEMES:
        return f"{shown}: scheme must be one of {', '.join(NATS_SCHEMES)} (e.g. {DEFAULT_NATS_URL})"
    if not parts.hostname:
        return f"{shown} has no host (expected e.g. {DEFAULT_NATS_URL})"
    if port == 0:
        return f"{shown}: port 0 is not a port to connect to"
    return None


def _parse_agents(c: _Checker, value: object) -> tuple[AgentConfig, ...]:
    if value is _MISSING:
        c.warn("agents", "no agents configured: the poller has nothing to poll")
        return ()
    if not isinstance(value, Mapping):
        c.error("agents", f"expected an object mapping agent names to agents, got {_kind(value)}")
        return ()
    agents_obj = value
    for key in getattr(agents_obj, "duplicates", ()):
        c.error(_key("agents", key), "duplicate agent name (JSON keeps only the last one)")
    if not agents_obj:
        c.warn("agents", "no agents configured: the poller has nothing to poll")
    agents: list[AgentConfig] = []
    for name, spec in agents_obj.items():
        if not isinstance(name, str) or not name.strip():
            c.error(_key("agents", str(name)), "an agent name must be a non-empty string")
            continue
        agent = _parse_agent(c, name, spec, _key("agents", name))
        if agent is not None:
            agents.append(agent)
    return tuple(agents)


def _parse_agent(c: _Checker, name: str, spec: object, path: str) -> AgentConfig | None:
    errors_before = len(c.errors)
    obj = c.object(spec, path, AGENT_KEYS, GO_AGENT_KEYS)
    if obj is None:
        return None
    address = c.address(obj, "address", path, listen=False, required="required (host:port, e.g. 10.0.0.5:50051)")
    tenant = c.label(
        obj, "tenant", path, "tenant slug", required="required: every agent names its tenant (there is no default tenant)"
    )
    component_id = c.label(obj, "component_id", path, "component id", default=None)
    partition = c.label(obj, "partition", path, "partition id", default=None)
    strict_labels = c.boolean(obj, "strict_labels", path, default=False)
    checks = _parse_checks(c, obj.get("checks", _MISSING), _key(path, "checks"))
    if len(c.errors) > errors_before or address is None or tenant is None or checks is None:
        return None
    return AgentConfig(
        name=name,
        address=address,
        tenant=tenant,
        component_id=component_id,
        partition=partition,
        checks=checks,
        strict_labels=bool(strict_labels),
    )


def _parse_checks(c: _Checker, value: object, path: str) -> tuple[CheckConfig, ...] | None:
    if value is _MISSING or value is None:
        c.warn(path, "no checks configured for this agent")
        return ()
    if not isinstance(value, list):
        c.error(path, f"expected an array of checks, got {_kind(value)}")
        return None
    checks: list[CheckConfig] = []
    seen: dict[tuple[str, str], int] = {}
    errors_before = len(c.errors)
    for i, spec in enumerate(value):
        where = _index(path, i)
        check_errors = len(c.errors)
        obj = c.object(spec, where, CHECK_KEYS, GO_CHECK_KEYS)
        if obj is None:
            continue
        service_type = c.string(obj, "service_type", where)
        service_name = c.string(obj, "service_name", where)
        details = c.string(obj, "details", where, default="", allow_empty=True)
        port = c.integer(obj, "port", where, default=0, low=0, high=65535)
        interval = c.duration(obj, "results_interval", where, default=None)
        if len(c.errors) > check_errors:
            continue
        pair = (cast(str, service_type), cast(str, service_name))
        if pair in seen:
            c.warn(where, f"same service_type and service_name as {_index(path, seen[pair])}")
        else:
            seen[pair] = i
        checks.append(
            CheckConfig(
                service_type=pair[0],
                service_name=pair[1],
                details=cast(str, details),
                port=cast(int, port),
                results_interval=interval,
            )
        )
    return tuple(checks) if len(c.errors) == errors_before else None


# --------------------------------------------------------------------------- loading


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
        data = json.loads(text, object_pairs_hook=_JSONObject, parse_constant=_reject_constant)
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
            if not _SUBJECT_TOKEN.fullmatch(check.service_type):
                issues.append(
                    ConfigIssue(
                        _key(_index(_key(_key("agents", agent.name), "checks"), i), "service_type"),
                        f"{_show(check.service_type)} cannot be a NATS subject token "
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
    creds = config.sink.creds if config.sink.type == "nats" else None
    if creds is not None and not creds.is_file():
        issues.append(ConfigIssue("sink.creds", f"{creds} is missing (write it with `serviceradar-poller nats-config`)"))
    return tuple(issues)


# --------------------------------------------------------------------------- example

_EXAMPLE: dict[str, Any] = {
    "poller_id": "poller-1",
    "partition": "default",
    "poll_interval": "30s",
    "certs_dir": "certs",
    "sink": {"type": "file", "dir": "data"},
    "metrics_listen": "127.0.0.1:9464",
    "log_format": "auto",
    "max_concurrent_polls": DEFAULT_MAX_CONCURRENT_POLLS,
    "reassembly_budget": DEFAULT_REASSEMBLY_BUDGET,
    "backoff_initial": "1s",
    "backoff_max": "1m",
    "require_crl": False,
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
    },
}


def example_config() -> str:
    """A complete, valid example config as JSON text (every key spelled out)."""
    return json.dumps(_EXAMPLE, indent=2) + "\n"
