"""A tenant's JetStream stream: `tenant-<slug>` over `<slug>.>`, created or checked when first served.

The poller owns the stream's configuration: an existing stream with other
limits is updated to the configured ones (and logged); one that captures other
subjects is refused, since publishing into it could mix tenants.

>>> await ensure_stream(js, "acme-corp", StreamLimits(max_age=7 * 86400))  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from poller.identity.reasons import PollerError
from poller.logs import get_logger
from poller.nats.subjects import stream_name, stream_subjects

__all__ = ["DEFAULT_DUPLICATE_WINDOW", "DEFAULT_MAX_AGE", "StreamLimits", "StreamMismatch", "ensure_stream", "stream_config"]

log = get_logger("poller.nats")

DEFAULT_MAX_AGE = 7 * 24 * 3600.0
DEFAULT_DUPLICATE_WINDOW = 2 * 3600.0


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """max_age seconds (0: unlimited), max_bytes (-1: unlimited), duplicate_window seconds.

    The duplicate window must cover the outbox's replay horizon: the longest
    time between a publish whose ack was lost and its replay (an outage).
    """

    max_age: float = DEFAULT_MAX_AGE
    max_bytes: int = -1
    duplicate_window: float = DEFAULT_DUPLICATE_WINDOW

    def __post_init__(self) -> None:
        if self.duplicate_window <= 0:
            raise ValueError("duplicate_window must be positive")
        if self.max_age and self.duplicate_window > self.max_age:
            raise ValueError("duplicate_window cannot exceed the stream's max_age")


class StreamMismatch(PollerError):
    """A stream named `tenant-<slug>` exists but captures other subjects."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def stream_config(tenant: str, limits: StreamLimits) -> StreamConfig:
    return StreamConfig(
        name=stream_name(tenant),
        description=f"ServiceRadar results of tenant {tenant}",
        subjects=stream_subjects(tenant),
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        storage=StorageType.FILE,
        max_age=limits.max_age,
        max_bytes=limits.max_bytes,
        duplicate_window=limits.duplicate_window,
        num_replicas=1,
    )


async def ensure_stream(js: JetStreamContext, tenant: str, limits: StreamLimits) -> bool:
    """Create the tenant's stream, or check (and update) an existing one; True if created."""
    wanted = stream_config(tenant, limits)
    assert wanted.name is not None
    try:
        info = await js.stream_info(wanted.name)
    except NotFoundError:
        await js.add_stream(wanted)
        log.info("stream_created", tenant=tenant, stream=wanted.name, max_age=limits.max_age, max_bytes=limits.max_bytes)
        return True
    have = info.config
    if sorted(have.subjects or []) != wanted.subjects:
        raise StreamMismatch(f"stream {wanted.name} captures {have.subjects}, not {wanted.subjects}")
    current = (have.max_age or 0.0, have.max_bytes if have.max_bytes is not None else -1, have.duplicate_window or 0.0)
    target = (limits.max_age, limits.max_bytes, limits.duplicate_window)
    if any(abs(a - b) > 1e-3 for a, b in zip(current, target, strict=True)):
        await js.update_stream(wanted)
        log.info("stream_updated", tenant=tenant, stream=wanted.name, was=list(current), now=list(target))
    return False
