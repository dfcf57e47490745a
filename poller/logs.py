"""Log set-up for the CLI and the daemon (a library user configures structlog itself).

JSON lines when the stream is not a terminal, readable console lines when it is.
Logs go to stderr so that stdout stays for a command's output (probe's JSON).
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

from poller.identity.reasons import InvalidArgument

FORMATS = ("auto", "json", "console")


def configure_logging(fmt: str = "auto", *, stream: TextIO | None = None, level: int = logging.INFO) -> None:
    stream = stream or sys.stderr
    if fmt not in FORMATS:
        raise InvalidArgument(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    use_console = fmt == "console" or (fmt == "auto" and stream.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=stream.isatty()) if use_console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
