"""The daemon configuration's sections: which key is which, and the rules between them.

JSON in the shape of ServiceRadar's Go poller config.  An existing Go poller
config migrates by adding `tenant` to every agent.  Keys the Go poller uses
and this poller does not (core_address, listen_addr, security, logging, ...)
are accepted and reported as warnings; any other unknown key is an error.
Validation collects every problem before it fails:

>>> try:
...     parse_config({"poller_id": "p", "agents": {"a": {"address": "h:1"}}})
... except ConfigError as exc:
...     print(exc)
agents.a.tenant: required: every agent names its tenant (there is no default tenant)

Durations are float seconds throughout.  The key lists are the model's
dataclass fields (poller.config.model); the defaults are its constants.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

from poller.audit import ACCEPT_AUDIT_MODES
from poller.cluster.assign import MAX_CAPACITY
from poller.config.durations import format_duration
from poller.config.engine import (
    MISSING,
    TOP,
    Checker,
    ConfigError,
    checked,
    did_you_mean,
    index,
    key,
    kind,
    resolve,
    show,
)
from poller.config.model import (
    CLUSTER_MODES,
    DEFAULT_BACKOFF_INITIAL,
    DEFAULT_BACKOFF_MAX,
    DEFAULT_CERTS_DIR,
    DEFAULT_CLUSTER_BUCKET,
    DEFAULT_CRL_STATE,
    DEFAULT_DUPLICATE_WINDOW,
    DEFAULT_GATEWAY_AUDIT_ACCEPTED,
    DEFAULT_GATEWAY_CERT,
    DEFAULT_GATEWAY_KEY,
    DEFAULT_LOG_FORMAT,
    DEFAULT_LOG_LEVEL,
    DEFAULT_MAX_CONCURRENT_POLLS,
    DEFAULT_NATS_URL,
    DEFAULT_OUTBOX,
    DEFAULT_OUTBOX_MAX_BYTES,
    DEFAULT_OUTBOX_MAX_ROWS,
    DEFAULT_PARTITION,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_PUBLISH_TIMEOUT,
    DEFAULT_REASSEMBLY_BUDGET,
    DEFAULT_SINK_DIR,
    DEFAULT_STREAM_MAX_AGE,
    GRPC_MAX_INT,
    GRPC_MAX_MS,
    LOG_FORMATS,
    LOG_LEVELS,
    MAX_AGENT_RATE,
    MAX_GATEWAY_RESULTS_BYTES,
    MIN_REASSEMBLY_BUDGET,
    SINK_TYPES,
    UNLISTED_AGENT_PREFIX,
    AgentConfig,
    CheckConfig,
    ClusterConfig,
    GatewayConfig,
    LogFormat,
    LogLevel,
    PollerConfig,
    ShardConfig,
    SinkConfig,
    default_call_timeout,
    default_cycle_timeout,
    json_keys,
)
from poller.identity.names import is_label
from poller.nats.urls import NatsUrlError, TlsFiles, parse_servers, redact_url

__all__ = [
    "AGENT_KEYS",
    "CHECK_KEYS",
    "CLUSTER_KEYS",
    "GATEWAY_KEYS",
    "GO_AGENT_KEYS",
    "GO_CHECK_KEYS",
    "GO_TOP_KEYS",
    "SHARD_KEYS",
    "SINK_KEYS",
    "TOP_KEYS",
    "parse_config",
    "redact_url",
]

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

TOP_KEYS = json_keys(PollerConfig)
# `component` is a push agent's name for component_id (both keys are accepted).
AGENT_KEYS = (*json_keys(AgentConfig), "component")
GATEWAY_KEYS = json_keys(GatewayConfig)
CHECK_KEYS = json_keys(CheckConfig)
CLUSTER_KEYS = json_keys(ClusterConfig)
SHARD_KEYS = json_keys(ShardConfig)
SINK_KEYS: Mapping[str, tuple[str, ...]] = MappingProxyType({t: json_keys(SinkConfig, only=t) for t in SINK_TYPES})
_BUCKET = re.compile(r"[A-Za-z0-9_-]+")
TLS_KEYS = ("ca_file", "cert_file", "key_file")
# A JetStream leader election took 4.6-5.8 s (3 servers, kill -9 of the bucket leader); lease slack is
# one interval, so an interval of 10 s rides one out without losing a slot.
MIN_DYNAMIC_INTERVAL = 10.0


def parse_config(data: object, *, base_dir: Path | None = None) -> PollerConfig:
    """Validate a decoded JSON document and build the config.

    Relative certs_dir / sink paths are joined to base_dir (the config file's
    directory) when it is given, else left relative.  Raises ConfigError with
    every problem found.
    """
    c = Checker()
    top = c.object(data, TOP, TOP_KEYS, GO_TOP_KEYS)
    if top is None:
        raise ConfigError(c.errors, c.warnings)

    poller_id = c.string(top, "poller_id", "", required="required (a non-empty string naming this poller)")
    partition = c.label(top, "partition", "", "partition id", default=DEFAULT_PARTITION)
    poll_interval = c.duration(top, "poll_interval", "", default=DEFAULT_POLL_INTERVAL)
    certs_dir = c.path(top, "certs_dir", "", default=DEFAULT_CERTS_DIR, base_dir=base_dir)
    sink = _parse_sink(c, top.get("sink", MISSING), base_dir)
    metrics_listen = c.address(top, "metrics_listen", "", listen=True, default=None)
    log_format = c.string(top, "log_format", "", default=DEFAULT_LOG_FORMAT)
    if log_format is not None and log_format not in LOG_FORMATS:
        c.error("log_format", f"{show(log_format)} is not one of {', '.join(LOG_FORMATS)}")
    log_level = c.string(top, "log_level", "", default=DEFAULT_LOG_LEVEL)
    if log_level is not None and log_level not in LOG_LEVELS:
        c.error("log_level", f"{show(log_level)} is not one of {', '.join(LOG_LEVELS)}")
    max_polls = c.integer(top, "max_concurrent_polls", "", default=DEFAULT_MAX_CONCURRENT_POLLS, low=1)
    budget = c.integer(top, "reassembly_budget", "", default=DEFAULT_REASSEMBLY_BUDGET, low=MIN_REASSEMBLY_BUDGET)
    call_timeout = c.duration(top, "call_timeout", "", default=None)
    cycle_timeout = c.duration(top, "cycle_timeout", "", default=None)
    if top.get("cycle_timeout") is None and poll_interval is not None:
        cycle_timeout = default_cycle_timeout(poll_interval)
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
    crl_state = _parse_crl_state(c, top, sink, base_dir)
    agents = _parse_agents(c, top.get("agents", MISSING))
    gateway = _parse_gateway(c, top.get("gateway"), certs_dir, base_dir)
    if gateway is None and top.get("gateway") is None and any(agent.push for agent in agents):  # a bad one is said already
        c.error("gateway", 'required: agents with "push": true dial the gateway, which needs a gateway section (listen)')
    if gateway is not None and not gateway.accept_unlisted and not _lists_push_agents(top.get("agents")):
        c.warn(
            "gateway",
            'no agent has "push": true and accept_unlisted is false, so the gateway refuses every caller '
            "(unknown_agent): list the push agents, set accept_unlisted, or remove the section",
        )
    _warn_sub_second_pushes(c, agents, poll_interval)
    _warn_slow_push_checks(c, agents, poll_interval)
    cluster = _parse_cluster(c, top.get("cluster"), sink, agents, base_dir)
    if cluster is not None and shard is not None:
        c.error(
            "cluster",
            "cannot be combined with shard: static sharding and dynamic membership are two ways to split the agents; keep one",
        )
    if cluster is not None and poll_interval is not None and poll_interval < MIN_DYNAMIC_INTERVAL:
        c.warn(
            "poll_interval",
            f"{format_duration(poll_interval)} is under {format_duration(MIN_DYNAMIC_INTERVAL)}: in dynamic mode a JetStream "
            "leader election of the cluster bucket (about 5 s) costs slots; no agent is ever polled twice, but some are "
            "not polled until it is over (docs/deployment.md)",
        )

    if c.errors:
        raise ConfigError(c.errors, c.warnings)
    return PollerConfig(
        poller_id=checked(poller_id),
        agents=agents,
        partition=checked(partition),
        poll_interval=checked(poll_interval),
        certs_dir=checked(certs_dir),
        sink=checked(sink),
        metrics_listen=metrics_listen,
        log_format=cast(LogFormat, log_format),
        log_level=cast(LogLevel, log_level),
        max_concurrent_polls=checked(max_polls),
        reassembly_budget=checked(budget),
        call_timeout=checked(call_timeout),
        cycle_timeout=checked(cycle_timeout),
        backoff_initial=checked(backoff_initial),
        backoff_max=checked(backoff_max),
        shard=shard,
        cluster=cluster,
        require_crl=bool(require_crl),
        gateway=gateway,
        crl_state=crl_state,
        warnings=tuple(c.warnings),
    )


def _parse_crl_state(c: Checker, top: Mapping[str, Any], sink: SinkConfig | None, base_dir: Path | None) -> Path | None:
    """`crl_state`: where the newest CRL per tenant and CA key is remembered.
    Absent: crl-state.json beside the outbox (NATS sink), else beside the config
    file; null: in memory only (a restart forgets them, with a warning)."""
    if "crl_state" not in top:
        if sink is not None and sink.outbox is not None:
            return sink.outbox.parent / DEFAULT_CRL_STATE
        return resolve(DEFAULT_CRL_STATE, base_dir)
    if top["crl_state"] is None:
        c.warn("crl_state", "null: CRLs are remembered in memory only, so a restart lets an older CRL back in")
        return None
    return c.path(top, "crl_state", "", default=None, base_dir=base_dir)


def _parse_shard(c: Checker, value: object) -> ShardConfig | None:
    """`shard: {"index": i, "count": n}`, 0 <= i < n; absent or null: poll every agent."""
    if value is None:
        return None
    obj = c.object(value, "shard", SHARD_KEYS)
    if obj is None:
        return None
    for name in SHARD_KEYS:
        if name not in obj:
            c.error(key("shard", name), "required (an integer)")
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


def _parse_cluster(
    c: Checker, value: object, sink: SinkConfig | None, agents: tuple[AgentConfig, ...], base_dir: Path | None
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
        c.error("cluster.mode", f"{show(mode)} is not a cluster mode (one of: {', '.join(CLUSTER_MODES)}){hint}")
    nats_sink = sink if sink is not None and sink.type == "nats" else None
    if "nats" in obj or nats_sink is None:
        url = _nats_urls(
            c, obj, "nats", "cluster", required="required (a NATS URL, e.g. tls://nats:4222), unless the sink is NATS"
        )
    else:
        url = nats_sink.url
    creds = (
        c.path(obj, "creds", "cluster", default=None, base_dir=base_dir)
        if obj.get("creds") is not None
        else (nats_sink.creds if nats_sink else None)
    )
    tls = _tls(c, obj, "cluster", base_dir) if "tls" in obj else (nats_sink.tls if nats_sink else None)
    replicas = c.integer(obj, "replicas", "cluster", default=None, low=1, high=5)
    _check_tls_scheme(c, "cluster", url, tls)
    bucket = c.string(obj, "bucket", "cluster", default=DEFAULT_CLUSTER_BUCKET)
    if bucket is not None and not _BUCKET.fullmatch(bucket):
        c.error("cluster.bucket", f"{show(bucket)} is not a bucket name (letters, digits, '_' and '-')")
    capacity = obj.get("capacity", 1)
    if isinstance(capacity, bool) or not isinstance(capacity, (int, float)) or not 0 < capacity <= MAX_CAPACITY:
        c.error(
            "cluster.capacity",
            f"expected a positive number up to {MAX_CAPACITY:g} (this replica's relative share), got {kind(capacity)}",
        )
    tenants = _parse_cluster_tenants(c, obj.get("tenants"), agents)
    if len(c.errors) > errors_before or url is None or bucket is None:
        return None
    return ClusterConfig(
        nats=url, creds=creds, bucket=bucket, capacity=float(capacity), tenants=tenants, tls=tls, replicas=replicas
    )


def _parse_cluster_tenants(c: Checker, value: object, agents: tuple[AgentConfig, ...]) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        c.error("cluster.tenants", f"expected a non-empty array of tenant slugs, got {kind(value)}")
        return None
    known = tuple(sorted({agent.tenant for agent in agents}))
    tenants: list[str] = []
    for i, tenant in enumerate(value):
        where = index("cluster.tenants", i)
        if not isinstance(tenant, str) or not is_label(tenant):
            c.error(where, f"{show(tenant)} is not a valid tenant slug")
        elif tenant in tenants:
            c.error(where, f"{show(tenant)} is listed twice")
        else:
            tenants.append(tenant)
            if tenant not in known:
                c.warn(where, f"no agent names tenant {show(tenant)}" + did_you_mean(tenant, known))
    return tuple(tenants)


def _parse_sink(c: Checker, value: object, base_dir: Path | None) -> SinkConfig | None:
    if value is MISSING:
        return SinkConfig(type="file", dir=resolve(DEFAULT_SINK_DIR, base_dir))
    if not isinstance(value, Mapping):
        c.error("sink", f"expected an object, got {kind(value)}")
        return None
    sink_type = c.string(value, "type", "sink", default="file")
    if sink_type is None:
        return None
    if sink_type not in SINK_TYPES:
        c.error("sink.type", f"{show(sink_type)} is not a sink type (one of: {', '.join(SINK_TYPES)})")
        return None
    keys = SINK_KEYS[sink_type]
    others = {k for t, ks in SINK_KEYS.items() if t != sink_type for k in ks} - set(keys)
    c.duplicates(value, "sink")
    for name in value:
        if name in keys:
            continue
        if name in others:
            c.error(key("sink", name), f'not a key of a "{sink_type}" sink ({sink_type} sinks take: {", ".join(keys)})')
        else:
            c.error(key("sink", str(name)), "unknown key" + did_you_mean(str(name), keys))
    if sink_type == "file":
        directory = c.path(value, "dir", "sink", default=DEFAULT_SINK_DIR, base_dir=base_dir)
        return SinkConfig(type="file", dir=directory) if directory is not None else None
    return _parse_nats_sink(c, value, base_dir)


def _parse_nats_sink(c: Checker, value: Mapping[str, Any], base_dir: Path | None) -> SinkConfig | None:
    errors_before = len(c.errors)
    url = _nats_urls(c, value, "url", "sink", default=DEFAULT_NATS_URL)
    creds = c.path(value, "creds", "sink", default=None, base_dir=base_dir)
    tls = _tls(c, value, "sink", base_dir)
    replicas = c.integer(value, "replicas", "sink", default=None, low=1, high=5)
    _check_tls_scheme(c, "sink", url, tls)
    if "outbox" in value and value["outbox"] is None:
        # No outbox: each publish waits for JetStream's ack, and a result the bus does
        # not take is lost (counted; `run --once` exits 5).
        outbox = None
        c.warn("sink.outbox", "null: no outbox, so results are lost while NATS is unreachable")
    else:
        outbox = c.path(value, "outbox", "sink", default=DEFAULT_OUTBOX, base_dir=base_dir)
    max_rows = c.integer(value, "outbox_max_rows", "sink", default=DEFAULT_OUTBOX_MAX_ROWS, low=1)
    max_outbox_bytes = c.integer(value, "outbox_max_bytes", "sink", default=DEFAULT_OUTBOX_MAX_BYTES, low=1024)
    max_age = c.duration(value, "max_age", "sink", default=DEFAULT_STREAM_MAX_AGE)
    max_bytes = c.integer(value, "max_bytes", "sink", default=None, low=1024)
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
        outbox_max_rows=checked(max_rows),
        outbox_max_bytes=checked(max_outbox_bytes),
        max_age=checked(max_age),
        max_bytes=max_bytes,
        duplicate_window=checked(window),
        publish_timeout=checked(publish_timeout),
        tls=tls,
        replicas=replicas,
    )


def _nats_urls(
    c: Checker, obj: Mapping[str, Any], name: str, path: str, *, default: Any = MISSING, required: str | None = None
) -> str | None:
    """A NATS URL, a comma-separated string or an array of URLs, as one comma-joined string."""
    where = key(path, name)
    value = obj.get(name, MISSING)
    if value is MISSING:
        if default is MISSING:
            c.error(where, required or "required")
            return None
        value = default
    if not isinstance(value, (str, list)):
        c.error(where, f"expected a URL or an array of URLs, got {kind(value)}")
        return None
    try:
        return ",".join(parse_servers(value))
    except NatsUrlError as exc:
        c.error(where, exc.detail)
        return None


def _tls(c: Checker, obj: Mapping[str, Any], path: str, base_dir: Path | None) -> TlsFiles | None:
    """`tls: {"ca_file", "cert_file", "key_file"}` (all optional; a client certificate needs both)."""
    value = obj.get("tls")
    if value is None:
        return None
    where = key(path, "tls")
    section = c.object(value, where, TLS_KEYS)
    if section is None:
        return None
    files = {name: c.path(section, name, where, default=None, base_dir=base_dir) for name in TLS_KEYS}
    try:
        return TlsFiles(files["ca_file"], files["cert_file"], files["key_file"])
    except NatsUrlError as exc:
        c.error(where, exc.detail)
        return None


def _check_tls_scheme(c: Checker, path: str, url: str | None, tls: TlsFiles | None) -> None:
    if url is not None and tls is not None and not all(u.startswith("tls://") for u in url.split(",")):
        c.error(key(path, "tls"), "TLS files are given but the URLs are nats://: write them as tls://")


def _parse_agents(c: Checker, value: object) -> tuple[AgentConfig, ...]:
    if value is MISSING:
        c.warn("agents", "no agents configured: the poller has nothing to poll")
        return ()
    if not isinstance(value, Mapping):
        c.error("agents", f"expected an object mapping agent names to agents, got {kind(value)}")
        return ()
    agents_obj = value
    c.duplicates(agents_obj, "agents", "duplicate agent name (JSON keeps only the last one)")
    if not agents_obj:
        c.warn("agents", "no agents configured: the poller has nothing to poll")
    agents: list[AgentConfig] = []
    for name, spec in agents_obj.items():
        if not isinstance(name, str) or not name.strip():
            c.error(key("agents", str(name)), "an agent name must be a non-empty string")
            continue
        if name.startswith(UNLISTED_AGENT_PREFIX):
            reserved = f"a name starting {UNLISTED_AGENT_PREFIX!r} is reserved for the gateway's unlisted push agents"
            c.error(key("agents", name), reserved)
            continue
        agent = _parse_agent(c, name, spec, key("agents", name))
        if agent is not None:
            agents.append(agent)
    _check_push_identities(c, agents)
    return tuple(agents)


def _lists_push_agents(value: object) -> bool:
    """Whether the agents object has a push entry, read from the JSON: an entry refused for
    another problem still lists one (the config is invalid then; no warning should say none)."""
    if not isinstance(value, Mapping):
        return False
    return any(isinstance(spec, Mapping) and spec.get("push") is True for spec in value.values())


def _warn_sub_second_pushes(c: Checker, agents: tuple[AgentConfig, ...], poll_interval: float | None) -> None:
    """Hello announces the push interval in whole seconds (at least 1), so an agent told to
    push every second under a shorter entry interval is late by its own clock: unreachable
    after 2 intervals of the entry, then ok again, over and over."""
    for agent in agents:
        interval = agent.interval if agent.interval is not None else poll_interval
        if agent.push and interval is not None and interval < 1:
            where = key(key("agents", agent.name), "interval") if agent.interval is not None else "poll_interval"
            c.warn(
                where,
                f"{format_duration(interval)} is under 1s: Hello tells the agent to push every 1s (whole seconds), "
                f"and it would be called unreachable {format_duration(2 * interval)} after each push",
            )


def _warn_slow_push_checks(c: Checker, agents: tuple[AgentConfig, ...], poll_interval: float | None) -> None:
    """The agent runs its checks one after another before each push and waits the interval
    after it: checks that may take the whole interval (each up to its timeout_sec) may push
    it past 2 intervals, and the board would flap unreachable / recovered."""
    from poller.gateway.checks import check_timeout  # late: poller.gateway's package imports poller.config

    for agent in agents:
        interval = agent.interval if agent.interval is not None else poll_interval
        count = len(agent.checks)
        if not agent.push or not count or interval is None:
            continue
        timeout = check_timeout(interval, count)
        if count * timeout >= interval:
            c.warn(
                key(key("agents", agent.name), "checks"),
                f"{count} checks of up to {timeout}s each (timeout_sec) run one after another before each push: "
                f"{count * timeout}s, not under the interval ({format_duration(interval)}), so pushes may come more "
                "than 2 intervals apart and the board would call the agent unreachable between them; "
                f"give it an interval of at least {2 * count}s, or fewer checks (docs/gateway.md)",
            )


def _check_push_identities(c: Checker, agents: list[AgentConfig]) -> None:
    """Two push entries for one (tenant, component, partition): a connecting agent
    matches the first only, so the second would stay pending forever."""
    first: dict[tuple[str, str | None, str | None], str] = {}
    for agent in agents:
        if not agent.push:
            continue
        identity = (agent.tenant, agent.component_id, agent.partition)
        if identity in first:
            where = f"tenant {agent.tenant}, component {agent.component_id}" + (
                f", partition {agent.partition}" if agent.partition else ""
            )
            c.error(
                key("agents", agent.name),
                f"the same push agent ({where}) as agents.{first[identity]}: an agent is matched to one entry only",
            )
        else:
            first[identity] = agent.name
    _warn_partitioned_and_catch_all(c, first)


def _warn_partitioned_and_catch_all(c: Checker, entries: Mapping[tuple[str, str | None, str | None], str]) -> None:
    """A catch-all entry (no partition) beside entries for one partition of the same tenant
    and component: the gateway matches an agent to the partition's entry first, so the
    catch-all hears only from that component in other partitions. Meant so only when the
    component runs in several partitions; else it stays pending forever."""
    catch_all: dict[tuple[str, str | None], str] = {}
    partitioned: dict[tuple[str, str | None], list[tuple[str, str]]] = {}
    for (tenant, component, partition), name in entries.items():
        if partition is None:
            catch_all[tenant, component] = name
        else:
            partitioned.setdefault((tenant, component), []).append((partition, name))
    for (tenant, component), name in catch_all.items():
        pinned = partitioned.get((tenant, component))
        if not pinned:
            continue
        beside = " and ".join(f"agents.{other} for partition {p}" for p, other in pinned)
        if len(pinned) == 1:
            matched = f"an agent of partition {pinned[0][0]} is matched to agents.{pinned[0][1]}"
        else:
            matched = "an agent of one of those partitions is matched to its entry"
        c.warn(
            key("agents", name),
            f"a catch-all entry (no partition) for push agent {component} of tenant {tenant}, beside {beside}: "
            f"{matched}, so agents.{name} hears only from {component} in other partitions "
            "(and stays pending if there is none)",
        )


def _parse_agent(c: Checker, name: str, spec: object, path: str) -> AgentConfig | None:
    """A polled agent (address), or a push agent (`"push": true`: it dials the
    gateway, has no address, and its component defaults to the entry's name)."""
    errors_before = len(c.errors)
    obj = c.object(spec, path, AGENT_KEYS, GO_AGENT_KEYS)
    if obj is None:
        return None
    push = bool(c.boolean(obj, "push", path, default=False))
    address: str | None = ""
    interval = None
    if push:
        if "address" in obj:
            c.error(key(path, "address"), 'a push agent ("push": true) dials the gateway; it has no address')
        interval = c.duration(obj, "interval", path, default=None)
    else:
        if "interval" in obj:
            c.error(key(path, "interval"), 'only for push agents ("push": true); a polled agent follows poll_interval')
        address = c.address(obj, "address", path, listen=False, required="required (host:port, e.g. 10.0.0.5:50051)")
    tenant = c.label(
        obj, "tenant", path, "tenant slug", required="required: every agent names its tenant (there is no default tenant)"
    )
    component_id = _component(c, obj, path)
    if push and component_id is None:
        if is_label(name):
            component_id = name
        else:
            c.error(key(path, "component"), f"required: the entry name {show(name)} is not a component id (a DNS label)")
    partition = c.label(obj, "partition", path, "partition id", default=None)
    strict_labels = c.boolean(obj, "strict_labels", path, default=False)
    checks = _parse_checks(c, obj.get("checks", MISSING), key(path, "checks"), push=push)
    if push and checks:
        _check_push_checks(c, checks, key(path, "checks"))
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
        push=push,
        interval=interval,
    )


