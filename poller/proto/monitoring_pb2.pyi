from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
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
