"""NATS subjects of a tenant: `<tenant-slug>.<channel>` and back (pure functions).

The tenant is always the first token and is a tenant slug (one lowercase DNS
label); the channel is one or more tokens of letters, digits, '_' and '-' (the one
token rule of poller.delivery.channels).
Wildcards (`*`, `>`), empty tokens, whitespace and anything else are refused,
and an empty tenant is an error: there is never an unprefixed subject.

>>> tenant_subject("acme-corp", "agents.status")
'acme-corp.agents.status'
>>> tenant_from_subject("acme-corp.agents.results.sweep")
'acme-corp'
"""

from __future__ import annotations

from poller.delivery.channels import is_token
from poller.identity.context import TenantContext
from poller.identity.names import is_label
from poller.identity.reasons import PollerError, Reason

__all__ = [
    "STREAM_PREFIX",
    "SubjectError",
    "check_channel",
    "check_token",
    "split_subject",
    "stream_name",
    "stream_subjects",
    "tenant_from_subject",
    "tenant_subject",
]

STREAM_PREFIX = "tenant-"


class SubjectError(PollerError, ValueError):
    """A tenant or channel that cannot make (or be read from) a tenant subject.

    >>> tenant_subject("", "agents.status")
    Traceback (most recent call last):
    ...
    poller.nats.subjects.SubjectError: invalid_subject: empty tenant: every subject starts with a tenant slug
    """

    reason = Reason.INVALID_SUBJECT

    def __init__(self, detail: str) -> None:
        super().__init__(f"{self.reason.value}: {detail}")
        self.detail = detail


def _slug(tenant: TenantContext | str) -> str:
    slug = tenant.tenant if isinstance(tenant, TenantContext) else tenant
    if not isinstance(slug, str) or slug == "":
        raise SubjectError("empty tenant: every subject starts with a tenant slug")
    if not is_label(slug):
        raise SubjectError(f"{slug!r} is not a tenant slug (lowercase a-z, 0-9 and '-', 1 to 63 characters)")
    return slug


def check_token(token: str) -> str:
    """Return token if it is one channel token (no '.', no wildcard), else raise SubjectError."""
    if not is_token(token):
        raise SubjectError(f"{token!r} is not one subject token (letters, digits, '_' or '-')")
    return token


def check_channel(channel: str) -> str:
    """Return channel if it is one or more valid tokens (`agents.status`), else raise SubjectError."""
    if not isinstance(channel, str) or channel == "":
        raise SubjectError("empty channel")
    for token in channel.split("."):
        if not is_token(token):
            raise SubjectError(f"channel {channel!r}: token {token!r} is not letters, digits, '_' or '-' (no wildcards)")
    return channel


def tenant_subject(tenant: TenantContext | str, channel: str) -> str:
    """`<tenant>.<channel>` for a proven context or a tenant slug; raises SubjectError.

    >>> tenant_subject("xyz-inc", "events.poller.health")
    'xyz-inc.events.poller.health'
    """
    return f"{_slug(tenant)}.{check_channel(channel)}"


def split_subject(subject: str) -> tuple[str, str]:
    """(tenant, channel) of a tenant subject; raises SubjectError.

    >>> split_subject("acme-corp.pollers.heartbeat")
    ('acme-corp', 'pollers.heartbeat')
    """
    if not isinstance(subject, str) or "." not in subject:
        raise SubjectError(f"{subject!r} is not <tenant>.<channel>")
    tenant, channel = subject.split(".", 1)
    return _slug(tenant), check_channel(channel)


def tenant_from_subject(subject: str) -> str:
    """The tenant slug a tenant subject belongs to; raises SubjectError."""
    return split_subject(subject)[0]


def stream_name(tenant: TenantContext | str) -> str:
    """The JetStream stream of a tenant: `tenant-<slug>`.

    >>> stream_name("acme-corp")
    'tenant-acme-corp'
    """
    return STREAM_PREFIX + _slug(tenant)


def stream_subjects(tenant: TenantContext | str) -> list[str]:
    """What a tenant's stream captures: everything under its prefix, `<slug>.>`."""
    return [f"{_slug(tenant)}.>"]