def _check_push_checks(c: Checker, checks: tuple[CheckConfig, ...], path: str) -> None:
    """Warn of a push agent's checks that ServiceRadar's agent would drop, or could not run,
    once converted (poller.gateway.checks): it would say nothing, and the board would show
    them never answered. A warning, not an error: the check is still sent (another agent
    build may run it), and a config that loaded before still loads."""
    from poller.gateway.checks import unrunnable  # late: poller.gateway's package imports poller.config

    for i, check in enumerate(checks):
        problem = unrunnable(check)
        if problem is not None:
            name, reason = problem
            where = index(path, i)
            c.warn(key(where, name) if name else where, reason)


def _component(c: Checker, obj: Mapping[str, Any], path: str) -> str | None:
    """component_id, also spelled `component`; both given must agree."""
    component_id = c.label(obj, "component_id", path, "component id", default=None)
    component = c.label(obj, "component", path, "component id", default=None)
    if component_id is not None and component is not None and component_id != component:
        c.error(key(path, "component"), f"{show(component)} disagrees with component_id {show(component_id)}; give one")
    return component or component_id


# Gateway integers grpc takes as options, a C int: past these `run` would not start.
_GRPC_INT_BOUNDS = {"max_results_bytes": MAX_GATEWAY_RESULTS_BYTES, "max_connections": GRPC_MAX_INT}


