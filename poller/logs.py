"""Logging: the library emits through the standard `logging` module; the CLI
and the daemon configure how it is shown.

Library code logs with `get_logger(name)`: structlog's API (events with
key=value fields, contextvars merged) handed to the stdlib logger `name`
(all under "poller"). It never prints by itself and never touches structlog's
global configuration: an application that configures nothing sees nothing
(a NullHandler sits on "poller", as the logging HOWTO advises for libraries),
and one that configures `logging` gets the events there, with the fields as
the record attribute `structlog_event` (a dict) and in the message text.

`configure_logging()` is for applications (the CLI, the daemon): one handler
on the root logger writing to stderr, JSON lines when the stream is not a
terminal, readable console lines when it is; structlog's own loggers are
routed to the same handler. stdout stays for a command's output (probe's JSON).
With `route_native=True` (the daemon) whatever else reaches file descriptor 2,
grpc's C-core log lines above all (`I1204 12:00:00.1 123 file.cc:42] ...`),
becomes a log event too (`grpc_log`, or `native_stderr` for any other text),
so stderr stays one JSON object per line.

>>> import logging
>>> any(isinstance(h, logging.NullHandler) for h in logging.getLogger("poller").handlers)
True
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Hashable, MutableMapping
from typing import Any, TextIO, cast

import structlog

from poller.identity.reasons import InvalidArgument
from poller.timers import Clock, MonotonicClock

FORMATS = ("auto", "json", "console")

#: The LogRecord attribute holding a library event's fields (a dict).
EVENT_ATTR = "structlog_event"

_library_root = logging.getLogger("poller")
if not any(isinstance(h, logging.NullHandler) for h in _library_root.handlers):
    _library_root.addHandler(logging.NullHandler())


def _hand_to_stdlib(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Last library processor: the stdlib call's (args, kwargs).

    The message is `event key=value ...` for plain logging set-ups; the dict
    itself rides along for structured ones (see configure_logging).
    """
    exc_info = event_dict.pop("exc_info", None)
    fields = " ".join(f"{key}={value}" for key, value in event_dict.items() if key != "event")
    event = str(event_dict.get("event", ""))
    kwargs: dict[str, Any] = {"extra": {EVENT_ATTR: dict(event_dict)}}
    if exc_info:
        kwargs["exc_info"] = exc_info
    return ((f"{event} {fields}" if fields else event).replace("%", "%%"),), kwargs


_LIBRARY_PROCESSORS: list[Any] = [
    structlog.stdlib.filter_by_level,  # no work at all for a disabled level
    structlog.contextvars.merge_contextvars,
    _hand_to_stdlib,
]


