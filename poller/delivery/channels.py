"""Channels: the part of a tenant subject after the tenant, and the one token rule.

A channel is dot-separated tokens; a token is 1 to 64 of letters, digits,
'_' and '-' (what a NATS subject allows, minus anything ambiguous). The same
rule serves result channels here, handler patterns, tenant subjects
(poller.nats.subjects) and the config's check of service types.

>>> channel_matches("agents.results.*", "agents.results.sweep"), is_token("a.b")
(True, False)
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from poller.identity.reasons import InvalidArgument, Reason, ResultRefused

if TYPE_CHECKING:
    from poller.delivery.result import PollResult

__all__ = [
    "CHANNEL_HEALTH",
    "CHANNEL_HEARTBEAT",
    "CHANNEL_RESULTS",
    "CHANNEL_STATUS",
    "TOKEN",
    "channel_for",
    "channel_matches",
    "check_pattern",
    "is_token",
    "matches",
]

CHANNEL_STATUS = "agents.status"
CHANNEL_RESULTS = "agents.results"
CHANNEL_HEALTH = "events.poller.health"
CHANNEL_HEARTBEAT = "pollers.heartbeat"

#: One subject token.
TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def is_token(text: object) -> bool:
    """True if text is exactly one subject token.

    >>> is_token("sweep"), is_token("*"), is_token("")
    (True, False, False)
    """
    return isinstance(text, str) and TOKEN.fullmatch(text) is not None


def channel_for(result: PollResult) -> str:
    """The channel of a result: the part of its subject after the tenant.

    status -> agents.status; results and stream -> agents.results.<service_type>;
    health -> events.poller.health; heartbeat -> pollers.heartbeat.
    Raises ResultRefused(invalid_channel) for a kind or service type that has none.

    >>> channel_for(result)  # a "results" result of service type "sweep"  # doctest: +SKIP
    'agents.results.sweep'
    """
    if result.kind == "status":
        return CHANNEL_STATUS
    if result.kind in ("results", "stream"):
        if not is_token(result.service_type):
            raise ResultRefused(
                Reason.INVALID_CHANNEL, f"service type {result.service_type[:64]!r} is not a channel token (A-Z a-z 0-9 _ -)"
            )
        return f"{CHANNEL_RESULTS}.{result.service_type}"
    if result.kind == "health":
        return CHANNEL_HEALTH
    if result.kind == "heartbeat":
        return CHANNEL_HEARTBEAT
    raise ResultRefused(Reason.INVALID_CHANNEL, f"result kind {result.kind[:32]!r} has no channel")


def check_pattern(pattern: str) -> tuple[str, ...]:
    """The tokens of a channel pattern (`*` one token, a final `>` the rest); raises InvalidArgument."""
    tokens = tuple(pattern.split("."))
    for i, token in enumerate(tokens):
        if token == ">" and i == len(tokens) - 1:
            continue
        if token != "*" and not is_token(token):
            raise InvalidArgument(f"channel pattern {pattern!r}: token {token!r} is not a channel token, '*' or a final '>'")
    return tokens


def channel_matches(pattern: str, channel: str) -> bool:
    """NATS-style matching: `*` is one token, a final `>` one or more.

    >>> channel_matches("agents.results.*", "agents.results.sweep"), channel_matches(">", "agents.status")
    (True, True)
    """
    return matches(check_pattern(pattern), tuple(channel.split(".")))


def matches(pattern: tuple[str, ...], channel: tuple[str, ...]) -> bool:
    """channel_matches on already split (and checked) tokens."""
    for i, token in enumerate(pattern):
        if token == ">":
            return len(channel) > i
        if i >= len(channel) or (token != "*" and token != channel[i]):
            return False
    return len(pattern) == len(channel)