def _parse_gateway(c: Checker, value: object, certs_dir: Path | None, base_dir: Path | None) -> GatewayConfig | None:
    if value is None:
        return None
    obj = c.object(value, "gateway", GATEWAY_KEYS)
    if obj is None:
        return None
    errors_before = len(c.errors)
    listen = c.address(obj, "listen", "gateway", listen=True, required="required (host:port to serve push agents on)")
    certs = certs_dir or Path(DEFAULT_CERTS_DIR)
    cert = c.path(obj, "cert", "gateway", default=str(certs / DEFAULT_GATEWAY_CERT), base_dir=base_dir)
    key_path = c.path(obj, "key", "gateway", default=str(certs / DEFAULT_GATEWAY_KEY), base_dir=base_dir)
    accept_unlisted = c.boolean(obj, "accept_unlisted", "gateway", default=False)
    audit_accepted = c.string(obj, "audit_accepted", "gateway", default=DEFAULT_GATEWAY_AUDIT_ACCEPTED)
    if audit_accepted is not None and audit_accepted not in ACCEPT_AUDIT_MODES:
        c.error(
            "gateway.audit_accepted",
            f"{show(audit_accepted)} is not one of {', '.join(ACCEPT_AUDIT_MODES)} "
            "(an acceptance audit line per method and connection, or per call)",
        )
    numbers: dict[str, Any] = {}
    defaults = GatewayConfig(listen="", cert=Path(), key=Path())
    for name in (
        "max_services",
        "max_status_bytes",
        "max_results_bytes",
        "push_rate",
        "push_burst",
        "max_calls_per_tenant",
        "max_calls_per_agent",
        "max_connections",
        "max_connections_per_tenant",
    ):
        high = _GRPC_INT_BOUNDS.get(name)
        numbers[name] = c.integer(obj, name, "gateway", default=getattr(defaults, name), low=1, high=high)
    for name in ("push_rate_per_agent", "push_burst_per_agent"):  # 0: off (the default)
        numbers[name] = c.integer(obj, name, "gateway", default=getattr(defaults, name), low=0, high=MAX_AGENT_RATE)
    if numbers["push_burst_per_agent"] and not numbers["push_rate_per_agent"]:
        c.error("gateway.push_burst_per_agent", "a burst needs push_rate_per_agent (0: no per-agent rate)")
    numbers["stream_timeout"] = c.duration(obj, "stream_timeout", "gateway", default=defaults.stream_timeout)
    for name in ("connection_idle", "keepalive", "keepalive_timeout"):  # grpc options in milliseconds, a C int
        numbers[name] = c.duration(obj, name, "gateway", default=getattr(defaults, name), most=GRPC_MAX_MS / 1000)
    if len(c.errors) > errors_before or listen is None or cert is None or key_path is None:
        return None
    return GatewayConfig(
        listen=listen,
        cert=cert,
        key=key_path,
        accept_unlisted=bool(accept_unlisted),
        audit_accepted=audit_accepted or DEFAULT_GATEWAY_AUDIT_ACCEPTED,
        **numbers,
    )


