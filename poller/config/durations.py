"""Go-style durations ("30s", "1m30s", "500ms", "1.5h") as float seconds.

The grammar is Go's `time.ParseDuration`: an optional sign, then one or more
decimal numbers, each followed by a unit (ns, us, µs, ms, s, m, h).  One
deliberate difference: a bare number ("30", or Go's special case "0") is
refused, because it has no unit and a reader cannot tell whether it means
seconds or (as Go's JSON decoder reads a number) nanoseconds.

>>> parse_duration("1m30s")
90.0
>>> format_duration(90.0)
'1m30s'
"""

from __future__ import annotations

import re
from fractions import Fraction

from poller.identity.reasons import PollerError

__all__ = [
    "DurationError",
    "format_duration",
    "format_duration_ns",
    "parse_duration",
    "parse_duration_ns",
]

HINT = "use e.g. 30s, 5m, 1h30m"
BARE_NUMBER_REASON = f"is a bare number, which is ambiguous: a duration needs a unit ({HINT})"

_NS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
# Longest units first so that "ms" is not read as "m" followed by "s".
_UNIT = "|".join(sorted(map(re.escape, _NS), key=len, reverse=True))
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_COMPONENT = re.compile(rf"({_NUMBER})({_UNIT})")
_DURATION = re.compile(rf"([-+]?)((?:{_NUMBER}(?:{_UNIT}))+)")
_BARE_NUMBER = re.compile(rf"[-+]?{_NUMBER}")

# Go's time.Duration is an int64 count of nanoseconds (about 292 years).
MAX_NS = 2**63 - 1


class DurationError(PollerError, ValueError):
    """A string that is not a Go-style duration.

    `reason` is the message without the value, e.g. "is not a duration (...)",
    so that callers can quote the value their own way.
    """

    def __init__(self, value: object, reason: str) -> None:
        super().__init__(f"{value!r} {reason}")
        self.value = value
        self.reason = reason


def parse_duration_ns(text: str) -> int:
    """Parse a Go-style duration into whole nanoseconds (may be zero or negative)."""
    if not isinstance(text, str):
        raise DurationError(text, f"is not a duration string ({HINT})")
    if _BARE_NUMBER.fullmatch(text):
        raise DurationError(text, BARE_NUMBER_REASON)
    match = _DURATION.fullmatch(text)
    if match is None:
        raise DurationError(text, f"is not a duration ({HINT})")
    sign, body = match.groups()
    total = Fraction(0)
    for number, unit in _COMPONENT.findall(body):
        total += Fraction(number if not number.endswith(".") else number[:-1]) * _NS[unit]
    ns = int(total)  # truncates toward zero, as Go does
    if ns > MAX_NS:
        raise DurationError(text, "is too large (the limit is about 292 years)")
    return -ns if sign == "-" else ns


def parse_duration(text: str) -> float:
    """Parse a Go-style duration into float seconds."""
    return parse_duration_ns(text) / 1e9


def format_duration_ns(ns: int) -> str:
    """Whole nanoseconds -> the shortest Go-style string that parses back exactly.

    >>> format_duration_ns(5_400_000_000_000)
    '1h30m'
    >>> format_duration_ns(1_500_000)
    '1.5ms'
    """
    if ns == 0:
        return "0s"
    if ns < 0:
        return "-" + format_duration_ns(-ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("us", 1_000), ("ns", 1)):
            if ns >= size:
                return _decimal(ns, size) + unit
    hours, rest = divmod(ns, _NS["h"])
    minutes, rest = divmod(rest, _NS["m"])
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if rest:
        parts.append(_decimal(rest, _NS["s"]) + "s")
    return "".join(parts)


def format_duration(seconds: float) -> str:
    """Float seconds -> Go-style string (rounded to the nanosecond)."""
    return format_duration_ns(round(seconds * 1e9))


def _decimal(amount: int, size: int) -> str:
    """amount/size as a decimal without trailing zeros (size is a power of ten)."""
    whole, frac = divmod(amount, size)
    if not frac:
        return str(whole)
    digits = len(str(size)) - 1
    return f"{whole}.{frac:0{digits}d}".rstrip("0")