class LineLimiter:
    """At most one log line per key every `every` seconds, for events a flood can
    repeat (refusals of one kind): `due(key)` is None while a line is held back,
    else how many were held back since the key's last line (its `suppressed`).
    What a line stands for is still counted in full by the metrics.

    A flood that stops inside a window would leave its last count unwritten.
    With `on_held_back(key, held)`, the limiter calls it for such a count when
    a whole window has passed since the key's window closed with no line
    coming due (a flood that goes on says its count on its next line, as
    before), from a timer of `clock` in the running event loop; none is armed
    without a loop. `clock` is monotonic by default: a step of the wall
    clock neither silences nor floods the lines.

    >>> limiter = LineLimiter(60.0)
    >>> limiter.due("acme-corp"), limiter.due("acme-corp"), limiter.due("acme-corp")
    (0, None, None)
    >>> limiter.due("acme-corp", now=limiter.clock.time() + 61)
    2
    """

    def __init__(
        self,
        every: float,
        *,
        max_keys: int = 10_000,
        clock: Clock | None = None,
        on_held_back: Callable[[Hashable, int], object] | None = None,
    ) -> None:
        self.every = every
        self.max_keys = max_keys  # past it, keys whose window has closed are forgotten
        self.clock: Clock = clock or MonotonicClock()
        self.on_held_back = on_held_back
        # key -> (its last line at, held back since, a timer will say them)
        self._last: dict[Hashable, tuple[float, int, bool]] = {}
        self._prune_at = max_keys  # doubled when a prune leaves many: a scan per line would not be

    def due(self, key: Hashable, *, now: float | None = None) -> int | None:
        now = self.clock.time() if now is None else now
        at, held, armed = self._last.get(key, (-float("inf"), 0, False))
        if now - at < self.every:
            if held == 0 and self.on_held_back is not None:
                armed = self._arm(key, at)
            self._last[key] = (at, held + 1, armed)
            return None
        self._last[key] = (now, 0, False)
        if len(self._last) > self._prune_at:  # keys an attacker could mint (names of certificates): bounded
            # A key whose timer will say what it held back stays until it has.
            self._last = {k: v for k, v in self._last.items() if v[2] or now - v[0] < self.every}
            self._prune_at = max(self.max_keys, 2 * len(self._last))
        return held

    def _arm(self, key: Hashable, at: float) -> bool:
        """The first line held back in the window opened at `at`: its count is
        said a window after that window closes, unless a line of the key has said it."""
        try:
            self.clock.call_at(at + 2 * self.every, lambda: self._close(key, at))
        except RuntimeError:  # no running event loop (a synchronous caller): nothing can be armed
            return False
        return True

    def _close(self, key: Hashable, at: float) -> None:
        entry = self._last.get(key)
        if entry is None or entry[0] != at or not entry[1]:
            return  # a line came due since and said the count
        self._last[key] = (at, 0, False)  # the window stays closed: the next event is written in full
        assert self.on_held_back is not None
        self.on_held_back(key, entry[1])


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger for library code that emits through `logging.getLogger(name)`.

    >>> log = get_logger("poller.example")
    >>> log.info("identity_accepted", tenant="acme-corp")  # silent unless the app configured logging
    """
    logger = structlog.wrap_logger(
        logging.getLogger(name),
        processors=_LIBRARY_PROCESSORS,
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    return cast(structlog.stdlib.BoundLogger, logger)


def _from_library(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Formatter step: a library record's own fields instead of its message text."""
    record = event_dict.get("_record")
    fields = getattr(record, EVENT_ATTR, None)
    if isinstance(fields, dict):
        event_dict.update(fields)
    return event_dict


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time of each record."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


#: Console lines are cut to this width (JSON lines carry every field), but those of _CONSOLE_WHOLE.
CONSOLE_WIDTH = 120
# The line that says why the process exits 2 is its last: there is nowhere else to read the rest.
_CONSOLE_WHOLE = frozenset({"startup_error"})
# Audit detail a person scanning a terminal does not need; JSON lines keep it.
_CONSOLE_HIDDEN = frozenset({"audit", "fingerprint", "serial", "not_after", "subject", "partition"})
_CONSOLE_FIRST = ("tenant", "agent", "reason", "detail", "component", "check")
_CONSOLE_LAST = ("address",)
_LEVELS = {"warning": "WARN", "critical": "CRIT", "exception": "ERROR"}


