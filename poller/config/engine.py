"""A small checker for decoded JSON documents: every problem at once, each at its path.

Knows shapes (objects, strings, integers, booleans, durations, paths,
addresses), not what a poller is; poller.config.sections says which key
is which.  Paths are dotted keys with list indices in brackets
(`agents.edge-1.checks[2].results_interval`); a key that is not a plain word
is quoted (`agents["edge.1"].tenant`).

>>> c = Checker()
>>> obj = c.object({"poll_intervall": "30s"}, TOP, ("poll_interval",))
>>> print(c.errors[0])
poll_intervall: unknown key (did you mean "poll_interval"?)
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar, cast

from poller.address import show_value, split_host_port
from poller.config.durations import BARE_NUMBER_REASON, DurationError, format_duration, parse_duration
from poller.identity.names import is_label
from poller.identity.reasons import PollerError

__all__ = [
    "MISSING",
    "TOP",
    "Checker",
    "ConfigError",
    "ConfigIssue",
    "checked",
    "did_you_mean",
    "index",
    "key",
    "kind",
    "parse_json",
    "resolve",
]

TOP = "(top level)"
MISSING: Any = object()  # a key that is absent (None is JSON null)
show = show_value


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem (or warning) at a path in the config, e.g. `poll_interval`."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ConfigError(PollerError, ValueError):
    """The config is invalid; `issues` lists every problem found, in document order.

    `warnings` holds what would have been warnings had the config been valid.
    """

    def __init__(
        self, issues: list[ConfigIssue] | tuple[ConfigIssue, ...], warnings: list[ConfigIssue] | tuple[ConfigIssue, ...] = ()
    ) -> None:
        self.issues: tuple[ConfigIssue, ...] = tuple(issues)
        self.warnings: tuple[ConfigIssue, ...] = tuple(warnings)
        super().__init__("\n".join(str(issue) for issue in self.issues))

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.issues)


T = TypeVar("T")


def checked(value: T | None) -> T:
    """A value the Checker read, once its section has no errors: never None then.
    A runtime check, where `cast` would only silence the type checker.

    >>> checked(3)
    3
    """
    if value is None:
        raise AssertionError("a checked config value is None although its section had no errors")
    return value


def kind(value: object) -> str:
    """How a JSON value is named in a message: `string "x"`, `an array`, `null`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {show(value)}"
    if isinstance(value, (int, float)):
        return f"number {show(value)}"
    if isinstance(value, str):
        return f"string {show(value)}"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def key(path: str, name: str) -> str:
    """The path of `name` inside the object at `path`."""
    if path == TOP:
        path = ""
    if not _PLAIN_KEY.fullmatch(name):
        return f"{path}[{json.dumps(name, ensure_ascii=False)}]"
    return f"{path}.{name}" if path else name


def index(path: str, i: int) -> str:
    """The path of item `i` of the array at `path`."""
    return f"{path}[{i}]"