def _parse_checks(c: Checker, value: object, path: str, *, push: bool = False) -> tuple[CheckConfig, ...] | None:
    if value is MISSING or value is None:
        c.warn(path, "no checks configured for this agent")
        return ()
    if not isinstance(value, list):
        c.error(path, f"expected an array of checks, got {kind(value)}")
        return None
    checks: list[CheckConfig] = []
    seen: dict[tuple[str, str], int] = {}
    names: dict[str, int] = {}
    errors_before = len(c.errors)
    for i, spec in enumerate(value):
        where = index(path, i)
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
        pair = (checked(service_type), checked(service_name))
        if push and pair[1] in names:
            # The push agent keeps the checks GetConfig gives it in a map keyed by name
            # (cac9ec1af's applyChecks, checkerConfs[check.Name]): the last one wins.
            c.warn(
                key(where, "service_name"),
                f"{show(pair[1])} is also the service_name of {index(path, names[pair[1]])}: a push agent keeps "
                "its checks by name, so it would run only one of them (give each check its own service_name)",
            )
        elif pair in seen:
            c.warn(where, f"same service_type and service_name as {index(path, seen[pair])}")
        else:
            seen[pair] = i
        names.setdefault(pair[1], i)
        checks.append(
            CheckConfig(
                service_type=pair[0],
                service_name=pair[1],
                details=checked(details),
                port=checked(port),
                results_interval=interval,
            )
        )
    return tuple(checks) if len(c.errors) == errors_before else None
