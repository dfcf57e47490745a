"""The configuration's types and every default, stated once.

Each section is a frozen dataclass; its fields are the section's JSON keys
(poller.config.sections derives the key lists from them), and its defaults
are the `DEFAULT_*` constants below, which the parsers use too.

>>> PollerConfig(poller_id="p", poll_interval=30.0).cycle_timeout  # 80% of the interval
24.0
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from poller.address import split_host_port
from poller.agent.budget import DEFAULT_REASSEMBLY_BUDGET
from poller.cluster.assign import shard_of
from poller.config.engine import ConfigIssue
from poller.identity.names import format_edge_cn
from poller.nats.urls import TlsFiles

__all__ = [
    "CLUSTER_MODES",
    "DEFAULT_BACKOFF_INITIAL",
    "DEFAULT_BACKOFF_MAX",
    "DEFAULT_CALL_TIMEOUT",
    "DEFAULT_CERTS_DIR",
    "DEFAULT_CLUSTER_BUCKET",
    "DEFAULT_CRL_STATE",
    "DEFAULT_CYCLE_FRACTION",
    "DEFAULT_DUPLICATE_WINDOW",
    "DEFAULT_GATEWAY_AUDIT_ACCEPTED",
    "DEFAULT_GATEWAY_CERT",
    "DEFAULT_GATEWAY_CONNECTION_IDLE",
    "DEFAULT_GATEWAY_KEEPALIVE",
    "DEFAULT_GATEWAY_KEEPALIVE_TIMEOUT",
    "DEFAULT_GATEWAY_KEY",
    "DEFAULT_GATEWAY_MAX_CALLS_PER_AGENT",
    "DEFAULT_GATEWAY_MAX_CALLS_PER_TENANT",
    "DEFAULT_GATEWAY_MAX_CONNECTIONS",
    "DEFAULT_GATEWAY_MAX_CONNECTIONS_PER_TENANT",
    "DEFAULT_GATEWAY_MAX_RESULTS_BYTES",
    "DEFAULT_GATEWAY_MAX_SERVICES",
    "DEFAULT_GATEWAY_MAX_STATUS_BYTES",
    "DEFAULT_GATEWAY_PUSH_BURST",
    "DEFAULT_GATEWAY_PUSH_RATE",
    "DEFAULT_GATEWAY_STREAM_TIMEOUT",
    "DEFAULT_LOG_FORMAT",
    "DEFAULT_LOG_LEVEL",
    "DEFAULT_MAX_CONCURRENT_POLLS",
    "DEFAULT_NATS_URL",
    "DEFAULT_OUTBOX",
    "DEFAULT_OUTBOX_MAX_BYTES",
    "DEFAULT_OUTBOX_MAX_ROWS",
    "DEFAULT_PARTITION",
    "DEFAULT_POLL_INTERVAL",
    "DEFAULT_PUBLISH_TIMEOUT",
    "DEFAULT_REASSEMBLY_BUDGET",
    "DEFAULT_SINK_DIR",
    "DEFAULT_STREAM_MAX_AGE",
    "GRPC_MAX_INT",
    "GRPC_MAX_MS",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "MAX_AGENT_RATE",
    "MAX_GATEWAY_RESULTS_BYTES",
    "MIN_REASSEMBLY_BUDGET",
    "NATS_SCHEMES",
    "SINK_TYPES",
    "AgentConfig",
    "CheckConfig",
    "ClusterConfig",
    "GatewayConfig",
    "LogFormat",
    "LogLevel",
    "PollerConfig",
    "ShardConfig",
    "SinkConfig",
    "SinkType",
    "default_call_timeout",
    "default_cycle_timeout",
    "json_keys",
]

DEFAULT_PARTITION = "default"
DEFAULT_POLL_INTERVAL = 30.0
DEFAULT_CERTS_DIR = "certs"
DEFAULT_SINK_DIR = "data"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_OUTBOX = "outbox.db"
DEFAULT_CRL_STATE = "crl-state.json"  # beside the outbox (NATS sink), else beside the config file
DEFAULT_OUTBOX_MAX_ROWS = 100_000
DEFAULT_OUTBOX_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_STREAM_MAX_AGE = 7 * 24 * 3600.0
DEFAULT_DUPLICATE_WINDOW = 2 * 3600.0
DEFAULT_PUBLISH_TIMEOUT = 5.0
DEFAULT_MAX_CONCURRENT_POLLS = 500
MIN_REASSEMBLY_BUDGET = 1024 * 1024
DEFAULT_CALL_TIMEOUT = 5.0  # the most call_timeout defaults to (see default_call_timeout)
DEFAULT_CYCLE_FRACTION = 0.8  # cycle_timeout defaults to this share of poll_interval
DEFAULT_BACKOFF_INITIAL = 1.0
DEFAULT_BACKOFF_MAX = 60.0
DEFAULT_CLUSTER_BUCKET = "serviceradar-poller"
# The agent gateway (poller.gateway): upstream's bounds, plus per-tenant ones.
DEFAULT_GATEWAY_CERT = "gateway.pem"  # in certs_dir
DEFAULT_GATEWAY_KEY = "gateway-key.pem"
DEFAULT_GATEWAY_MAX_SERVICES = 5000
DEFAULT_GATEWAY_MAX_STATUS_BYTES = 4096
DEFAULT_GATEWAY_MAX_RESULTS_BYTES = 15 * 1024 * 1024
# Every gateway call of a tenant takes a token. The defaults fit the fleet the gateway
# is sized for in one tenant: 10,000 agents at 30 s push 333/s, plus a Hello and a
# GetConfig each now and then; the burst lets a reconnect storm after a restart through
# in seconds (the refused agents retry). Lower them to share one gateway among many tenants.
DEFAULT_GATEWAY_PUSH_RATE = 1000
DEFAULT_GATEWAY_PUSH_BURST = 10000
DEFAULT_GATEWAY_MAX_CALLS_PER_TENANT = 10000
# One agent's share of them: ServiceRadar's agent has a ControlStream, a push and a few
# of its streams (sysmon, sweeps, mtr: their own goroutines) open at once. Without it
# one stolen agent key could hold every place of its tenant (StreamStatus calls that
# send nothing, 5 minutes each) and cut off all its sibling agents.
DEFAULT_GATEWAY_MAX_CALLS_PER_AGENT = 64
DEFAULT_GATEWAY_MAX_CONNECTIONS = 20000  # TCP connections in all (accepted before TLS, so not per tenant)
DEFAULT_GATEWAY_MAX_CONNECTIONS_PER_TENANT = 10000  # connections a tenant's proven callers hold
DEFAULT_GATEWAY_CONNECTION_IDLE = 300.0  # a connection without calls this long is closed and stops counting
DEFAULT_GATEWAY_STREAM_TIMEOUT = 300.0
# Upstream's gateway (go/pkg/grpc/server.go): a ping after 120 s without a frame from the
# agent, the connection closed if it is not answered within 20 s. Without them a connection
# that died without a FIN (a NAT dropping its entry, a host gone) holds its ControlStream,
# and the tenant's place for it, until the kernel gives up: hours.
DEFAULT_GATEWAY_KEEPALIVE = 120.0
DEFAULT_GATEWAY_KEEPALIVE_TIMEOUT = 20.0
# grpc's integer channel options are a C int: a value above this does not reach the
# server, it stops it starting (OverflowError). So: a duration in milliseconds (24.8
# days), grpc.max_allowed_incoming_connections (max_connections), and
# grpc.max_receive_message_length (max_results_bytes + 1 MiB).
GRPC_MAX_INT = 2**31 - 1
GRPC_MAX_MS = GRPC_MAX_INT
MAX_GATEWAY_RESULTS_BYTES = GRPC_MAX_INT - 1024 * 1024
# A per-agent rate (and burst) above this is no bound at all; its burst is computed from it.
MAX_AGENT_RATE = 10**9
# Acceptance audit lines per method and connection, not per call: the gateway's
# agents make a call per push (poller.audit.ACCEPT_AUDIT_MODES).
DEFAULT_GATEWAY_AUDIT_ACCEPTED = "connection"
CLUSTER_MODES = ("dynamic",)

LOG_FORMATS = ("auto", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")
SINK_TYPES = ("file", "nats")
NATS_SCHEMES = ("nats", "tls", "ws", "wss")

LogFormat = Literal["auto", "json", "console"]
SinkType = Literal["file", "nats"]
DEFAULT_LOG_FORMAT: LogFormat = "auto"
LogLevel = Literal["debug", "info", "warning", "error"]
DEFAULT_LOG_LEVEL: LogLevel = "info"

# Field metadata: NOT_A_KEY marks a field the JSON does not carry (the
# agent's name is its key in `agents`; warnings and source are the loader's).
NOT_A_KEY: Mapping[str, Any] = MappingProxyType({"key": False})


def json_keys(cls: type[Any], *, only: str | None = None) -> tuple[str, ...]:
    """The JSON keys of a section: its dataclass fields, minus those marked NOT_A_KEY.

    `only` keeps the fields whose `sinks` metadata (when present) names that sink type.

    >>> json_keys(ShardConfig)
    ('index', 'count')
    """
    keys = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("key", True) and (only is None or only in f.metadata.get("sinks", (only,))):
            keys.append(f.name)
    return tuple(keys)


def default_cycle_timeout(poll_interval: float) -> float:
    """cycle_timeout when none is configured: a share of the poll interval.

    >>> default_cycle_timeout(30.0)
    24.0
    """
    return poll_interval * DEFAULT_CYCLE_FRACTION


def default_call_timeout(cycle_timeout: float) -> float:
    """call_timeout when none is configured: 5s, or a third of cycle_timeout if
    that is less, so a dial, the health check and a check fit in one cycle
    and a default never warns about another default.

    >>> default_call_timeout(24.0), default_call_timeout(4.0)
    (5.0, 1.333)
    """
    return min(DEFAULT_CALL_TIMEOUT, round(cycle_timeout / 3, 3))


_FILE: Mapping[str, Any] = MappingProxyType({"sinks": ("file",)})
_NATS: Mapping[str, Any] = MappingProxyType({"sinks": ("nats",)})


@dataclass(frozen=True, slots=True)
class SinkConfig:
    """Where results go.

    type "file": `dir` is set (absolute when loaded from a file); the nats fields keep their defaults.
    type "nats": `url` is set (one URL, or several joined by commas: the client's server
    list), `outbox` is the SQLite outbox file, dir None; `creds` is an NKey seed, `.creds`
    or nats-config JSON file (None: no authentication); `tls` the CA and client
    certificate for tls:// URLs; max_age / max_bytes (None: unlimited) / duplicate_window
    are the tenant streams' limits; `replicas` of each stream the sink creates (None: 3 on
    a JetStream cluster of at least 3 servers, else 1).
    """

    type: SinkType = "file"
    dir: Path | None = field(default=Path(DEFAULT_SINK_DIR), metadata=_FILE)
    url: str | None = field(default=None, metadata=_NATS)
    creds: Path | None = field(default=None, metadata=_NATS)
    outbox: Path | None = field(default=None, metadata=_NATS)
    outbox_max_rows: int = field(default=DEFAULT_OUTBOX_MAX_ROWS, metadata=_NATS)
    outbox_max_bytes: int = field(default=DEFAULT_OUTBOX_MAX_BYTES, metadata=_NATS)
    max_age: float = field(default=DEFAULT_STREAM_MAX_AGE, metadata=_NATS)
    max_bytes: int | None = field(default=None, metadata=_NATS)
    duplicate_window: float = field(default=DEFAULT_DUPLICATE_WINDOW, metadata=_NATS)
    publish_timeout: float = field(default=DEFAULT_PUBLISH_TIMEOUT, metadata=_NATS)
    tls: TlsFiles | None = field(default=None, metadata=_NATS)
    replicas: int | None = field(default=None, metadata=_NATS)


@dataclass(frozen=True, slots=True)
class CheckConfig:
    """One service check; `results_interval` None means a GetStatus every poll interval."""

    service_type: str
    service_name: str
    details: str = ""
    port: int = 0
    results_interval: float | None = None


#: The names the gateway gives agents no push entry lists (gateway.accept_unlisted):
#: `unlisted:<tenant>/<component>.<partition>`. No agent of a config may take a name
#: of this form, so an unlisted agent's results and liveness are never a listed one's.
UNLISTED_AGENT_PREFIX = "unlisted:"


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """One agent: where to dial it and which tenant's CA must have issued its certificate.

    component_id / partition, when set, pin the agent's certificate name to
    `<component_id>.<partition>.<tenant>.serviceradar`; when None, any
    component or partition issued by the tenant's CA is accepted.
    """

    name: str = field(metadata=NOT_A_KEY)
    address: str
    tenant: str
    component_id: str | None = None
    partition: str | None = None
    checks: tuple[CheckConfig, ...] = ()
    # Refuse (label_mismatch) results whose reported agent_id / partition
    # differ from the certificate's component / partition, instead of only
    # counting and logging the disagreement.
    strict_labels: bool = False
    # A push agent (poller.gateway): it dials the gateway; address is "" and
    # component_id is its proven component (the `component` key, default the
    # entry's name). `interval`: its push interval (None: poll_interval).
    push: bool = False
    interval: float | None = None

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
class GatewayConfig:
    """The agent gateway `serviceradar-poller run` serves to push agents
    (poller.gateway): where, with which certificate, and its bounds. cert and
    key default to `<certs_dir>/gateway.pem` and `gateway-key.pem`."""

    listen: str
    cert: Path
    key: Path
    accept_unlisted: bool = False
    audit_accepted: str = DEFAULT_GATEWAY_AUDIT_ACCEPTED
    max_services: int = DEFAULT_GATEWAY_MAX_SERVICES
    max_status_bytes: int = DEFAULT_GATEWAY_MAX_STATUS_BYTES
    max_results_bytes: int = DEFAULT_GATEWAY_MAX_RESULTS_BYTES
    push_rate: int = DEFAULT_GATEWAY_PUSH_RATE
    push_burst: int = DEFAULT_GATEWAY_PUSH_BURST
    push_rate_per_agent: int = 0  # 0: no per-agent rate
    push_burst_per_agent: int = 0  # 0: ten seconds of push_rate_per_agent
    max_calls_per_tenant: int = DEFAULT_GATEWAY_MAX_CALLS_PER_TENANT
    max_calls_per_agent: int = DEFAULT_GATEWAY_MAX_CALLS_PER_AGENT
    max_connections: int = DEFAULT_GATEWAY_MAX_CONNECTIONS
    max_connections_per_tenant: int = DEFAULT_GATEWAY_MAX_CONNECTIONS_PER_TENANT
    connection_idle: float = DEFAULT_GATEWAY_CONNECTION_IDLE
    stream_timeout: float = DEFAULT_GATEWAY_STREAM_TIMEOUT
    keepalive: float = DEFAULT_GATEWAY_KEEPALIVE
    keepalive_timeout: float = DEFAULT_GATEWAY_KEEPALIVE_TIMEOUT


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
    share; `tenants`, when set, restricts it to those tenants' agents. `nats`
    (URLs joined by commas), `creds` and `tls` default to the NATS sink's;
    `replicas` of the bucket it creates (None: 3 on a JetStream cluster of at
    least 3 servers, else 1)."""

    nats: str
    creds: Path | None = None
    bucket: str = DEFAULT_CLUSTER_BUCKET
    capacity: float = 1.0
    tenants: tuple[str, ...] | None = None
    mode: Literal["dynamic"] = "dynamic"
    tls: TlsFiles | None = None
    replicas: int | None = None


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
    log_format: LogFormat = DEFAULT_LOG_FORMAT
    log_level: LogLevel = DEFAULT_LOG_LEVEL
    max_concurrent_polls: int = DEFAULT_MAX_CONCURRENT_POLLS
    reassembly_budget: int = DEFAULT_REASSEMBLY_BUDGET  # bytes, all streams being reassembled together
    call_timeout: float = 0.0
    cycle_timeout: float = 0.0
    backoff_initial: float = DEFAULT_BACKOFF_INITIAL
    backoff_max: float = DEFAULT_BACKOFF_MAX
    shard: ShardConfig | None = None
    cluster: ClusterConfig | None = None
    require_crl: bool = False  # refuse agents of tenants without a CRL (crl_expired)
    gateway: GatewayConfig | None = None  # serve push agents (poller.gateway)
    # The newest CRL per tenant and CA key, kept across restarts (None: in memory only).
    crl_state: Path | None = None
    warnings: tuple[ConfigIssue, ...] = field(default=(), metadata=NOT_A_KEY)
    source: Path | None = field(default=None, metadata=NOT_A_KEY)  # the file it was loaded from, if any
    # polled_agents, once computed: the sharding hashes the whole fleet, and the
    # scheduler asks for it per agent (issue 18 item 14). A holder, because the
    # class is frozen; replace() makes a new, empty one.
    _polled: list[tuple[AgentConfig, ...]] = field(
        default_factory=list, init=False, repr=False, compare=False, metadata=NOT_A_KEY
    )

    def __post_init__(self) -> None:
        if self.cycle_timeout <= 0:
            object.__setattr__(self, "cycle_timeout", default_cycle_timeout(self.poll_interval))
        if self.call_timeout <= 0:
            object.__setattr__(self, "call_timeout", default_call_timeout(self.cycle_timeout))

    @property
    def agents_by_name(self) -> Mapping[str, AgentConfig]:
        return MappingProxyType({agent.name: agent for agent in self.agents})

    @property
    def dial_agents(self) -> tuple[AgentConfig, ...]:
        """The agents the poller dials (every agent but the push agents)."""
        if not any(agent.push for agent in self.agents):
            return self.agents
        return tuple(agent for agent in self.agents if not agent.push)

    @property
    def push_agents(self) -> tuple[AgentConfig, ...]:
        """The agents that dial the gateway and push (`"push": true`)."""
        return tuple(agent for agent in self.agents if agent.push)

    def push_interval(self, agent: AgentConfig) -> float:
        """A push agent's interval: its own, else poll_interval."""
        return agent.interval if agent.interval is not None else self.poll_interval

    @property
    def polled_agents(self) -> tuple[AgentConfig, ...]:
        """The agents this replica polls: all dialed agents, or its shard's share (computed once)."""
        dialed = self.dial_agents
        if self.shard is None:
            return dialed
        if not self._polled:
            shards = shard_of((agent.name for agent in dialed), self.shard.count)
            self._polled.append(tuple(agent for agent in dialed if shards[agent.name] == self.shard.index))
        return self._polled[0]

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
