from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StatusRequest(_message.Message):
    __slots__ = ("service_name", "service_type", "agent_id", "poller_id", "details", "port")
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    SERVICE_TYPE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    POLLER_ID_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    service_name: str
    service_type: str
    agent_id: str
    poller_id: str
    details: str
    port: int
    def __init__(self, service_name: _Optional[str] = ..., service_type: _Optional[str] = ..., agent_id: _Optional[str] = ..., poller_id: _Optional[str] = ..., details: _Optional[str] = ..., port: _Optional[int] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("available", "message", "service_name", "service_type", "response_time", "agent_id", "poller_id")
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    SERVICE_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_TIME_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    POLLER_ID_FIELD_NUMBER: _ClassVar[int]
    available: bool
    message: bytes
    service_name: str
    service_type: str
    response_time: int
    agent_id: str
    poller_id: str
    def __init__(self, available: _Optional[bool] = ..., message: _Optional[bytes] = ..., service_name: _Optional[str] = ..., service_type: _Optional[str] = ..., response_time: _Optional[int] = ..., agent_id: _Optional[str] = ..., poller_id: _Optional[str] = ...) -> None: ...

class SweepCompletionStatus(_message.Message):
    __slots__ = ("status", "completion_time", "target_sequence", "total_targets", "completed_targets", "error_message", "execution_id", "sweep_group_id")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNKNOWN: _ClassVar[SweepCompletionStatus.Status]
        NOT_STARTED: _ClassVar[SweepCompletionStatus.Status]
        IN_PROGRESS: _ClassVar[SweepCompletionStatus.Status]
        COMPLETED: _ClassVar[SweepCompletionStatus.Status]
        FAILED: _ClassVar[SweepCompletionStatus.Status]
    UNKNOWN: SweepCompletionStatus.Status
    NOT_STARTED: SweepCompletionStatus.Status
    IN_PROGRESS: SweepCompletionStatus.Status
    COMPLETED: SweepCompletionStatus.Status
    FAILED: SweepCompletionStatus.Status
    STATUS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TIME_FIELD_NUMBER: _ClassVar[int]
    TARGET_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TARGETS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_TARGETS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    SWEEP_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    status: SweepCompletionStatus.Status
    completion_time: int
    target_sequence: str
    total_targets: int
    completed_targets: int
    error_message: str
    execution_id: str
    sweep_group_id: str
    def __init__(self, status: _Optional[_Union[SweepCompletionStatus.Status, str]] = ..., completion_time: _Optional[int] = ..., target_sequence: _Optional[str] = ..., total_targets: _Optional[int] = ..., completed_targets: _Optional[int] = ..., error_message: _Optional[str] = ..., execution_id: _Optional[str] = ..., sweep_group_id: _Optional[str] = ...) -> None: ...

class ResultsRequest(_message.Message):
    __slots__ = ("service_name", "service_type", "agent_id", "poller_id", "details", "last_sequence", "completion_status")
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    SERVICE_TYPE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    POLLER_ID_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_STATUS_FIELD_NUMBER: _ClassVar[int]
    service_name: str
    service_type: str
    agent_id: str
    poller_id: str
    details: str
    last_sequence: str
    completion_status: SweepCompletionStatus
    def __init__(self, service_name: _Optional[str] = ..., service_type: _Optional[str] = ..., agent_id: _Optional[str] = ..., poller_id: _Optional[str] = ..., details: _Optional[str] = ..., last_sequence: _Optional[str] = ..., completion_status: _Optional[_Union[SweepCompletionStatus, _Mapping]] = ...) -> None: ...

class ResultsResponse(_message.Message):
    __slots__ = ("available", "data", "service_name", "service_type", "response_time", "agent_id", "poller_id", "timestamp", "current_sequence", "has_new_data", "sweep_completion", "execution_id", "sweep_group_id")
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    SERVICE_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_TIME_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    POLLER_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    CURRENT_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    HAS_NEW_DATA_FIELD_NUMBER: _ClassVar[int]
    SWEEP_COMPLETION_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    SWEEP_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    available: bool
    data: bytes
    service_name: str
    service_type: str
    response_time: int
    agent_id: str
    poller_id: str
    timestamp: int
    current_sequence: str
    has_new_data: bool
    sweep_completion: SweepCompletionStatus
    execution_id: str
    sweep_group_id: str
    def __init__(self, available: _Optional[bool] = ..., data: _Optional[bytes] = ..., service_name: _Optional[str] = ..., service_type: _Optional[str] = ..., response_time: _Optional[int] = ..., agent_id: _Optional[str] = ..., poller_id: _Optional[str] = ..., timestamp: _Optional[int] = ..., current_sequence: _Optional[str] = ..., has_new_data: _Optional[bool] = ..., sweep_completion: _Optional[_Union[SweepCompletionStatus, _Mapping]] = ..., execution_id: _Optional[str] = ..., sweep_group_id: _Optional[str] = ...) -> None: ...

class ResultsChunk(_message.Message):
    __slots__ = ("data", "is_final", "chunk_index", "total_chunks", "current_sequence", "timestamp")
    DATA_FIELD_NUMBER: _ClassVar[int]
    IS_FINAL_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    is_final: bool
    chunk_index: int
    total_chunks: int
    current_sequence: str
    timestamp: int
    def __init__(self, data: _Optional[bytes] = ..., is_final: _Optional[bool] = ..., chunk_index: _Optional[int] = ..., total_chunks: _Optional[int] = ..., current_sequence: _Optional[str] = ..., timestamp: _Optional[int] = ...) -> None: ...

class AgentHelloRequest(_message.Message):
    __slots__ = ("agent_id", "version", "capabilities", "hostname", "os", "arch", "partition", "config_version", "labels", "config_source")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_SOURCE_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    version: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    hostname: str
    os: str
    arch: str
    partition: str
    config_version: str
    labels: _containers.ScalarMap[str, str]
    config_source: str
    def __init__(self, agent_id: _Optional[str] = ..., version: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., hostname: _Optional[str] = ..., os: _Optional[str] = ..., arch: _Optional[str] = ..., partition: _Optional[str] = ..., config_version: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., config_source: _Optional[str] = ...) -> None: ...

class AgentHelloResponse(_message.Message):
    __slots__ = ("accepted", "agent_id", "message", "gateway_id", "server_time", "heartbeat_interval_sec", "config_outdated", "tenant_id", "tenant_slug")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_ID_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_SEC_FIELD_NUMBER: _ClassVar[int]
    CONFIG_OUTDATED_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_SLUG_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    agent_id: str
    message: str
    gateway_id: str
    server_time: int
    heartbeat_interval_sec: int
    config_outdated: bool
    tenant_id: str
    tenant_slug: str
    def __init__(self, accepted: _Optional[bool] = ..., agent_id: _Optional[str] = ..., message: _Optional[str] = ..., gateway_id: _Optional[str] = ..., server_time: _Optional[int] = ..., heartbeat_interval_sec: _Optional[int] = ..., config_outdated: _Optional[bool] = ..., tenant_id: _Optional[str] = ..., tenant_slug: _Optional[str] = ...) -> None: ...

class AgentConfigRequest(_message.Message):
    __slots__ = ("agent_id", "config_version")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    config_version: str
    def __init__(self, agent_id: _Optional[str] = ..., config_version: _Optional[str] = ...) -> None: ...

class AgentConfigResponse(_message.Message):
    __slots__ = ("not_modified", "config_version", "config_timestamp", "heartbeat_interval_sec", "config_poll_interval_sec", "checks", "config_json")
    NOT_MODIFIED_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_SEC_FIELD_NUMBER: _ClassVar[int]
    CONFIG_POLL_INTERVAL_SEC_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    not_modified: bool
    config_version: str
    config_timestamp: int
    heartbeat_interval_sec: int
    config_poll_interval_sec: int
    checks: _containers.RepeatedCompositeFieldContainer[AgentCheckConfig]
    config_json: bytes
    def __init__(self, not_modified: _Optional[bool] = ..., config_version: _Optional[str] = ..., config_timestamp: _Optional[int] = ..., heartbeat_interval_sec: _Optional[int] = ..., config_poll_interval_sec: _Optional[int] = ..., checks: _Optional[_Iterable[_Union[AgentCheckConfig, _Mapping]]] = ..., config_json: _Optional[bytes] = ...) -> None: ...

class AgentCheckConfig(_message.Message):
    __slots__ = ("check_id", "check_type", "name", "enabled", "interval_sec", "timeout_sec", "target", "port", "path", "method", "settings")
    class SettingsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CHECK_ID_FIELD_NUMBER: _ClassVar[int]
    CHECK_TYPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_SEC_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SEC_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    check_id: str
    check_type: str
    name: str
    enabled: bool
    interval_sec: int
    timeout_sec: int
    target: str
    port: int
    path: str
    method: str
    settings: _containers.ScalarMap[str, str]
    def __init__(self, check_id: _Optional[str] = ..., check_type: _Optional[str] = ..., name: _Optional[str] = ..., enabled: _Optional[bool] = ..., interval_sec: _Optional[int] = ..., timeout_sec: _Optional[int] = ..., target: _Optional[str] = ..., port: _Optional[int] = ..., path: _Optional[str] = ..., method: _Optional[str] = ..., settings: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GatewayStatusRequest(_message.Message):
    __slots__ = ("services", "gateway_id", "agent_id", "timestamp", "partition", "source_ip", "kv_store_id", "tenant_id", "tenant_slug", "config_source", "version", "hostname", "os", "arch")
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_IP_FIELD_NUMBER: _ClassVar[int]
    KV_STORE_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_SLUG_FIELD_NUMBER: _ClassVar[int]
    CONFIG_SOURCE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[GatewayServiceStatus]
    gateway_id: str
    agent_id: str
    timestamp: int
    partition: str
    source_ip: str
    kv_store_id: str
    tenant_id: str
    tenant_slug: str
    config_source: str
    version: str
    hostname: str
    os: str
    arch: str
    def __init__(self, services: _Optional[_Iterable[_Union[GatewayServiceStatus, _Mapping]]] = ..., gateway_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., timestamp: _Optional[int] = ..., partition: _Optional[str] = ..., source_ip: _Optional[str] = ..., kv_store_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., tenant_slug: _Optional[str] = ..., config_source: _Optional[str] = ..., version: _Optional[str] = ..., hostname: _Optional[str] = ..., os: _Optional[str] = ..., arch: _Optional[str] = ...) -> None: ...

class GatewayStatusResponse(_message.Message):
    __slots__ = ("received",)
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    received: bool
    def __init__(self, received: _Optional[bool] = ...) -> None: ...

class GatewayStatusChunk(_message.Message):
    __slots__ = ("services", "gateway_id", "agent_id", "timestamp", "partition", "source_ip", "is_final", "chunk_index", "total_chunks", "kv_store_id", "tenant_id", "tenant_slug", "config_source", "version", "hostname", "os", "arch")
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_IP_FIELD_NUMBER: _ClassVar[int]
    IS_FINAL_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    KV_STORE_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_SLUG_FIELD_NUMBER: _ClassVar[int]
    CONFIG_SOURCE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[GatewayServiceStatus]
    gateway_id: str
    agent_id: str
    timestamp: int
    partition: str
    source_ip: str
    is_final: bool
    chunk_index: int
    total_chunks: int
    kv_store_id: str
    tenant_id: str
    tenant_slug: str
    config_source: str
    version: str
    hostname: str
    os: str
    arch: str
    def __init__(self, services: _Optional[_Iterable[_Union[GatewayServiceStatus, _Mapping]]] = ..., gateway_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., timestamp: _Optional[int] = ..., partition: _Optional[str] = ..., source_ip: _Optional[str] = ..., is_final: _Optional[bool] = ..., chunk_index: _Optional[int] = ..., total_chunks: _Optional[int] = ..., kv_store_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., tenant_slug: _Optional[str] = ..., config_source: _Optional[str] = ..., version: _Optional[str] = ..., hostname: _Optional[str] = ..., os: _Optional[str] = ..., arch: _Optional[str] = ...) -> None: ...

class GatewayServiceStatus(_message.Message):
    __slots__ = ("service_name", "available", "message", "service_type", "response_time", "agent_id", "gateway_id", "partition", "source", "kv_store_id", "tenant_id", "tenant_slug")
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_TIME_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_ID_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    KV_STORE_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_SLUG_FIELD_NUMBER: _ClassVar[int]
    service_name: str
    available: bool
    message: bytes
    service_type: str
    response_time: int
    agent_id: str
    gateway_id: str
    partition: str
    source: str
    kv_store_id: str
    tenant_id: str
    tenant_slug: str
    def __init__(self, service_name: _Optional[str] = ..., available: _Optional[bool] = ..., message: _Optional[bytes] = ..., service_type: _Optional[str] = ..., response_time: _Optional[int] = ..., agent_id: _Optional[str] = ..., gateway_id: _Optional[str] = ..., partition: _Optional[str] = ..., source: _Optional[str] = ..., kv_store_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., tenant_slug: _Optional[str] = ...) -> None: ...

class ControlStreamHello(_message.Message):
    __slots__ = ("agent_id", "partition", "capabilities", "config_version", "version", "hostname", "os", "arch", "labels", "config_source")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_SOURCE_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    partition: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    config_version: str
    version: str
    hostname: str
    os: str
    arch: str
    labels: _containers.ScalarMap[str, str]
    config_source: str
    def __init__(self, agent_id: _Optional[str] = ..., partition: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., config_version: _Optional[str] = ..., version: _Optional[str] = ..., hostname: _Optional[str] = ..., os: _Optional[str] = ..., arch: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., config_source: _Optional[str] = ...) -> None: ...

class CommandRequest(_message.Message):
    __slots__ = ("command_id", "command_type", "payload_json", "ttl_seconds", "created_at")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    command_type: str
    payload_json: bytes
    ttl_seconds: int
    created_at: int
    def __init__(self, command_id: _Optional[str] = ..., command_type: _Optional[str] = ..., payload_json: _Optional[bytes] = ..., ttl_seconds: _Optional[int] = ..., created_at: _Optional[int] = ...) -> None: ...

class CommandAck(_message.Message):
    __slots__ = ("command_id", "command_type", "timestamp", "message")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_TYPE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    command_type: str
    timestamp: int
    message: str
    def __init__(self, command_id: _Optional[str] = ..., command_type: _Optional[str] = ..., timestamp: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class CommandProgress(_message.Message):
    __slots__ = ("command_id", "command_type", "progress_percent", "message", "timestamp", "payload_json")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_TYPE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    command_type: str
    progress_percent: int
    message: str
    timestamp: int
    payload_json: bytes
    def __init__(self, command_id: _Optional[str] = ..., command_type: _Optional[str] = ..., progress_percent: _Optional[int] = ..., message: _Optional[str] = ..., timestamp: _Optional[int] = ..., payload_json: _Optional[bytes] = ...) -> None: ...

class CommandResult(_message.Message):
    __slots__ = ("command_id", "command_type", "success", "message", "payload_json", "timestamp")
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    COMMAND_TYPE_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    command_type: str
    success: bool
    message: str
    payload_json: bytes
    timestamp: int
    def __init__(self, command_id: _Optional[str] = ..., command_type: _Optional[str] = ..., success: _Optional[bool] = ..., message: _Optional[str] = ..., payload_json: _Optional[bytes] = ..., timestamp: _Optional[int] = ...) -> None: ...

class ConfigAck(_message.Message):
    __slots__ = ("config_version", "timestamp")
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    config_version: str
    timestamp: int
    def __init__(self, config_version: _Optional[str] = ..., timestamp: _Optional[int] = ...) -> None: ...

class ControlStreamRequest(_message.Message):
    __slots__ = ("hello", "command_ack", "command_progress", "command_result", "config_ack")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    COMMAND_ACK_FIELD_NUMBER: _ClassVar[int]
    COMMAND_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    COMMAND_RESULT_FIELD_NUMBER: _ClassVar[int]
    CONFIG_ACK_FIELD_NUMBER: _ClassVar[int]
    hello: ControlStreamHello
    command_ack: CommandAck
    command_progress: CommandProgress
    command_result: CommandResult
    config_ack: ConfigAck
    def __init__(self, hello: _Optional[_Union[ControlStreamHello, _Mapping]] = ..., command_ack: _Optional[_Union[CommandAck, _Mapping]] = ..., command_progress: _Optional[_Union[CommandProgress, _Mapping]] = ..., command_result: _Optional[_Union[CommandResult, _Mapping]] = ..., config_ack: _Optional[_Union[ConfigAck, _Mapping]] = ...) -> None: ...

class ControlStreamResponse(_message.Message):
    __slots__ = ("command", "config")
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    command: CommandRequest
    config: AgentConfigResponse
    def __init__(self, command: _Optional[_Union[CommandRequest, _Mapping]] = ..., config: _Optional[_Union[AgentConfigResponse, _Mapping]] = ...) -> None: ...