def did_you_mean(name: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def resolve(text: str, base_dir: Path | None) -> Path:
    """A path from the config, joined to base_dir (the file's directory) when relative."""
    path = Path(text).expanduser()
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    return path


class _JSONObject(dict):  # type: ignore[type-arg]
    """A decoded JSON object that remembers keys it saw more than once."""

    __slots__ = ("duplicates",)

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__()
        self.duplicates: list[str] = []
        for name, value in pairs:
            if name in self and name not in self.duplicates:
                self.duplicates.append(name)
            self[name] = value


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(text: str) -> Any:
    """Decode JSON, keeping duplicate keys visible (Checker reports them) and refusing NaN/Infinity.

    Raises json.JSONDecodeError, or ValueError for NaN / Infinity.
    """
    return json.loads(text, object_pairs_hook=_JSONObject, parse_constant=_reject_constant)


class Checker:
    """Collects issues and warnings while it reads a decoded JSON document."""

    def __init__(self) -> None:
        self.errors: list[ConfigIssue] = []
        self.warnings: list[ConfigIssue] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(ConfigIssue(path, message))

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(ConfigIssue(path, message))

    def duplicates(self, value: object, path: str, message: str = "duplicate key (JSON keeps only the last one)") -> None:
        """Report each key the JSON object at path carried more than once."""
        for name in getattr(value, "duplicates", ()):
            self.error(key(path, name), message)

    # -- shapes

    def object(
        self,
        value: object,
        path: str,
        known: tuple[str, ...],
        ignored: Mapping[str, str] = MappingProxyType({}),
    ) -> Mapping[str, Any] | None:
        """Check that value is an object with only known keys; None if it is not an object.

        A key in `ignored` is accepted with its note as a warning.
        """
        if not isinstance(value, Mapping):
            self.error(path, f"expected an object, got {kind(value)}")
            return None
        self.duplicates(value, path)
        for name in value:
            if not isinstance(name, str):
                self.error(path, f"key {show(name)} is not a string")
            elif name in known:
                continue
            elif name in ignored:
                self.warn(key(path, name), ignored[name])
            else:
                self.error(key(path, name), "unknown key" + did_you_mean(name, known))
        return value

    def string(
        self,
        obj: Mapping[str, Any],
        name: str,
        path: str,
        *,
        default: Any = MISSING,
        required: str | None = None,
        allow_empty: bool = False,
    ) -> str | None:
        """obj[name] as a string; default when absent; None (and an issue) when invalid."""
        where = key(path, name)
        value = obj.get(name, MISSING)
        if value is MISSING or (value is None and default is None):
            if default is MISSING:
                self.error(where, required or "required")
                return None
            return cast("str | None", default)
        if not isinstance(value, str):
            self.error(where, f"expected a string, got {kind(value)}")
            return None
        if not allow_empty and not value.strip():
            self.error(where, "must not be empty")
            return None
        return value

    def label(
        self, obj: Mapping[str, Any], name: str, path: str, what: str, *, default: Any = MISSING, required: str | None = None
    ) -> str | None:
        """obj[name] as one lowercase DNS label (a slug or id)."""
        value = self.string(obj, name, path, default=default, required=required, allow_empty=True)
        if value is None or name not in obj:
            return value
        if not is_label(value):
            self.error(
                key(path, name),
                f"{show(value)} is not a valid {what} "
                "(lowercase a-z, 0-9 and '-', 1 to 63 characters, "
                "no leading or trailing '-')",
            )
            return None
        return value

    def integer(
        self, obj: Mapping[str, Any], name: str, path: str, *, default: int | None, low: int, high: int | None = None
    ) -> int | None:
        where = key(path, name)
        value = obj.get(name, MISSING)
        if value is MISSING or (value is None and default is None):
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(where, f"expected an integer, got {kind(value)}")
            return None
        if value < low or (high is not None and value > high):
            bound = f"{low}-{high}" if high is not None else f"at least {low}"
            self.error(where, f"{value} is out of range ({bound})")
            return None
        return value

    def boolean(self, obj: Mapping[str, Any], name: str, path: str, *, default: bool) -> bool | None:
        """obj[name] as true/false; default when absent; None (and an issue) when not a JSON boolean."""
        value = obj.get(name, MISSING)
        if value is MISSING:
            return default
        if not isinstance(value, bool):
            self.error(key(path, name), f"expected true or false, got {kind(value)}")
            return None
        return value

    def duration(
        self, obj: Mapping[str, Any], name: str, path: str, *, default: float | None, most: float | None = None
    ) -> float | None:
        """A positive duration in seconds, at most `most` when given; default when absent; None when invalid."""
        where = key(path, name)
        value = obj.get(name, MISSING)
        if value is MISSING or (value is None and default is None):
            return default
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self.error(where, f"{show(value)} {BARE_NUMBER_REASON}")
            return None
        if not isinstance(value, str):
            self.error(where, f'expected a duration string like "30s", got {kind(value)}')
            return None
        try:
            seconds = parse_duration(value)
        except DurationError as exc:
            self.error(where, f"{show(value)} {exc.reason}")
            return None
        if seconds <= 0:
            self.error(where, "must be positive")
            return None
        if most is not None and seconds > most:
            self.error(where, f"{show(value)} is longer than {format_duration(most)}, the most it can be")
            return None
        return seconds

    def path(self, obj: Mapping[str, Any], name: str, path: str, *, default: Any, base_dir: Path | None) -> Path | None:
        text = self.string(obj, name, path, default=default)
        if text is None:
            return None
        return resolve(text, base_dir)

    def address(
        self, obj: Mapping[str, Any], name: str, path: str, *, listen: bool, default: Any = MISSING, required: str | None = None
    ) -> str | None:
        value = self.string(obj, name, path, default=default, required=required)
        if value is None:
            return None
        try:
            split_host_port(value, listen=listen)
        except ValueError as exc:
            self.error(key(path, name), str(exc))
            return None
        return value
