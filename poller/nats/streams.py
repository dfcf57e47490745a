"""A tenant's JetStream stream: `tenant-<slug>` over `<slug>.>`, created or checked when first served.

The poller owns the stream's limits: an existing stream with other limits is
updated to the configured ones, and the log says which changed. It never
changes an existing stream's replicas or placement (an operator's R3 stream
stays R3): the update sends the stream's own configuration with only the
limits replaced. A stream that captures other subjects is refused, since
publishing into it could mix tenants. A new stream gets `replicas` (None: 3
on a JetStream cluster of at least 3 servers, else 1).

>>> await ensure_stream(js, "acme-corp", StreamLimits(max_age=7 * 86400))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from poller.config.model import DEFAULT_DUPLICATE_WINDOW, DEFAULT_STREAM_MAX_AGE
from poller.identity.reasons import PollerError
from poller.logs import get_logger
from poller.nats.subjects import stream_name, stream_subjects

__all__ = [
    "DEFAULT_DUPLICATE_WINDOW",
    "DEFAULT_MAX_AGE",
    "StreamLimits",
    "StreamMismatch",
    "default_replicas",
    "ensure_stream",
    "stream_config",
]

log = get_logger("poller.nats")

DEFAULT_MAX_AGE = DEFAULT_STREAM_MAX_AGE  # the values are the config's (poller.config.model)


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


def stream_config(tenant: str, limits: StreamLimits, replicas: int = 1) -> StreamConfig:
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
        num_replicas=replicas,
    )


def _limits(config: StreamConfig) -> dict[str, float]:
    return {
        "max_age": config.max_age or 0.0,
        "max_bytes": config.max_bytes if config.max_bytes is not None else -1,
        "duplicate_window": config.duplicate_window or 0.0,
    }


async def ensure_stream(
    js: JetStreamContext,
    tenant: str,
    limits: StreamLimits,
    *,
    replicas: int | None = None,
    cluster_size: Callable[[], Awaitable[int]] | None = None,
) -> bool:
    """Create the tenant's stream, or check (and update the limits of) an existing one; True if created.

    `replicas` None: 3 when `cluster_size()` reports at least 3 JetStream servers, else 1.
    """
    name = stream_name(tenant)
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        count = replicas if replicas is not None else default_replicas(await cluster_size() if cluster_size else 1)
        await js.add_stream(stream_config(tenant, limits, count))
        log.info("stream_created", tenant=tenant, stream=name, replicas=count, max_age=limits.max_age, max_bytes=limits.max_bytes)
        return True
    have = info.config
    wanted = stream_config(tenant, limits)
    if sorted(have.subjects or []) != wanted.subjects:
        raise StreamMismatch(f"stream {name} captures {have.subjects}, not {wanted.subjects}")
    current, target = _limits(have), _limits(wanted)
    changed = {k: [current[k], target[k]] for k in target if abs(current[k] - target[k]) > 1e-3}
    if changed:
        # The stream's own config with only the limits replaced: replicas and placement stay.
        updated = dataclasses.replace(
            have, max_age=wanted.max_age, max_bytes=wanted.max_bytes, duplicate_window=wanted.duplicate_window
        )
        await js.update_stream(updated)
        log.info("stream_updated", tenant=tenant, stream=name, changed=changed, replicas=have.num_replicas)
    if replicas is not None and have.num_replicas != replicas:
        log.warning(
            "stream_replicas_differ",
            tenant=tenant,
            stream=name,
            replicas=have.num_replicas,
            configured=replicas,
            why="the poller never changes an existing stream's replicas; change them with `nats stream edit`",
        )
    return False


def default_replicas(cluster_size: int) -> int:
    """3 on a JetStream cluster of at least 3 servers, else 1."""
    return 3 if cluster_size >= 3 else 1
