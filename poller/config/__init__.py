"""The daemon's configuration: JSON in the shape of ServiceRadar's Go poller config.

- poller.config.model: the frozen dataclasses and every default;
- poller.config.engine: the checker (paths, did-you-mean, every problem at once);
- poller.config.sections: which key is which (parse_config);
- poller.config.load: files, `config check`'s file checks, the example config.

>>> config = parse_config({"poller_id": "p", "agents": {"a": {"address": "h:1", "tenant": "acme-corp"}}})
>>> config.agents[0].tenant, config.poll_interval
('acme-corp', 30.0)
"""

from poller.address import split_host_port
from poller.config.durations import DurationError, format_duration, parse_duration
from poller.config.engine import ConfigError, ConfigIssue
from poller.config.load import check_files, example_config, load_config, unsupported
from poller.config.model import (
    DEFAULT_BACKOFF_INITIAL,
    DEFAULT_BACKOFF_MAX,
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_CERTS_DIR,
    DEFAULT_CLUSTER_BUCKET,
    DEFAULT_CYCLE_FRACTION,
    DEFAULT_DUPLICATE_WINDOW,
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
    LOG_FORMATS,
    LOG_LEVELS,
    SINK_TYPES,
    AgentConfig,
    CheckConfig,
    ClusterConfig,
    GatewayConfig,
    PollerConfig,
    ShardConfig,
    SinkConfig,
    default_call_timeout,
    default_cycle_timeout,
)
from poller.config.sections import (
    AGENT_KEYS,
    CHECK_KEYS,
    CLUSTER_KEYS,
    GO_AGENT_KEYS,
    GO_CHECK_KEYS,
    GO_TOP_KEYS,
    SINK_KEYS,
    TOP_KEYS,
    parse_config,
    redact_url,
)

__all__ = [
    "AGENT_KEYS",
    "CHECK_KEYS",
    "CLUSTER_KEYS",
    "DEFAULT_BACKOFF_INITIAL",
    "DEFAULT_BACKOFF_MAX",
    "DEFAULT_CALL_TIMEOUT",
    "DEFAULT_CERTS_DIR",
    "DEFAULT_CLUSTER_BUCKET",
    "DEFAULT_CYCLE_FRACTION",
    "DEFAULT_DUPLICATE_WINDOW",
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
    "GO_AGENT_KEYS",
    "GO_CHECK_KEYS",
    "GO_TOP_KEYS",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "SINK_KEYS",
    "SINK_TYPES",
    "TOP_KEYS",
    "AgentConfig",
    "CheckConfig",
    "ClusterConfig",
    "ConfigError",
    "ConfigIssue",
    "DurationError",
    "GatewayConfig",
    "PollerConfig",
    "ShardConfig",
    "SinkConfig",
    "check_files",
    "default_call_timeout",
    "default_cycle_timeout",
    "example_config",
    "format_duration",
    "load_config",
    "parse_config",
    "parse_duration",
    "redact_url",
    "split_host_port",
    "unsupported",
]