def render_console(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> str:
    """One short line: `HH:MM:SS LEVEL event key=value ...`, tenant, agent and
    reason first, the address last, cut to CONSOLE_WIDTH (a startup_error
    whole); a traceback follows on its own lines.

    >>> render_console(None, "info", {"timestamp": "2026-01-02T03:04:05.6Z", "level": "info",
    ...     "event": "identity_accepted", "tenant": "acme-corp", "agent": "edge-1", "serial": "ab"})
    '03:04:05 INFO  identity_accepted    tenant=acme-corp agent=edge-1'
    """
    fields = dict(event_dict)
    stamp = str(fields.pop("timestamp", ""))[11:19]
    level = str(fields.pop("level", ""))
    level = _LEVELS.get(level, level.upper())
    event = str(fields.pop("event", ""))
    trace = fields.pop("exception", None)
    for key in _CONSOLE_HIDDEN:
        fields.pop(key, None)
    order = [k for k in _CONSOLE_FIRST if k in fields]
    order += sorted(k for k in fields if k not in _CONSOLE_FIRST and k not in _CONSOLE_LAST)
    order += [k for k in _CONSOLE_LAST if k in fields]
    pairs = " ".join(f"{printable(key)}={_console_value(fields[key])}" for key in order)
    line = f"{stamp} {level:<5} {printable(event):<20} {pairs}".rstrip()
    if len(line) > CONSOLE_WIDTH and event not in _CONSOLE_WHOLE:
        line = line[: CONSOLE_WIDTH - 1] + "…"
    if not trace:
        return line
    # A traceback may quote what an agent sent; only its line breaks stay.
    return line + "\n" + "\n".join(printable(part) for part in str(trace).split("\n"))


def printable(text: str) -> str:
    """text with every non-printable character escaped as Python would (\\x1b,
    \\n, \\u202e): labels an agent reports must not drive the operator's terminal.

    >>> printable("edge-1\x1b[2J")
    'edge-1\\\\x1b[2J'
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _console_value(value: Any) -> str:
    if isinstance(value, str):
        # json.dumps escapes control and non-ASCII characters itself (ensure_ascii).
        return printable(value) if value and not any(c.isspace() or c in "\"'=" for c in value) else json.dumps(value)
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return printable(str(value))


def configure_logging(
    fmt: str = "auto", *, stream: TextIO | None = None, level: int = logging.INFO, route_native: bool = False
) -> None:
    """Show the poller's logs (and structlog's) on stream (sys.stderr by default).

    For applications; calling it again replaces the handler it installed.
    route_native (without `stream`): also turn what native code writes to
    stderr into events (see the module doc); once per process, for good.
    """
    if fmt not in FORMATS:
        raise InvalidArgument(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    if route_native and stream is None:
        stream = _route_native_stderr()
    handler: logging.Handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    shown_on = stream if stream is not None else sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and shown_on.isatty())
    last: list[Any] = [
        structlog.processors.format_exc_info,
        render_console if use_console else structlog.processors.JSONRenderer(),
    ]
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                _from_library,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *last],
        )
    )
    handler._poller_configured = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_poller_configured", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Loggers made with structlog.get_logger (outside the library) land in the same handler.
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )


# -------------------------------------------------------------------------- native stderr

# absl's prefix, as grpc's C core writes it: severity, MMDD, time, thread, file:line].
_ABSL = re.compile(r"([IWEF])\d{4} [\d:.]+\s+\d+ ([^\]\s]+)\] ?(.*)")
_ABSL_LEVELS = {"I": logging.DEBUG, "W": logging.WARNING, "E": logging.ERROR, "F": logging.CRITICAL}
_routed: list[TextIO] = []  # the stream this process's log handler writes to, once routed


def _route_native_stderr() -> TextIO:
    """Point fd 2 at a pipe read by a relay thread, and return a stream on the
    original stderr for the log handler. grpc reads GRPC_VERBOSITY when it is
    imported, which `import poller` already did, so its lines are caught here
    instead; a C library writing to fd 2 cannot be told otherwise."""
    if _routed:
        return _routed[0]
    sys.stderr.flush()
    out = open(os.dup(2), "w", buffering=1, encoding="utf-8", errors="backslashreplace")  # noqa: SIM115 - lives with the process
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    relay = threading.Thread(target=_relay, args=(read_end, out), name="poller-native-stderr", daemon=True)
    relay.start()
    _routed.append(out)

    def drain() -> None:
        """At exit: give fd 2 back (the pipe then ends) and let the relay write what is left."""
        sys.stderr.flush()
        os.dup2(out.fileno(), 2)
        relay.join(timeout=5)

    atexit.register(drain)
    return out


def _relay(read_end: int, out: TextIO) -> None:
    """Each line written to fd 2 as one event. It must never stop reading: a
    full pipe would block grpc's threads in their next log call."""
    log = get_logger("poller.native")
    with os.fdopen(read_end, "rb") as pipe:
        for raw in pipe:
            text = raw.decode("utf-8", "backslashreplace").rstrip("\r\n")
            if not text.strip():
                continue
            try:
                found = _ABSL.fullmatch(text)
                if found is None:
                    log.warning("native_stderr", line=text)
                else:
                    log.log(_ABSL_LEVELS[found[1]], "grpc_log", source=found[2], detail=found[3])
            except Exception:  # the relay outlives any one line
                out.write(json.dumps({"event": "native_stderr", "line": text}) + "\n")
